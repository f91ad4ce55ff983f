"""Leases: which client holds which session, and when a session is given up.

`POST /claim` makes a session and a lease token (503 at `max_sessions`). Two clocks per lease, as
nnInteractive's server keeps them: *activity* (a real user action: set_image, an interaction, undo, ...)
drives the idle timeout, and *liveness* (any request, heartbeats included) the much shorter liveness
timeout that frees the slot of a client that crashed. A lease past either is gone: the request that
finds it so gets 410 (the client's SessionExpiredError), whether or not the periodic sweep got there
first, so expiry does not depend on the sweep's timing. A released or expired lease's session is closed
(its image and embeddings freed) outside the table's lock.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from serve.protocol import ProtocolError

log = logging.getLogger("seg.serve")


class Closable(Protocol):
    def close(self) -> None: ...


S = TypeVar("S", bound=Closable)


@dataclass
class Lease(Generic[S]):
    """One client's session, its lock (one request at a time per session) and its two clocks."""

    token: str
    session: S
    last_active: float
    last_seen: float
    lock: threading.Lock = field(default_factory=threading.Lock)


class LeaseTable(Generic[S]):
    """Leases by token, thread-safe. `make_session()` makes a new client's session; `clock` is monotonic."""

    def __init__(self, make_session: Callable[[], S], max_sessions: int, idle_timeout: float,
                 liveness_timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_sessions < 1 or idle_timeout <= 0 or liveness_timeout <= 0:
            raise ValueError("max_sessions must be >= 1 and both timeouts > 0")
        self.make_session, self.max_sessions = make_session, max_sessions
        self.idle_timeout, self.liveness_timeout, self.clock = idle_timeout, liveness_timeout, clock
        self._leases: dict[str, Lease[S]] = {}
        self._mutex = threading.Lock()

    def __len__(self) -> int:
        return len(self._leases)

    def _expired(self, lease: Lease[S], now: float) -> str | None:
        if now - lease.last_seen > self.liveness_timeout:
            return "dead"
        if now - lease.last_active > self.idle_timeout:
            return "idle"
        return None

    def claim(self) -> Lease[S]:
        """A new lease; ProtocolError 503 when `max_sessions` leases are live."""
        self.sweep()  # an expired lease must not hold a slot until the next periodic sweep
        with self._mutex:
            if len(self._leases) >= self.max_sessions:
                raise ProtocolError(503, f"server is at capacity ({self.max_sessions} sessions)")
            now = self.clock()
            lease = Lease(secrets.token_hex(16), self.make_session(), now, now)
            self._leases[lease.token] = lease
            log.info("session claimed (%d/%d)", len(self._leases), self.max_sessions)
            return lease

    def get(self, token: str | None, active: bool = False) -> Lease[S]:
        """The live lease of `token`, marked seen (and active, for a user action). ProtocolError 410 for a
        missing, unknown or expired token (an expired one is dropped and its session closed)."""
        lease = self.peek(token)
        now = self.clock()
        lease.last_seen = now
        if active:
            lease.last_active = now
        return lease

    def peek(self, token: str | None) -> Lease[S]:
        """As get, without marking the lease seen (/lease_status only reads)."""
        if not token:
            raise ProtocolError(410, "lease token missing (claim a session first)")
        with self._mutex:
            lease = self._leases.get(token)
            reason = None if lease is None else self._expired(lease, self.clock())
            if lease is not None and reason is not None:
                del self._leases[token]
        if lease is None:
            raise ProtocolError(410, "lease expired or unknown")
        if reason is not None:
            self._close(lease, reason)
            raise ProtocolError(410, f"lease expired ({reason})")
        return lease

    def remaining(self, lease: Lease[S]) -> float:
        """Seconds until the lease's idle timeout."""
        return max(0.0, self.idle_timeout - (self.clock() - lease.last_active))

    def release(self, token: str | None) -> bool:
        """Drop the lease of `token` and close its session; False when there was none (idempotent)."""
        with self._mutex:
            lease = self._leases.pop(token, None) if token else None
        if lease is None:
            return False
        self._close(lease, "released")
        return True

    def sweep(self) -> int:
        """Drop every expired lease (closing its session); the number dropped."""
        now = self.clock()
        with self._mutex:
            gone = [(lease, reason) for lease in self._leases.values()
                    if (reason := self._expired(lease, now)) is not None]
            for lease, _ in gone:
                del self._leases[lease.token]
        for lease, reason in gone:
            self._close(lease, reason)
        return len(gone)

    def close_all(self) -> None:
        with self._mutex:
            leases = list(self._leases.values())
            self._leases.clear()
        for lease in leases:
            self._close(lease, "shutdown")

    def _close(self, lease: Lease[S], reason: str) -> None:
        try:
            with lease.lock:  # after the request using the session, if any, is done with it
                lease.session.close()
        except Exception:  # closing must never stop a sweep or a release
            log.exception("closing a session (%s) failed", reason)
        log.info("session %s (%d/%d)", reason, len(self._leases), self.max_sessions)
