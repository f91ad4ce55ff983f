"""How far two runs' label maps agree, case by case and label by label: the Arm image against the amd64 one,
one precision against another (docs/results.md, "The Arm image").

    python -m benchmarks.agreement OUTPUTS_A OUTPUTS_B

For every case in both folders and every label in either: DSC between the two, and the voxels (pixels) that
differ, as a count and as a share of the union of both masks. The last line is the worst of each.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class LabelAgreement:
    """One label of one case: DSC between the two maps, voxels that differ, and their share of the union."""

    case: str
    label: int
    dsc: float
    differing: int
    share: float


def agreement(a: np.ndarray, b: np.ndarray, case: str = "") -> list[LabelAgreement]:
    """Per label of `a` or `b` (label maps of one shape, any dimension): DSC and differing voxels."""
    if a.shape != b.shape:
        raise ValueError(f"{case}: shapes differ, {a.shape} against {b.shape}")
    rows = []
    for label in np.union1d(np.unique(a[a > 0]), np.unique(b[b > 0])):
        in_a, in_b = a == label, b == label
        both, union = np.count_nonzero(in_a & in_b), np.count_nonzero(in_a | in_b)
        differing = union - both
        rows.append(LabelAgreement(case, int(label), 2 * both / (both + union), differing, differing / union))
    return rows


def compare_folders(first: Path, second: Path) -> list[LabelAgreement]:
    """agreement() of every case (.npz with `segs`) found in both folders."""
    rows = []
    for path in sorted(first.glob("*.npz")):
        if (second / path.name).is_file():
            rows += agreement(np.load(path)["segs"], np.load(second / path.name)["segs"], path.stem)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args(argv)
    rows = compare_folders(args.first, args.second)
    if not rows:
        raise SystemExit(f"no case with labels in both {args.first} and {args.second}")
    print(f"{'case':<40}{'label':>6}{'DSC':>8}{'differ':>8}{'share':>8}")
    for row in rows:
        print(f"{row.case:<40}{row.label:>6}{row.dsc:>8.4f}{row.differing:>8}{row.share:>8.4f}")
    print(f"{'worst':<40}{'':>6}{min(r.dsc for r in rows):>8.4f}{max(r.differing for r in rows):>8}"
          f"{max(r.share for r in rows):>8.4f}")


if __name__ == "__main__":
    main()
