"""PNG plots of a :mod:`evaluation.compute_metrics` run (its ``--plots`` option).

* ``per_modality.png``: mean DSC and NSD per modality, std as error bars.
* ``runtime_vs_dsc.png``: running time against DSC, when the rows carry ``seconds`` (``--efficiency``).
* ``worst_<modality>_<case>.png``: with the input images (``--images``), the worst case of each modality
  with its GT and predicted contours and prompt boxes.

matplotlib is imported inside the functions (``Agg`` backend, set by :func:`make_plots`), so importing
this module does not load it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.common import NOT_SCORED, load_optional, log


def plot_per_modality(summary: dict[str, Any], out_png: Path) -> None:
    """Bar chart of mean DSC and NSD per modality (std as error bars)."""
    import matplotlib.pyplot as plt

    names = list(summary["per_modality"])
    stats = [summary["per_modality"][n] for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names)), 4))
    for offset, metric in ((-0.2, "DSC"), (0.2, "NSD")):
        ax.bar(x + offset, [s[f"{metric}_mean"] for s in stats], 0.4, yerr=[s[f"{metric}_std"] for s in stats],
               capsize=3, label=metric)
    ax.set_xticks(x, [f"{n}\n(n={s['n']})" for n, s in zip(names, stats, strict=False)])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean score")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def plot_runtime_vs_dsc(rows: Sequence[dict], out_png: Path) -> None:
    """Scatter of running time (s) against DSC, one colour per modality (rows need ``seconds``)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for modality in sorted({r["modality"] for r in rows}):
        group = [r for r in rows if r["modality"] == modality]
        ax.scatter([r["seconds"] for r in group], [r["DSC"] for r in group], label=modality, s=20)
    ax.set_xlabel("running time (s)")
    ax.set_ylabel("DSC")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def plot_overlay(row: dict, image: np.ndarray, gt: np.ndarray, seg: np.ndarray | None,
                 boxes: np.ndarray | None, out_png: Path) -> None:
    """Image with GT (green) and predicted (red) contours and the prompt boxes (yellow).

    Args:
        row: the case's scored row (``case``, ``DSC``, ``NSD``, ``status``), for the title.
        image: 2D ``(H, W)`` or ``(H, W, 3)``; 3D ``(D, H, W)``.
        gt, seg: label maps ``(H, W)`` or ``(D, H, W)``; ``seg`` may be None (missing prediction).
        boxes: 2D ``(N, 4)`` ``x0, y0, x1, y1``; 3D ``(N, 6)`` ``x0, y0, z0, x1, y1, z1`` (inclusive).
        out_png: file to write.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    title = f"{row['case']}  DSC={row['DSC']:.3f}  NSD={row['NSD']:.3f}  [{row['status']}]"
    if gt.ndim == 3:
        z = int(np.argmax((gt > 0).sum(axis=(1, 2))))  # slice where the GT is largest
        image, gt = image[z], gt[z]
        seg = seg[z] if seg is not None else None
        if boxes is not None:
            boxes = np.array([[b[0], b[1], b[3], b[4]] for b in boxes if b[2] <= z <= b[5]]).reshape(-1, 4)
        title += f"  z={z}"
    fig, ax = plt.subplots(figsize=(7, 7 * gt.shape[0] / max(gt.shape[1], 1) + 0.5))
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
    for mask, colour in ((gt, "lime"), (seg, "red")):
        if mask is None:
            continue
        for label in np.unique(mask[mask > 0]):
            ax.contour(mask == label, levels=[0.5], colors=colour, linewidths=0.8)
    for x0, y0, x1, y1 in boxes if boxes is not None else []:
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, ec="yellow", lw=0.8))
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def make_plots(rows: Sequence[dict], summary: dict[str, Any], plots_dir: Path, segs_dir: Path, gts_dir: Path,
               images_dir: Path | None = None) -> list[Path]:
    """Write the per-modality chart, the runtime scatter (if rows have ``seconds``) and, with
    ``images_dir``, an overlay of the worst case of each modality. Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on the evaluation hosts
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = [plots_dir / "per_modality.png"]
    plot_per_modality(summary, written[0])
    timed = [r for r in rows if "seconds" in r and r["status"] not in NOT_SCORED]
    if timed:
        written.append(plots_dir / "runtime_vs_dsc.png")
        plot_runtime_vs_dsc(timed, written[-1])
    if images_dir is None:
        return written
    scored = [r for r in rows if r["status"] not in NOT_SCORED]
    for modality in sorted({r["modality"] for r in scored}):
        worst = min((r for r in scored if r["modality"] == modality), key=lambda r: (r["DSC"], r["NSD"], r["case"]))
        image = load_optional(images_dir / worst["case"], "imgs")
        gt = load_optional(gts_dir / worst["case"], "gts")
        if image is None or gt is None or image.shape[: gt.ndim] != gt.shape:
            log.warning("no usable image for %s, overlay skipped", worst["case"])
            continue
        seg = load_optional(segs_dir / worst["case"], "segs")
        seg = seg if seg is not None and seg.shape == gt.shape else None
        boxes = load_optional(images_dir / worst["case"], "boxes")
        written.append(plots_dir / f"worst_{modality}_{Path(worst['case']).stem}.png")
        plot_overlay(worst, image, gt, seg, boxes, written[-1])
    return written
