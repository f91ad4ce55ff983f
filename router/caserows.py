"""A file of one row per case beside a run's outputs (efficiency.csv, run.json), kept correct whatever stops
the run: rewritten whole and atomically after every case, the rows of cases skipped as done carried over from
the earlier run's file, and the temp file a SIGKILL left mid-write removed on opening (each write is whole or
not there, so such a temp is never worth keeping)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Generic, TypeVar

from router.casefile import remove_stale_temps, write_text_atomic

Row = TypeVar("Row")


class CaseRows(ABC, Generic[Row]):
    """Rows by case stem, written to `path`. `resume`: the earlier file's rows are kept for the cases the run
    skips as done (`keep_earlier`); `missing` stands in where that file has none."""

    missing: Row

    def __init__(self, path: Path, resume: bool = False) -> None:
        self.path = Path(path)
        remove_stale_temps(self.path)
        self.earlier: dict[str, Row] = self.read_earlier() if resume else {}
        self.rows: dict[str, Row] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, stem: object) -> bool:
        return stem in self.rows

    def keep_earlier(self, stem: str) -> None:
        """Carry the earlier run's row of a case this run skips (not written until the next record/write)."""
        self.rows[stem] = self.earlier.get(stem, self.missing)

    def record(self, stem: str, row: Row) -> None:
        """Add (or replace) a case's row and rewrite the file."""
        self.rows[stem] = row
        self.write()

    def write(self) -> None:
        """Write every row now."""
        write_text_atomic(self.path, self.render())

    @abstractmethod
    def read_earlier(self) -> dict[str, Row]:
        """The rows of the file at `path` ({} when it is missing or unreadable)."""

    @abstractmethod
    def render(self) -> str:
        """The whole file's text for the rows now held."""
