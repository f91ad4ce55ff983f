"""efficiency.csv: the seconds per case a run writes (the challenge's format: `case,seconds`), one writer
for every run (router/runner.py's loop, local or on Dask)."""

from __future__ import annotations

from pathlib import Path

from router.casefile import remove_stale_temps, write_text_atomic


def read_efficiency(path: Path) -> dict[str, float]:
    """Seconds per case stem of an efficiency.csv; {} when it is missing or unreadable."""
    try:
        rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
        return {row[0]: float(row[1]) for row in rows if len(row) == 2}
    except (OSError, ValueError):
        return {}


class EfficiencyLog:
    """The rows of one run's efficiency file at `path`, rewritten whole (atomically) after every case, so a
    run stopped at any point leaves a complete file. `resume`: the rows of the file already there are kept
    for the cases the run skips as done (--continue-prediction), with 0.0 where it has none. Opening it
    deletes the temp files an earlier run's write left when a SIGKILL landed mid-write: each write is whole
    or not there, so such a temp is never worth keeping."""

    def __init__(self, path: Path, resume: bool = False) -> None:
        self.path = Path(path)
        remove_stale_temps(self.path)
        self.earlier = read_efficiency(self.path) if resume else {}
        self.rows: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, stem: object) -> bool:
        return stem in self.rows

    def keep_earlier(self, stem: str) -> None:
        """Carry the earlier run's row of a case this run skips (not written until the next record/write)."""
        self.rows[stem] = self.earlier.get(stem, 0.0)

    def record(self, stem: str, seconds: float) -> None:
        """Add (or replace) a case's row and rewrite the file."""
        self.rows[stem] = seconds
        self.write()

    def write(self) -> None:
        """Write every row now."""
        body = "".join(f"{stem},{seconds:.4f}\n" for stem, seconds in self.rows.items())
        write_text_atomic(self.path, "case,seconds\n" + body)
