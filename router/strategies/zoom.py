"""Zoom for small objects: which boxes to decode in a crop of the image, and which crops.

LiteMedSAM sees every image at 256 px: a 24 px nucleus in a 512 px image becomes 12 px. Boxes whose
longer side is under `zoom_below` of the image's longer side are decoded in a square window of the
image instead, so they reach the encoder magnified. Windows come from a grid of tiles of side T
(T = `tile_scale` x the median small-box side, so that windows are at least `min_window` px) grown by
T/4 of context on every side; a box goes to the tile holding its centre, so nearby boxes share one
encoder pass, and tiles grow further while more than `max_windows` would be needed. Pure geometry.

Windows are (y0, x0, y1, x1), half-open pixel ranges of the image; boxes are [x0, y0, x1, y1] inclusive.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

Window = tuple[int, int, int, int]


def fit_window(y0: int, x0: int, side: int, image_hw: tuple[int, int]) -> Window:
    """A square of `side` px with corner (y0, x0), shifted (not shrunk) to lie inside the image where it
    fits, clipped to the image where it does not."""
    height, width = image_hw
    side_y, side_x = min(side, height), min(side, width)
    y0 = int(np.clip(y0, 0, height - side_y))
    x0 = int(np.clip(x0, 0, width - side_x))
    return y0, x0, y0 + side_y, x0 + side_x


def _contains(window: Window, box: np.ndarray) -> bool:
    y0, x0, y1, x1 = window
    return bool(box[0] >= x0 and box[1] >= y0 and box[2] < x1 and box[3] < y1)


def _group_by_tile(boxes: np.ndarray, indices: np.ndarray, tile: int) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index in indices:
        x0, y0, x1, y1 = boxes[index]
        groups[(int((y0 + y1) // 2 // tile), int((x0 + x1) // 2 // tile))].append(int(index))
    return groups


def small_boxes(boxes: np.ndarray, image_hw: tuple[int, int], zoom_below: float) -> np.ndarray:
    """(N, 4) boxes -> (N,) bool: whose longer side is under `zoom_below` of the image's longer side."""
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) + 1
    return np.asarray(sides < zoom_below * max(image_hw))


def plan_windows(
    boxes: np.ndarray, image_hw: tuple[int, int], zoom_below: float, tile_scale: float, min_window: int,
    max_windows: int,
) -> list[tuple[Window | None, np.ndarray]]:
    """(N, 4) boxes -> [(window or None for the whole image, indices of the boxes decoded there)].

    Every box appears exactly once. zoom_below 0 (or no small box) gives one whole-image entry. The values
    shipped are router.strategies.image2d.Image2dParams' (no defaults here: one source).
    min_window: the smallest window side in image pixels (tiles grow to reach it).
    max_windows: tiles grow until the small boxes need at most this many windows (encoder passes).
    """
    height, width = image_hw
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) + 1
    small = small_boxes(boxes, image_hw, zoom_below)
    plan: list[tuple[Window | None, np.ndarray]] = []
    if not small.any():
        return [(None, np.arange(len(boxes)))]
    tile = int(max(-(-min_window * 2 // 3), round(tile_scale * float(np.median(sides[small])))))
    whole: list[int] = list(np.flatnonzero(~small))
    small_indices = np.flatnonzero(small)
    groups = _group_by_tile(boxes, small_indices, tile)
    while len(groups) > max_windows:  # a cap on encoder passes for images with thousands of cells
        tile = int(np.ceil(tile * np.sqrt(len(groups) / max_windows)))
        groups = _group_by_tile(boxes, small_indices, tile)
    context = -(-tile // 4)
    for (row, col), members in sorted(groups.items()):
        window = fit_window(row * tile - context, col * tile - context, tile + 2 * context, image_hw)
        if window[2] - window[0] >= height and window[3] - window[1] >= width:
            whole.extend(members)  # the window is the image: no zoom to gain
            continue
        inside = [i for i in members if _contains(window, boxes[i])]
        whole.extend(i for i in members if i not in inside)  # too big for the tile: whole image
        if inside:
            plan.append((window, np.array(inside)))
    if whole:
        plan.insert(0, (None, np.array(sorted(whole))))
    return plan
