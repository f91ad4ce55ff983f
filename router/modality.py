"""Case file name -> (dimensionality, canonical modality).

Names follow the challenge: `2DBox_<Modality>_<id>.npz` or `3DBox_<Modality>_<id>.npz`. Matching is
case-insensitive and by whole tokens (split on "_"), so "OCT" never routes as "CT"; a hyphen inside a
token is ignored ("X-Ray" == "XRay"). The first token after the prefix that is a known alias decides;
names like `2DBox_X-Ray_Teeth_001` route as X-ray.
"""

from __future__ import annotations

# canonical name -> aliases (compared lower-case, hyphens removed)
MODALITY_ALIASES: dict[str, tuple[str, ...]] = {
    "Microscopy": ("microscopy", "microscope"),
    "XRay": ("xray", "cxr"),
    "MR": ("mr", "mri"),
    "US": ("us", "ultrasound"),
    "Dermoscopy": ("dermoscopy", "dermoscope"),
    "Endoscopy": ("endoscopy", "endoscope"),
    "Fundus": ("fundus",),
    "OCT": ("oct",),
    "Mammography": ("mammography", "mammo"),
    "CT": ("ct",),
    "PET": ("pet",),
}
_ALIAS_TO_MODALITY = {alias: name for name, aliases in MODALITY_ALIASES.items() for alias in aliases}

UNKNOWN_PREFIX = "Unknown:"


class CaseNameError(ValueError):
    """A file name that does not follow `2DBox_<Modality>_<id>` / `3DBox_<Modality>_<id>`."""


def _normalise(token: str) -> str:
    return token.lower().replace("-", "")


def parse_case_name(file_name: str) -> tuple[int, str]:
    """Return (2 or 3, canonical modality) for a case file name.

    A modality that matches no alias comes back as "Unknown:<token>" so the router can warn and use
    its default route.
    """
    stem = file_name[:-4] if file_name.lower().endswith(".npz") else file_name
    tokens = stem.split("_")
    prefix = tokens[0].lower()
    if prefix not in ("2dbox", "3dbox") or len(tokens) < 2 or not tokens[1]:
        raise CaseNameError(
            f"file name must look like 2DBox_<Modality>_<id>.npz or 3DBox_<Modality>_<id>.npz: {file_name}"
        )
    dim = 2 if prefix == "2dbox" else 3
    # The id may contain underscores too: only the modality tokens before it are searched.
    for token in tokens[1:-1] or tokens[1:]:
        modality = _ALIAS_TO_MODALITY.get(_normalise(token))
        if modality is not None:
            return dim, modality
    return dim, UNKNOWN_PREFIX + tokens[1]
