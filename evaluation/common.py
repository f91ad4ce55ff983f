"""What the scorer (:mod:`evaluation.compute_metrics`) and its optional outputs (:mod:`evaluation.plots`,
:mod:`evaluation.nifti`) share: the log, the statuses left out of the means, and reading one array of an
``.npz`` that may be missing or broken. numpy only; it imports nothing of theirs, so none of them import each
other to share these."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

log = logging.getLogger("compute_metrics")

# Statuses excluded from the means (a GT problem); the prediction problems ("missing", "unreadable",
# "no_segs_key", "wrong_shape", "error") score 0 instead.
NOT_SCORED = ("gt_unreadable", "empty_gt")
# What np.load raises on a missing, truncated, non-zip or pickled (allow_pickle=False) file.
READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def load_optional(path: Path, key: str) -> np.ndarray | None:
    """``key`` of an ``.npz``, or None if the file or the key is missing or unreadable (plots, NIfTI export)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz[key] if key in npz.files else None
    except READ_ERRORS:
        return None
