"""Static split of a folder of cases into N disjoint parts (nnU-Net's `-num_parts` / `-part_id`).

Part K of N is what one task of a SLURM job array or a Kubernetes Indexed Job segments. Every part
computes the same split from the same folder (names and sizes only), so the parts need not talk to
each other: together they cover the folder exactly once.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from pathlib import Path


def split_parts(paths: Sequence[Path], num_parts: int) -> list[list[Path]]:
    """Split `paths` into `num_parts` disjoint lists, balanced by file size rather than by count.

    Greedy longest-processing-time: largest file first, each to the part with the fewest bytes so far
    (ties: the lower part index), so one part does not get all the big volumes. The result depends only
    on the names and sizes, never on the order of `paths`. Each part is returned sorted by name.
    """
    if num_parts < 1:
        raise ValueError(f"the number of parts must be at least 1, got {num_parts}")
    sized = sorted(((Path(p).stat().st_size, Path(p).name, Path(p)) for p in paths), key=lambda t: (-t[0], t[1]))
    loads = [(0, part) for part in range(num_parts)]  # (bytes so far, part index): a min-heap
    parts: list[list[Path]] = [[] for _ in range(num_parts)]
    for size, _, path in sized:
        total, part = heapq.heappop(loads)
        parts[part].append(path)
        heapq.heappush(loads, (total + size, part))
    return [sorted(part, key=lambda p: p.name) for part in parts]


def select_part(paths: Sequence[Path], num_parts: int, part_id: int) -> list[Path]:
    """The cases of part `part_id` (0-based) of `num_parts` (split_parts)."""
    if not 0 <= part_id < num_parts:
        raise ValueError(f"--part-id must be in 0..{num_parts - 1} for --num-parts {num_parts}, got {part_id}")
    return split_parts(paths, num_parts)[part_id]


def part_file_name(file_name: str, num_parts: int, part_id: int) -> str:
    """A run's own file in the output folder (efficiency.csv, run.json) as a whole run names it, or with the part
    before its suffix for part K (efficiency.<K>.csv), so parts can share one output folder."""
    if num_parts == 1:
        return file_name
    stem, suffix = file_name.rsplit(".", 1)
    return f"{stem}.{part_id}.{suffix}"


def efficiency_name(num_parts: int, part_id: int) -> str:
    """efficiency.csv for a whole run; efficiency.<K>.csv for part K."""
    return part_file_name("efficiency.csv", num_parts, part_id)
