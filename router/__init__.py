"""Case I/O, modality routing and segmentation strategies (runtime: numpy, openvino only).

The project's packages are top-level (`models`, `router`, ...: the checkout's layout). A user's own package
named `models` that comes first on sys.path (a research repository's `models/` in the working folder) would
shadow ours: an installed wheel then fails with "No module named 'models.pool'", an editable install mixes
their package with our modules. Refuse that here, at the library's entry, in one line that says what to do.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _refuse_a_shadowing_models_package() -> None:
    ours = Path(__file__).resolve().parent.parent / "models"
    found = importlib.util.find_spec("models")
    origin = Path(found.origin).resolve().parent if found is not None and found.origin else None
    if origin != ours:
        raise ImportError(f"seg needs its own 'models' package ({ours}), but {origin or 'another one'} comes first "
                          "on sys.path: run from another folder or rename that package")


_refuse_a_shadowing_models_package()
