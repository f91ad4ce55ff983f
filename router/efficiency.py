"""efficiency.csv: the seconds per case a run writes (the challenge's format: `case,seconds`), one writer
for every run (router/runner.py's loop, local or on Dask)."""

from __future__ import annotations

from pathlib import Path

from router.caserows import CaseRows


def read_efficiency(path: Path) -> dict[str, float]:
    """Seconds per case stem of an efficiency.csv; {} when it is missing or unreadable."""
    try:
        rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
        return {row[0]: float(row[1]) for row in rows if len(row) == 2}
    except (OSError, ValueError):
        return {}


class EfficiencyLog(CaseRows[float]):
    """The efficiency file at `path` (router.caserows.CaseRows): seconds per case, 0.0 for a case skipped as
    done that the earlier file did not time."""

    missing = 0.0

    def read_earlier(self) -> dict[str, float]:
        return read_efficiency(self.path)

    def render(self) -> str:
        return "case,seconds\n" + "".join(f"{stem},{seconds:.4f}\n" for stem, seconds in self.rows.items())
