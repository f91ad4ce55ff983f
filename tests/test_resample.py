"""The runtime's numpy stand-ins for OpenCV against opencv-python itself (a host and test dependency only).

models.resample.resize_area must equal cv2.resize(INTER_AREA) bit for bit; the chamfer distance of
router.strategies.interpolation must equal cv2.distanceTransform(DIST_L2, 5) within one float32 step
(OpenCV computes it through IPP, which breaks a few float32 ties the other way), and the interpolated
masks built on it must equal those built on cv2's; models.transforms._resize_stack (EfficientViT-SAM's
mask upsampling) must equal cv2.INTER_LINEAR to float32 rounding. OpenCV comes from the `cv2` fixture, so
these comparisons are integration tests (tests/conftest.py); the unit tier runs the numpy-only ones.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from models.resample import resize_area
from models.transforms import _resize_stack, longest_side_shape
from router.strategies.interpolation import chamfer_distance, interpolate_masks, signed_distance
from sample_data.sarcoma import sarcoma_slices


def cv2_area(cv2: ModuleType, image: np.ndarray, height: int, width: int) -> np.ndarray:
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def random_shapes(rng: np.random.Generator, count: int) -> list[tuple[int, int, int, int]]:
    """(H, W, h, w): the runtime's longest-side targets (shrinking and growing) and arbitrary ones."""
    shapes = []
    for index in range(count):
        height, width = int(rng.integers(1, 900)), int(rng.integers(1, 900))
        shapes.append((height, width, *longest_side_shape(height, width, (256, 512)[index % 2])))
    for _ in range(count // 2):
        shapes.append(tuple(int(v) for v in rng.integers(1, 300, 4)))  # type: ignore[arg-type]
    return shapes


EDGE_SHAPES = [
    (512, 512, 256, 256),  # 2x2 blocks
    (768, 1024, 192, 256),  # 4x4 blocks
    (300, 900, 100, 300),  # 3x3 blocks
    (256, 256, 256, 256),  # no change
    (540, 800, 173, 256),  # the HC18 ultrasound case
    (200, 200, 256, 256),  # a PET slice grows
    (1, 7, 37, 256),
    (7, 1, 256, 37),
    (1, 1, 256, 256),
    (256, 100, 256, 101),  # one axis grows by one pixel
    (3000, 2000, 256, 171),
]


@pytest.mark.parametrize("channels", [None, 3])
def test_resize_area_equals_opencv_on_random_images(channels: int | None, cv2: ModuleType) -> None:
    rng = np.random.default_rng(25)
    for height, width, new_h, new_w in EDGE_SHAPES + random_shapes(rng, 120):
        shape = (height, width) if channels is None else (height, width, channels)
        for image in (rng.integers(0, 256, shape, dtype=np.uint8), np.full(shape, 255, np.uint8),
                      (rng.random(shape) < 0.5).astype(np.uint8) * 255):
            got = resize_area(image, new_h, new_w)
            want = cv2_area(cv2, image, new_h, new_w)
            assert got.shape == want.shape and got.dtype == np.uint8
            assert np.array_equal(got, want), f"{shape} -> {(new_h, new_w)}: max diff " \
                f"{np.abs(got.astype(int) - want.astype(int)).max()}"


def test_resize_area_equals_opencv_on_real_images(nuclei: tuple[np.ndarray, np.ndarray], cv2: ModuleType) -> None:
    """Real CT/MR/PET slices (sample_data/sarcoma_slices.npz) and a fluorescence image, at every size the
    runtime asks for (LiteMedSAM 256, EfficientViT-SAM 512) and some others."""
    images = [item.image for item in sarcoma_slices()[::5]] + [nuclei[0], nuclei[0][:, :, 0]]
    assert len(images) > 5
    for image in images:
        for target in (256, 512, 100, 333, 1024):
            new_h, new_w = longest_side_shape(*image.shape[:2], target)
            assert np.array_equal(resize_area(image, new_h, new_w), cv2_area(cv2, image, new_h, new_w)), \
                f"{image.shape} -> {target}"


def test_resize_area_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        resize_area(np.zeros((4, 4), np.float32), 2, 2)
    with pytest.raises(ValueError, match="uint8"):
        resize_area(np.zeros((0, 4), np.uint8), 2, 2)
    with pytest.raises(ValueError, match="positive"):
        resize_area(np.zeros((4, 4), np.uint8), 0, 2)


def random_masks(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Bool masks of all kinds: noise, discs, nearly full, full, empty, thin lines."""
    masks = []
    for index in range(count):
        height, width = int(rng.integers(1, 260)), int(rng.integers(1, 260))
        kind = index % 5
        if kind == 0:
            mask = rng.random((height, width)) < rng.random()
        elif kind == 1:
            rows, cols = np.mgrid[:height, :width]
            radius = rng.random() * max(height, width)
            mask = (rows - height * rng.random()) ** 2 + (cols - width * rng.random()) ** 2 < radius**2
        elif kind == 2:
            mask = rng.random((height, width)) < 0.999
        elif kind == 3:
            mask = np.full((height, width), bool(index % 2))
        else:
            mask = np.zeros((height, width), bool)
            mask[:, int(rng.integers(0, width))] = True
        masks.append(mask)
    return masks


def test_chamfer_distance_equals_opencv_within_one_float32_step(cv2: ModuleType) -> None:
    rng = np.random.default_rng(7)
    exact = 0
    masks = random_masks(rng, 100)
    for mask in masks:
        for objects in (mask, ~mask):
            got = chamfer_distance(objects[None])[0]
            want = cv2.distanceTransform(objects.astype(np.uint8), cv2.DIST_L2, 5)
            assert got.dtype == np.float32 and got.shape == want.shape
            assert np.array_equal(got == 0, want == 0)
            # one float32 step of the value at most (|d| < 2^k has steps of 2^(k - 24))
            step = np.spacing(np.clip(want, np.float32(1), np.float32(1e30)))
            assert np.all((got == want) | (np.abs(got - want) <= step)), \
                f"{objects.shape}: max diff {np.abs(got - want).max()}"
            exact += bool(np.array_equal(got, want))
    assert exact >= 0.8 * 2 * len(masks)  # most maps are equal bit for bit


def cv2_interpolate(cv2: ModuleType, first: np.ndarray, last: np.ndarray, count: int) -> np.ndarray:
    """interpolate_masks as it was with OpenCV's distance transform (the reference)."""
    def signed(mask: np.ndarray) -> np.ndarray:
        inside = mask.astype(np.uint8)
        return cv2.distanceTransform(1 - inside, cv2.DIST_L2, 5) - cv2.distanceTransform(inside, cv2.DIST_L2, 5)

    out = np.zeros((count, *first.shape), bool)
    either = first | last
    if count == 0 or not either.any():
        return out
    rows, cols = np.flatnonzero(either.any(axis=1)), np.flatnonzero(either.any(axis=0))
    region = (slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))
    near, far = signed(first[region]), signed(last[region])
    for step in range(count):
        weight = (step + 1) / (count + 1)
        out[step][region] = (1 - weight) * near + weight * far < 0
    return out


def test_interpolated_masks_equal_those_from_opencv(cv2: ModuleType) -> None:
    """Real object masks of neighbouring slices (sarcoma) and synthetic shapes that grow, shrink and move."""
    pairs = []
    slices = sarcoma_slices()
    for a, b in zip(slices, slices[1:], strict=False):
        if a.mask.shape == b.mask.shape:
            pairs.append((a.mask, b.mask))
    rows, cols = np.mgrid[:160, :200]
    for shift in range(0, 40, 7):
        disc = (rows - 60) ** 2 + (cols - 70) ** 2 < 30**2
        moved = (rows - 70 - shift) ** 2 + (cols - 90 - shift) ** 2 < (20 + shift) ** 2
        pairs.append((disc, moved))
    pairs.append((np.ones((50, 60), bool), np.ones((50, 60), bool)))
    assert len(pairs) > 10
    for first, last in pairs:
        for count in (1, 2, 3):
            assert np.array_equal(interpolate_masks(first, last, count), cv2_interpolate(cv2, first, last, count))


def test_signed_distance_signs() -> None:
    mask = np.zeros((9, 9), bool)
    mask[2:7, 2:7] = True
    distance = signed_distance(mask)
    assert np.array_equal(signed_distance(np.stack([mask, ~mask]))[0], distance)
    assert distance[4, 4] == -3.0 and distance[0, 4] == 2.0 and distance[2, 2] == -1.0
    assert distance[1, 1] == pytest.approx(1.4)


def test_mask_upsampling_equals_opencv_linear(cv2: ModuleType) -> None:
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((5, 256, 256)) * 8).astype(np.float32)
    got = _resize_stack(logits, 1024, 1024)
    want = np.stack([cv2.resize(plane, (1024, 1024), interpolation=cv2.INTER_LINEAR) for plane in logits])
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-5
