"""Model name -> everything the runtime needs to drive it: input size, normalisation, box frame, IR files.

Two families with DIFFERENT preprocessing; mixing them silently ruins accuracy:
  * LiteMedSAM: longest side to 256 (INTER_AREA), min-max to [0, 1] per image, zero pad to 256x256;
    boxes and masks live in the same 256 frame.
  * EfficientViT-SAM (L0, L1): longest side to 512, ImageNet mean/std on 0-255 values, zero pad to
    512x512 after normalising; boxes live in a 1024 frame; 256x256 masks go up to 1024 first.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Normalisation = Literal["minmax", "imagenet"]
# fp32: FP32 IR computed in f32; bf16: FP32 IR computed in bf16 where the CPU has it, except the encoder's
# input layers (marked f32 at export); int8: INT8 encoder IR (the decoder stays FP32, computed in f32); f16: FP32 IR
# computed in f16 where the CPU has it (Arm's ARMv8.2 FP16; on x86 OpenVINO computes an f16 hint in bf16 or f32).
PRECISIONS = ("fp32", "bf16", "int8", "f16")

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "ir"
MIB = 1 << 20


@dataclass(frozen=True)
class ModelBuffers:
    """Inference memory OpenVINO allocates on a model's first use and keeps, bytes: on the first encode,
    on the first decode (one box), and per box of the largest decoder batch run (router/memory.py).

    Measured on LiteMedSAM (RSS growth in MiB, 2 cores; LITEMEDSAM_BUFFERS rounds up the worst precision):

        precision   first encode   first decode (1 box)   per box of the decoder batch
        bf16              84              34                      14
        int8             108              50                      26
        fp32             156              50                      27
    """

    first_encode: int
    first_decode: int
    per_box: int


LITEMEDSAM_BUFFERS = ModelBuffers(192 * MIB, 64 * MIB, 32 * MIB)
# Models not measured here (EfficientViT-SAM weights were absent): twice LiteMedSAM's, a guess on the safe side.
UNMEASURED_BUFFERS = ModelBuffers(384 * MIB, 128 * MIB, 64 * MIB)


@dataclass(frozen=True)
class ModelSpec:
    """Static facts about one exported model.

    image_size: side of the square encoder input (pixels).
    prompt_frame: side of the square frame in which the decoder reads boxes and to which masks are
        upsampled before cropping (equals image_size for LiteMedSAM, 1024 for EfficientViT-SAM).
    embedding_shape: shape of one image embedding, (1, C, h, w), float32.
    weights: file name of the source checkpoint (build time), as in models/weights_manifest.toml.
    buffers: the inference memory OpenVINO allocates for it and keeps (ModelBuffers).
    floor_boxes: truncate scaled box coordinates to integers, as the LiteMedSAM challenge baseline does.
    """

    name: str
    image_size: int
    prompt_frame: int
    normalisation: Normalisation
    embedding_shape: tuple[int, int, int, int]
    weights: str
    buffers: ModelBuffers
    floor_boxes: bool = False

    @property
    def embedding_bytes(self) -> int:
        """Bytes of one image embedding (float32)."""
        return math.prod(self.embedding_shape) * 4

    @property
    def encoder_file(self) -> str:
        return f"{self.name}_encoder.xml"

    @property
    def encoder_int8_file(self) -> str:
        """Post-training INT8 quantised encoder (NNCF), made by ./build.sh export."""
        return f"{self.name}_encoder_int8.xml"

    @property
    def decoder_file(self) -> str:
        return f"{self.name}_decoder.xml"


MODELS: dict[str, ModelSpec] = {
    "litemedsam": ModelSpec(
        "litemedsam", image_size=256, prompt_frame=256, normalisation="minmax",
        embedding_shape=(1, 256, 64, 64), weights="lite_medsam.pth", buffers=LITEMEDSAM_BUFFERS, floor_boxes=True,
    ),
    "efficientvit_sam_l0": ModelSpec(
        "efficientvit_sam_l0", image_size=512, prompt_frame=1024, normalisation="imagenet",
        embedding_shape=(1, 256, 64, 64), weights="efficientvit_sam_l0.pt", buffers=UNMEASURED_BUFFERS,
    ),
    "efficientvit_sam_l1": ModelSpec(
        "efficientvit_sam_l1", image_size=512, prompt_frame=1024, normalisation="imagenet",
        embedding_shape=(1, 256, 64, 64), weights="efficientvit_sam_l1.pt", buffers=UNMEASURED_BUFFERS,
    ),
}

FALLBACK_MODEL = "litemedsam"


def get_spec(name: str) -> ModelSpec:
    """Look up a model by name; raise KeyError listing the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model '{name}' (known: {', '.join(MODELS)})") from None


def model_dir() -> Path:
    """Folder holding the exported IR: $SEG_MODEL_DIR, else models/ir next to this file."""
    return Path(os.environ.get("SEG_MODEL_DIR", DEFAULT_MODEL_DIR))


def is_available(name: str, directory: Path | None = None) -> bool:
    """True when both IR files of the model were exported into `directory`."""
    spec = get_spec(name)
    directory = directory or model_dir()
    return all((directory / file).is_file() for file in (spec.encoder_file, spec.decoder_file))
