"""A clean stop on SIGTERM (`docker stop`) and SIGINT (Ctrl-C): the signal becomes an exception.

The exception abandons the current case where it is; the atomic writes (router.casefile) remove their
temp file on the way out, so the runner can then record what is done and exit. Docker sends SIGTERM to
PID 1, which is python itself (the image's CMD and docker/predict.sh exec it): PID 1 has no default
signal actions, so without this handler `docker stop` would wait its 10 s and SIGKILL.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """Raised in the main thread when a stop signal arrives. A BaseException, like KeyboardInterrupt, so
    that `except Exception` (one failed case) does not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


@contextlib.contextmanager
def stop_on_signals(signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, the first of `signals` raises Interrupted; later ones are ignored while the
    runner cleans up. The previous handlers come back on exit."""

    def handler(signum: int, frame: FrameType | None) -> None:
        for each in signals:
            signal.signal(each, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {each: signal.signal(each, handler) for each in signals}
    try:
        yield
    finally:
        for each, old in previous.items():
            signal.signal(each, old)
