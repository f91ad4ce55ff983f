"""The challenge's intensity rules: raw scanner values -> the uint8 images a case holds (numpy only).

As in the CVPR 2024 MedSAM-on-laptop preprocessing (bowang-lab/MedSAM `pre_CT_MR.py`, `pre_grey_rgb.py`):
  * CT: a window; values in [level - width/2, level + width/2] map linearly to 0..255, below and
    above clip. Default soft tissue, level 40 / width 400 HU.
  * MR, PET: clip to the 0.5 and 99.5 percentiles of the non-zero voxels, scale that range to
    0..255; voxels that were 0 stay 0.
  * 8-bit 2D images (photos: PNG, JPEG): RGB kept; grey min-max scaled to 0..255; both as 3 channels.
  * Anything else (other modalities, non-8-bit 2D images): min-max scaled to 0..255.
Values are truncated to integers, as the reference's `np.uint8` cast does.

Where this differs from the reference, on purpose: the reference min-max scales the *clipped* CT
volume, so a volume that does not reach both window bounds is stretched; here the window bounds are
the scale, as the issue asks (identical whenever the scan has air and bone, i.e. nearly always). The
reference takes percentiles of the voxels > 0; here of the voxels != 0 (the issue's rule; the same for
MR and PET, which have no negative values).
"""

from __future__ import annotations

import numpy as np

# name -> (level, width) in HU (radiopaedia.org "Windowing (CT)")
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft-tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
DEFAULT_CT_WINDOW = "soft-tissue"
PERCENTILES = (0.5, 99.5)


def _to_uint8(scaled: np.ndarray) -> np.ndarray:
    """Float values in [0, 255] -> uint8, truncated as the reference's cast does."""
    return np.clip(scaled, 0.0, 255.0).astype(np.uint8)


def ct_window(volume: np.ndarray, level: float = 40.0, width: float = 400.0) -> np.ndarray:
    """Any-shape HU array -> uint8 of the same shape: floor((clip(v, L - W/2, L + W/2) - (L - W/2)) / W * 255)."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    low = level - width / 2.0
    values = np.clip(volume.astype(np.float64), low, low + width)
    return _to_uint8((values - low) / width * 255.0)


def percentile_rule(volume: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> np.ndarray:
    """Any-shape MR/PET array -> uint8 of the same shape.

    lo, hi = the percentiles of the non-zero voxels; floor((clip(v, lo, hi) - lo) / (hi - lo) * 255), and
    0 where v == 0. All-zero or constant non-zero values give all zeros.
    """
    values = volume.astype(np.float64)
    nonzero = values[values != 0]
    if nonzero.size == 0:
        return np.zeros(volume.shape, np.uint8)
    low, high = np.percentile(nonzero, percentiles)
    if high <= low:
        return np.zeros(volume.shape, np.uint8)
    out = _to_uint8((np.clip(values, low, high) - low) / (high - low) * 255.0)
    out[values == 0] = 0
    return out


def min_max(image: np.ndarray) -> np.ndarray:
    """Any-shape array -> uint8: floor((v - min) / (max - min) * 255); a constant image gives zeros."""
    values = image.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(image.shape, np.uint8)
    return _to_uint8((values - low) / (high - low) * 255.0)


def parse_window(text: str) -> tuple[float, float]:
    """"L,W" (e.g. "40,400", "-600,1500") or a preset name (CT_WINDOWS) -> (level, width)."""
    if text in CT_WINDOWS:
        return CT_WINDOWS[text]
    try:
        level, width = (float(part) for part in text.split(","))
    except ValueError as error:
        raise ValueError(f"window must be LEVEL,WIDTH or one of {', '.join(CT_WINDOWS)}, got {text!r}") from error
    if not np.isfinite(level) or not np.isfinite(width) or width <= 0:
        raise ValueError(f"window width must be a positive number, got {text!r}")
    return level, width


def case_image(array: np.ndarray, modality: str, dim: int, window: tuple[float, float]) -> tuple[np.ndarray, dict]:
    """A read image -> (the case's `imgs`, a description of the rule applied).

    array: (D, H, W) for dim 3; (H, W) or (H, W, C) for dim 2, C = 1..4 (a 4th channel, alpha, is dropped).
    Returns (D, H, W) uint8 for dim 3, (H, W, 3) uint8 for dim 2.
    """
    if array.dtype.kind not in "biuf":
        raise ValueError(f"unsupported pixel type {array.dtype}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError("the image contains NaN or Inf values")
    channels = array.ndim == 3 and dim == 2
    if channels:
        if array.shape[2] not in (1, 2, 3, 4) or array.shape[2] == 2:
            raise ValueError(f"a 2D image needs 1, 3 or 4 channels, got {array.shape[2]}")
        array = array[:, :, :3] if array.shape[2] >= 3 else array[:, :, 0]
    if dim == 2 and array.dtype == np.uint8:
        rule: dict = {"rule": "rgb kept"} if array.ndim == 3 else {"rule": "min-max"}
        image = array if array.ndim == 3 else min_max(array)
    elif modality == "CT":
        rule = {"rule": "ct window", "level": window[0], "width": window[1]}
        image = ct_window(array, *window)
    elif modality in ("MR", "PET"):
        rule = {"rule": "percentiles of non-zero voxels", "percentiles": list(PERCENTILES)}
        image = percentile_rule(array)
    else:
        rule = {"rule": "min-max"}
        image = min_max(array)
    if dim == 2 and image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image), rule
