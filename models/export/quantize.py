"""Post-training INT8 quantisation of an exported FP32 encoder IR with NNCF (the decoder stays FP32).

    python -m models.export.quantize --model litemedsam --ir models/ir

Calibration uses only real images the project ships: the stardist wheel's 2D fluorescence image
(img2d.tif), its 3D stack (img3d.tif, sliced along each axis) and its H&E crop (histo.jpg), with crops,
flips and contrast variants, plus the CT, MR and PET sarcoma slices of sample_data/sarcoma_slices.npz
(patients 7-14, CC BY 3.0). Every sample goes through models.transforms.preprocess, so the activation
ranges are those of the tensors the runtime feeds.

The layers kept in float (FLOAT_LAYERS) were chosen by NNCF's accuracy control, which reverts the
quantised layers that cost the most on the sarcoma slices until the drop is within bounds:

    python -m models.export.quantize --search-float-layers     # tens of minutes; prints FLOAT_LAYERS
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from models.boxes import mask_bbox
from models.hardware import INT8_RECIPE_KEY
from models.registry import get_spec
from models.transforms import postprocess_masks, preprocess, scale_boxes

if TYPE_CHECKING:
    import openvino as ov

DEFAULT_SUBSET_SIZE = 64  # under a minute on 2 cores; 32 -> 64 moved the embedding cosine by 0.0005 only
_SEED = 2024


def random_views(image: np.ndarray, rng: np.random.Generator, count: int) -> Iterator[np.ndarray]:
    """`count` random views of a uint8 (H, W[, 3]) image: crop, flip, gamma and (sometimes) inversion."""
    height, width = image.shape[:2]
    for _ in range(count):
        scale = rng.uniform(0.35, 0.9)
        crop_h, crop_w = max(16, int(height * scale)), max(16, int(width * rng.uniform(0.35, 0.9)))
        y, x = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
        view = image[y : y + crop_h, x : x + crop_w]
        if rng.random() < 0.5:
            view = view[:, ::-1]
        if rng.random() < 0.5:
            view = view[::-1]
        gamma = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        view = np.rint(255 * (view / 255.0) ** gamma).astype(np.uint8)
        if rng.random() < 0.25:  # bright background, dark objects (brightfield, X-ray-like)
            view = 255 - view
        yield np.ascontiguousarray(view)


def calibration_images(seed: int = _SEED, sarcoma_patients: Collection[int] | None = None) -> list[np.ndarray]:
    """Real uint8 images, grey (H, W) or RGB (H, W, 3), in a fixed shuffled order; the sarcoma slices of
    `sarcoma_patients` only, when given (all shipped patients by default).

    The order interleaves sources so that any prefix (a small subset_size) still mixes all of them.
    """
    import tifffile

    from sample_data.sarcoma import sarcoma_slices
    from sample_data.stardist import scale_to_uint8, stardist_file

    rng = np.random.default_rng(seed)
    groups: list[list[np.ndarray]] = []

    nuclei = scale_to_uint8(tifffile.imread(stardist_file("img2d.tif")))
    nuclei_stretched = scale_to_uint8(tifffile.imread(stardist_file("img2d.tif")), 1, 99.8)
    groups.append([nuclei, nuclei_stretched, *random_views(nuclei, rng, 14)])

    stack = tifffile.imread(stardist_file("img3d.tif"))  # (31, 61, 57) uint16
    stack8 = scale_to_uint8(stack, 0.5, 99.9)
    slices = [stack8[z] for z in range(2, stack8.shape[0] - 2, 3)]
    slices += [stack8[:, y] for y in range(5, stack8.shape[1] - 5, 10)]
    slices += [stack8[:, :, x] for x in range(5, stack8.shape[2] - 5, 10)]
    groups.append([np.ascontiguousarray(s) for s in slices])

    histo = cv2.imread(str(stardist_file("histo.jpg")), cv2.IMREAD_COLOR)
    if histo is not None:
        histo = cv2.cvtColor(histo, cv2.COLOR_BGR2RGB)
        groups.append([histo, *random_views(histo, rng, 7)])

    sarcoma = [item for item in sarcoma_slices() if sarcoma_patients is None or item.patient in sarcoma_patients]
    for modality in ("CT", "MR", "PET"):
        groups.append([item.image for item in sarcoma if item.modality == modality])

    for group in groups:
        rng.shuffle(group)
    images: list[np.ndarray] = []
    for i in range(max(len(g) for g in groups)):  # round robin over the sources
        images.extend(group[i] for group in groups if i < len(group))
    return images


def calibration_inputs(name: str, subset_size: int = DEFAULT_SUBSET_SIZE) -> list[np.ndarray]:
    """The first `subset_size` calibration images as encoder inputs (1, 3, S, S) float32 for model `name`.

    More than the source images hold: the list is cycled through with fresh random views.
    """
    spec = get_spec(name)
    images = calibration_images()
    sources, rng = len(images), np.random.default_rng(_SEED + 1)
    while len(images) < subset_size:
        images.extend(random_views(images[len(images) % sources], rng, 1))
    return [preprocess(image, spec)[0] for image in images[:subset_size]]


# Compile options under which OpenVINO's CPU plugin runs an INT8 IR's FakeQuantize ops in float instead of
# on int8 kernels (its low-precision transformations off): the network's exact value on any CPU, which is what
# an int8 dot product computes. Tests and benchmarks use it to tell the recipe from the CPU's arithmetic.
EXACT_INT8_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "LP_TRANSFORMS_MODE": "NO"}


def first_convolutions(model: ov.Model, count: int) -> list[str]:
    """Friendly names of the first `count` (Group)Convolution nodes of an OpenVINO model, in execution order."""
    kinds = ("Convolution", "GroupConvolution")
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in kinds][:count]


# Layers NNCF's accuracy control chose to keep in float, on top of the stem, when its metric was the slices' Dice
# against the true masks with tight and 10%-grown boxes (max_drop 0.002): every layer quantised lost 0.0051 there,
# 0.0009 without these two. Against FP32's own masks (today's metric) they matter little: agreement 0.949 with
# them, 0.948 without. Nor does today's metric find a short list: the error is spread over the 76 layers, and
# keeping its top-ranked 4, 8, 16 or 32 in float gives 0.954, 0.961, 0.968, 0.974 (bf16: 0.981); 32 cost
# 22-34% more encoder time (two idle runs). So these two stay (docs/results.md, "Precision by CPU class").
FLOAT_LAYERS: tuple[str, ...] = (
    "GroupConvolution before __module.layers.1.blocks.0.local_conv.bn/aten::batch_norm/BatchNormInference",
    "__module.layers.2.blocks.0.attn.proj/aten::linear/MatMul",
)


def nncf_settings(
    ignored: Sequence[str],
    *,
    model_type: str | None = "transformer",
    smooth_quant: bool = False,
    bias_correction: bool = False,
    overflow_fix: bool = False,
) -> dict[str, Any]:
    """The keyword arguments of this project's INT8 recipe that nncf.quantize and
    nncf.quantize_with_accuracy_control share, on any backend; `ignored`: node names kept in float.

    overflow_fix: every weight on half the int8 range (NNCF's OverflowFix.ENABLE), so that a CPU without an
    int8 dot product computes the network exactly; the 7-bit weights cost as much accuracy as the saturation
    they remove (docs/results.md, "INT8 without VNNI"), so the recipe leaves it off (NNCF's default fixes only
    the first layers, which stay in float here)."""
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        OverflowFix,
    )

    advanced = AdvancedQuantizationParameters(disable_bias_correction=not bias_correction)
    if overflow_fix:
        advanced.overflow_fix = OverflowFix.ENABLE
    if not smooth_quant:
        advanced.smooth_quant_alphas = AdvancedSmoothQuantParameters(convolution=-1, matmul=-1)
    return {
        "preset": nncf.QuantizationPreset.MIXED,
        "model_type": nncf.ModelType.TRANSFORMER if model_type == "transformer" else None,
        "fast_bias_correction": True,
        "ignored_scope": nncf.IgnoredScope(names=list(ignored)) if ignored else None,
        "advanced_quantization_parameters": advanced,
    }


def _quantization_arguments(
    model: ov.Model, float_layers: Sequence[str], *, float_first_convs: int = 3, **options: Any
) -> dict[str, Any]:
    """nncf_settings for an OpenVINO encoder, its stem and `float_layers` in float (see quantize_encoder)."""
    ignored = [*first_convolutions(model, float_first_convs), *resolve_layers(model, float_layers)]
    return nncf_settings(ignored, **options)


def _quantize(model: ov.Model, inputs: list[np.ndarray], float_layers: Sequence[str], **options: Any) -> ov.Model:
    """nncf.quantize with _quantization_arguments, calibrated on all of `inputs`."""
    import nncf

    arguments = _quantization_arguments(model, float_layers, **options)
    arguments["advanced_parameters"] = arguments.pop("advanced_quantization_parameters")
    return nncf.quantize(model, nncf.Dataset(inputs), subset_size=len(inputs), **arguments)


def quantize_encoder(
    name: str,
    ir_dir: Path,
    subset_size: int = DEFAULT_SUBSET_SIZE,
    out_file: Path | None = None,
    *,
    float_layers: Sequence[str] = FLOAT_LAYERS,
    **options: Any,
) -> Path:
    """Quantise `ir_dir / spec.encoder_file` to INT8 and write `ir_dir / spec.encoder_int8_file` (or `out_file`).

    Weights per channel (symmetric), activations per tensor (mixed preset); `float_layers` (layer_key
    names) keep float inputs. Options: model_type "transformer" keeps the softmax/layer-norm/GELU paths in
    float; smooth_quant moves activation outliers into the MatMul weights; float_first_convs leaves that
    many leading convolutions (the stem) in FP32; bias_correction lets NNCF shift biases to undo the mean
    error seen on the calibration images; overflow_fix puts the weights on 7 bits (nncf_settings). Returns
    the written .xml path.

    Defaults measured on LiteMedSAM (encoder 256x256; embedding cosine to FP32, dev DSC vs FP32):
      * NNCF's suggestion for transformers (SmoothQuant on): cosine 0.974 mean, 0.86 on an X-ray.
      * SmoothQuant off, the 3 stem convolutions in FP32: cosine 0.990 mean, 0.986 worst; but the
        dev US case lost 0.05 DSC and Mammography 0.04, from a systematic shrink of the mask.
      * ... and no bias correction (the default): cosine 0.986 mean, 0.971 worst. Bias correction fits
        the mean output shift of the calibration images and carried it to modalities unlike them;
        weights-only INT8 with those corrected biases showed the same US shrink.
    """
    import openvino as ov

    spec = get_spec(name)
    ir_dir = Path(ir_dir)
    model = ov.Core().read_model(ir_dir / spec.encoder_file)
    quantized = _quantize(model, calibration_inputs(name, subset_size), float_layers, **options)
    quantized.set_rt_info("ptq", list(INT8_RECIPE_KEY))
    out = Path(out_file) if out_file else ir_dir / spec.encoder_int8_file
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


# Each control slice is prompted twice: with its own tight box, and with the tumour's 3D box seen in that
# view, the prompt a 3D case gives most slices (every PET slice, the middle half of a CT/MR box). With tight
# boxes the decoder fills the box from the prompt and hardly needs the image (an all-zero embedding scored
# 0.726 Dice against FP32's 0.727 on every 20th slice); the looser volume box makes the masks depend on it.
CONTROL_PROMPTS = ("tight", "volume")


@dataclass(frozen=True)
class ControlItem:
    """One accuracy-control image: its position in control_items, encoder input (1, 3, S, S) float32, its
    prompt boxes (M, 4) float32 in the model's frame (one per CONTROL_PROMPTS) and its true mask (H, W) bool."""

    index: int
    tensor: np.ndarray
    prompts: np.ndarray
    truth: np.ndarray

    @property
    def original_hw(self) -> tuple[int, int]:
        return (self.truth.shape[0], self.truth.shape[1])


def control_items(name: str, patients: Collection[int] | None = None) -> list[ControlItem]:
    """The shipped sarcoma slices (of `patients` only, when given) as ControlItems, prompted by CONTROL_PROMPTS;
    index counts within the selection."""
    from sample_data.sarcoma import sarcoma_slices

    spec = get_spec(name)
    items = []
    selected = [item for item in sarcoma_slices() if patients is None or item.patient in patients]
    for index, item in enumerate(selected):
        tight = mask_bbox(item.mask)
        if tight is None:
            raise ValueError(f"a {item.modality} slice of patient {item.patient} has an empty mask")
        boxes = np.stack([tight, item.volume_box]).astype(np.float32)
        prompts = scale_boxes(boxes, item.mask.shape, spec)
        items.append(ControlItem(index, preprocess(item.image, spec)[0], prompts, item.mask))
    return items


def decode(features: np.ndarray, item: ControlItem, decoder: ov.InferRequest, name: str) -> np.ndarray:
    """(1, C, h, w) embedding of `item` -> (M, H, W) bool masks, one per prompt, through an f32 `decoder`."""
    decoder.infer({0: features, 1: item.prompts})
    return postprocess_masks(decoder.get_output_tensor(0).data, item.original_hw, get_spec(name))


def mask_agreement(
    encode: Callable[[np.ndarray], np.ndarray],
    decoder: ov.InferRequest,
    items: Sequence[ControlItem],
    references: Sequence[np.ndarray],
    name: str,
) -> tuple[float, list[float]]:
    """Mean and per-item Dice between the masks decoded with `encode` (tensor -> features) as the encoder
    and `references`, each (M, H, W) bool (e.g. the FP32 encoder's masks) or (H, W) for all prompts (the
    truth); an item's Dice is the mean over its prompts, 1.0 where both masks are empty."""
    per_item = []
    for item, reference_masks in zip(items, references, strict=True):
        masks = decode(encode(item.tensor), item, decoder, name)
        reference = np.broadcast_to(reference_masks, masks.shape)
        overlap = (masks & reference).sum(axis=(1, 2))
        sizes = masks.sum(axis=(1, 2)) + reference.sum(axis=(1, 2))
        per_item.append(float(np.mean(np.where(sizes > 0, 2 * overlap / np.maximum(sizes, 1), 1.0))))
    return float(np.mean(per_item)), per_item


QUANTISED_KINDS = ("Convolution", "GroupConvolution", "MatMul", "ScaledDotProductAttention")  # what NNCF quantises
_PASS_THROUGH = ("Reshape", "Transpose", "Convert", "Squeeze", "Unsqueeze", "Split", "VariadicSplit")


def layer_key(op: ov.Node) -> str:
    """A name for a layer that survives re-export: its friendly name when the converter took it from the torch
    module path ("__module..."), else "<type> before <its first consumer's key>" (auto-numbered names such
    as "Multiply_22099", a convolution with its batch norm folded in, change with the conversion)."""
    name = op.get_friendly_name()
    if name.startswith("__module."):
        return name
    consumers = [target.get_node() for target in op.output(0).get_target_inputs()]
    while consumers and consumers[0].get_type_name() == "FakeQuantize":  # the same key quantised or not
        consumers = [target.get_node() for target in consumers[0].output(0).get_target_inputs()]
    return f"{op.get_type_name()} before {layer_key(consumers[0])}" if consumers else name


def resolve_layers(model: ov.Model, keys: Sequence[str]) -> list[str]:
    """Friendly names of the layers `keys` (layer_key) name in `model`; ValueError naming any not found."""
    layers = [op for op in model.get_ordered_ops() if op.get_type_name() in QUANTISED_KINDS]
    names = {layer_key(op): op.get_friendly_name() for op in layers}
    missing = [key for key in keys if key not in names]
    if missing:
        raise ValueError(f"the encoder has no layer {missing[0]!r}: re-run --search-float-layers for this export")
    return [names[key] for key in keys]


def quantized_layers(model: ov.Model) -> set[str]:
    """layer_key of every QUANTISED_KINDS op that reads an INT8 input: a FakeQuantize output, directly or
    through reshapes, transposes and splits (NNCF places the quantiser before those)."""

    def from_fake_quantize(node: ov.Node) -> bool:
        kind = node.get_type_name()
        if kind == "FakeQuantize":
            return True
        return kind in _PASS_THROUGH and from_fake_quantize(node.input(0).get_source_output().get_node())

    return {
        layer_key(op)
        for op in model.get_ordered_ops()
        if op.get_type_name() in QUANTISED_KINDS
        and any(from_fake_quantize(port.get_source_output().get_node()) for port in op.inputs())
    }


def search_float_layers(
    name: str,
    ir_dir: Path,
    max_drop: float = 0.02,
    ranking_subset_size: int = 40,
    subset_size: int = DEFAULT_SUBSET_SIZE,
    max_iterations: int = 8,
) -> list[str]:
    """Run nncf.quantize_with_accuracy_control on the FP32 encoder and return the layer_key of each layer it
    keeps in float beyond quantize_encoder's stem, sorted. The metric is the mean Dice between a model's masks
    and FP32's on the sarcoma control slices (both CONTROL_PROMPTS, f32 decoder in the loop); max_drop is
    absolute on it (FP32 scores 1.0; bf16 0.981). NNCF reverts at most max_iterations layer groups, about 1.5
    minutes each after its 25-minute ranking on 2 cores, and returns the best it reached.

    Agreement with FP32, not Dice against the true masks: quantisation errors move a slice's mask either way,
    so against the truth they mostly cancel (INT8 moved it by -0.003 on these prompts while agreeing with
    FP32 at only 0.95), and a 3D case compounds them, slice to slice and view to view."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    spec = get_spec(name)
    core = ov.Core()
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    model = core.read_model(Path(ir_dir) / spec.encoder_file)
    decoder = core.compile_model(Path(ir_dir) / spec.decoder_file, "CPU", f32).create_infer_request()
    items = control_items(name)
    fp32_encoder = core.compile_model(model, "CPU", f32)
    references = [decode(fp32_encoder(item.tensor)[0], item, decoder, name) for item in items]

    def validate(compiled: ov.CompiledModel, data: Any) -> tuple[float, list[float]]:
        request = compiled.create_infer_request()

        def encode(tensor: np.ndarray) -> np.ndarray:
            request.infer({0: tensor})
            return request.get_output_tensor(0).data.copy()

        subset = list(data)  # NNCF ranks on subsets of the items
        return mask_agreement(encode, decoder, subset, [references[item.index] for item in subset], name)

    inputs = calibration_inputs(name, subset_size)
    plain = _quantize(model, inputs, ())
    arguments = _quantization_arguments(model, ())
    controlled = nncf.quantize_with_accuracy_control(
        model,
        nncf.Dataset(inputs),
        nncf.Dataset(items),
        validate,
        max_drop=max_drop,
        subset_size=len(inputs),
        **arguments,
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
            ranking_subset_size=ranking_subset_size, num_ranking_workers=1, max_num_iterations=max_iterations
        ),
    )
    return sorted(quantized_layers(plain) - quantized_layers(controlled))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="litemedsam")
    parser.add_argument("--ir", type=Path, default=Path(__file__).resolve().parents[1] / "ir")
    parser.add_argument("--subset-size", type=int, default=DEFAULT_SUBSET_SIZE)
    parser.add_argument("--out", type=Path, default=None, help="default: the IR folder's INT8 encoder file")
    parser.add_argument("--overflow-fix", action="store_true",
                        help="weights on 7 bits, exact on CPUs without an int8 dot product (docs/results.md)")
    parser.add_argument(
        "--search-float-layers",
        action="store_true",
        help="run NNCF's accuracy control and print the FLOAT_LAYERS it chose (writes no model)",
    )
    parser.add_argument(
        "--max-drop", type=float, default=0.02, help="with --search-float-layers: absolute, on the Dice with FP32"
    )
    parser.add_argument("--max-iterations", type=int, default=8, help="with --search-float-layers: layer groups")
    args = parser.parse_args()
    if args.search_float_layers:
        logging.basicConfig(level=logging.INFO)
        layers = search_float_layers(
            args.model, args.ir, args.max_drop, subset_size=args.subset_size, max_iterations=args.max_iterations
        )
        print("FLOAT_LAYERS = (\n" + "".join(f'    "{layer}",\n' for layer in layers) + ")")
        return
    out = quantize_encoder(args.model, args.ir, args.subset_size, args.out, overflow_fix=args.overflow_fix)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
