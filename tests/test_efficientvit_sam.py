"""EfficientViT-SAM build path: official state-dict layout, strict loading, OpenVINO parity, weight checks.

Random (seeded) weights throughout: the official checkpoints cannot be downloaded here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from models.compiled import has_precise_stem
from models.export.efficientvit_sam import (
    CheckpointMismatchError,
    export_efficientvit_sam,
    load_efficientvit_sam,
)
from models.export.weights import WeightsMismatchError, find_weights, load_manifest

ov = pytest.importorskip("openvino")
pytestmark = pytest.mark.integration  # torch and the model export

# ---------------------------------------------------------------------------------------------------
# Expected keys, derived from the official code (efficientvit/models/efficientvit/{backbone,sam}.py,
# efficientvit/models/nn/ops.py) as data, independently of the model module.


def _conv(keys: dict, prefix: str, cout: int, cin_per_group: int, k: int, bias: bool, norm: bool) -> None:
    """Official ConvLayer: conv.weight (+ conv.bias) (+ BatchNorm2d norm.*)."""
    keys[f"{prefix}.conv.weight"] = (cout, cin_per_group, k, k)
    if bias:
        keys[f"{prefix}.conv.bias"] = (cout,)
    if norm:
        for name in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.norm.{name}"] = (cout,)
        keys[f"{prefix}.norm.num_batches_tracked"] = ()


def _block(keys: dict, prefix: str, kind: str, cin: int, cout: int, expand: int, fewer_norm: bool) -> None:
    mid = cin * expand
    if kind == "res":  # ResBlock: conv1 3x3, conv2 3x3
        _conv(keys, f"{prefix}.conv1", mid, cin, 3, False, True)
        _conv(keys, f"{prefix}.conv2", cout, mid, 3, False, True)
    elif kind == "fmb":  # FusedMBConv: spatial_conv 3x3, point_conv 1x1
        _conv(keys, f"{prefix}.spatial_conv", mid, cin, 3, fewer_norm, not fewer_norm)
        _conv(keys, f"{prefix}.point_conv", cout, mid, 1, False, True)
    else:  # MBConv: inverted_conv 1x1, depth_conv 3x3 depthwise, point_conv 1x1
        _conv(keys, f"{prefix}.inverted_conv", mid, cin, 1, fewer_norm, not fewer_norm)
        _conv(keys, f"{prefix}.depth_conv", mid, 1, 3, fewer_norm, not fewer_norm)
        _conv(keys, f"{prefix}.point_conv", cout, mid, 1, False, True)


def official_encoder_keys(depths: list[int], head_depth: int) -> dict[str, tuple[int, ...]]:
    """image_encoder.* keys and shapes of efficientvit_sam_l0/l1 (EfficientViTLargeBackbone + SamNeck + ln2d)."""
    widths, blocks, expands = [32, 64, 128, 256, 512], ["res", "fmb", "fmb", "mb", "att"], [1, 4, 4, 4, 6]
    fewer = [False, False, False, True, True]
    keys: dict[str, tuple[int, ...]] = {}
    p = "image_encoder.backbone.stages"
    _conv(keys, f"{p}.0.op_list.0", 32, 3, 3, False, True)
    for j in range(depths[0]):
        _block(keys, f"{p}.0.op_list.{j + 1}.main", "res", 32, 32, 1, False)
    for s in range(1, 5):
        cin, w = widths[s - 1], widths[s]
        down = blocks[s] if blocks[s] in ("mb", "fmb") else "mb"
        _block(keys, f"{p}.{s}.op_list.0.main", down, cin, w, expands[s] * 4, fewer[s])
        for j in range(1, depths[s] + 1):
            q = f"{p}.{s}.op_list.{j}"
            if blocks[s] == "att":  # EfficientViTBlock: LiteMLA (dim 32, 16 heads, scale 5) + MBConv
                _conv(keys, f"{q}.context_module.main.qkv", 3 * w, w, 1, False, False)
                keys[f"{q}.context_module.main.aggreg.0.0.weight"] = (3 * w, 1, 5, 5)
                keys[f"{q}.context_module.main.aggreg.0.1.weight"] = (3 * w, 32, 1, 1)
                _conv(keys, f"{q}.context_module.main.proj", w, 2 * w, 1, False, True)
                _block(keys, f"{q}.local_module.main", "mb", w, w, expands[s], True)
            else:
                _block(keys, f"{q}.main", blocks[s], w, w, expands[s], fewer[s])
    n = "image_encoder.neck"
    for i, cin in enumerate([512, 256, 128]):
        _conv(keys, f"{n}.input_ops.{i}.op_list.0", 256, cin, 1, False, True)
    for j in range(head_depth):
        _block(keys, f"{n}.middle.op_list.{j}.main", "fmb", 256, 256, 1, False)
    _conv(keys, f"{n}.output_ops.0.op_list.0", 256, 256, 1, True, False)
    keys["image_encoder.norm.weight"] = keys["image_encoder.norm.bias"] = (256,)
    return keys


# SAM's prompt encoder / mask decoder as built by build_efficientvit_sam: key counts and a few shapes.
SAM_PART_COUNTS = {"prompt_encoder": 17, "mask_decoder": 120}
SAM_KEYS = {
    "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": (2, 128),
    "prompt_encoder.point_embeddings.3.weight": (1, 256),
    "prompt_encoder.mask_downscaling.6.weight": (256, 16, 1, 1),
    "prompt_encoder.no_mask_embed.weight": (1, 256),
    "mask_decoder.iou_token.weight": (1, 256),
    "mask_decoder.mask_tokens.weight": (4, 256),
    "mask_decoder.transformer.layers.1.self_attn.q_proj.weight": (256, 256),
    "mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight": (128, 256),
    "mask_decoder.transformer.layers.0.mlp.lin1.weight": (2048, 256),
    "mask_decoder.transformer.final_attn_token_to_image.out_proj.weight": (256, 128),
    "mask_decoder.transformer.norm_final_attn.weight": (256,),
    "mask_decoder.output_upscaling.0.weight": (256, 64, 2, 2),
    "mask_decoder.output_upscaling.3.weight": (64, 32, 2, 2),
    "mask_decoder.output_hypernetworks_mlps.3.layers.2.weight": (32, 256),
    "mask_decoder.iou_prediction_head.layers.2.weight": (4, 256),
}
# A few official names spelled out by hand (the generator above must agree with them too).
SAM_KEYS_FIRST = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
SPOT_KEYS = {
    "image_encoder.backbone.stages.0.op_list.1.main.conv2.norm.running_var": (32,),
    "image_encoder.backbone.stages.1.op_list.0.main.spatial_conv.conv.weight": (512, 32, 3, 3),
    "image_encoder.backbone.stages.3.op_list.0.main.inverted_conv.conv.bias": (2048,),
    "image_encoder.backbone.stages.4.op_list.0.main.inverted_conv.conv.weight": (6144, 256, 1, 1),
    "image_encoder.backbone.stages.4.op_list.1.context_module.main.qkv.conv.weight": (1536, 512, 1, 1),
    "image_encoder.backbone.stages.4.op_list.1.context_module.main.aggreg.0.1.weight": (1536, 32, 1, 1),
    "image_encoder.backbone.stages.4.op_list.4.local_module.main.depth_conv.conv.weight": (3072, 1, 3, 3),
    "image_encoder.neck.input_ops.0.op_list.0.conv.weight": (256, 512, 1, 1),
    "image_encoder.neck.middle.op_list.3.main.spatial_conv.conv.weight": (256, 256, 3, 3),
    "image_encoder.neck.output_ops.0.op_list.0.conv.bias": (256,),
    "image_encoder.norm.weight": (256,),
}
VARIANTS = {"l0": ([1, 1, 1, 4, 4], 4, 34.8e6), "l1": ([1, 1, 1, 6, 6], 8, 47.7e6)}  # params: official README


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def l0() -> torch.nn.Module:
    return load_efficientvit_sam("l0", None, seed=0)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_state_dict_matches_official_layout(variant: str) -> None:
    depths, head_depth, params = VARIANTS[variant]
    model = load_efficientvit_sam(variant, None)
    shapes = _shapes(model)
    encoder = {k: v for k, v in shapes.items() if k.startswith("image_encoder.")}
    assert encoder == official_encoder_keys(depths, head_depth)
    for part, count in SAM_PART_COUNTS.items():
        assert sum(k.startswith(part + ".") for k in shapes) == count, part
    assert len(shapes) == len(encoder) + sum(SAM_PART_COUNTS.values())
    for key, shape in {**SAM_KEYS, **SPOT_KEYS}.items():
        assert shapes[key] == shape, key
    n_params = sum(p.numel() for p in model.parameters())
    assert abs(n_params - params) / params < 0.002, n_params  # README: L0 34.8M, L1 47.7M


def test_norm_eps_and_activations(l0: torch.nn.Module) -> None:
    # set_norm_eps(model, 1e-6) reaches every BN / LayerNorm, SAM's transformer LayerNorms included.
    norms = [m for m in l0.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm))]
    assert norms and all(m.eps == 1e-6 for m in norms)
    assert l0.mask_decoder.transformer.norm_final_attn.eps == 1e-6
    gelus = [m for n, m in l0.named_modules() if isinstance(m, torch.nn.GELU) and n.startswith("image_encoder")]
    assert gelus and all(m.approximate == "tanh" for m in gelus)


def test_strict_loading_round_trip(tmp_path: Path, l0: torch.nn.Module) -> None:
    source = load_efficientvit_sam("l0", None, seed=1)  # differs from the seed-0 model it is loaded into
    state = source.state_dict()
    path = tmp_path / "efficientvit_sam_l0.pt"
    torch.save({"state_dict": state}, path)  # wrapped, as load_state_dict_from_file accepts
    loaded = load_efficientvit_sam("l0", path, seed=0)
    assert not loaded.training
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not torch.equal(loaded.state_dict()[SAM_KEYS_FIRST], l0.state_dict()[SAM_KEYS_FIRST])

    removed = "image_encoder.backbone.stages.4.op_list.1.context_module.main.qkv.conv.weight"
    broken = {k: v for k, v in state.items() if k != removed}
    torch.save(broken, path)
    with pytest.raises(CheckpointMismatchError, match="missing keys \\(1\\).*" + removed.replace(".", "\\.")):
        load_efficientvit_sam("l0", path)

    torch.save(state, path)  # an L0 checkpoint is not an L1 one
    with pytest.raises(CheckpointMismatchError, match="missing keys"):
        load_efficientvit_sam("l1", path)


@pytest.fixture(scope="module")
def exported(l0: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    encoder_xml, decoder_xml = export_efficientvit_sam("l0", None, tmp_path_factory.mktemp("ir"), model=l0)
    assert encoder_xml.name == "efficientvit_sam_l0_encoder.xml" and encoder_xml.with_suffix(".bin").is_file()
    assert decoder_xml.name == "efficientvit_sam_l0_decoder.xml" and decoder_xml.with_suffix(".bin").is_file()
    core = ov.Core()
    assert has_precise_stem(core.read_model(encoder_xml))  # its input layers stay f32 under --precision bf16
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    return core.compile_model(str(encoder_xml), "CPU", config), core.compile_model(str(decoder_xml), "CPU", config)


def test_encoder_parity(l0: torch.nn.Module, exported: tuple[object, object]) -> None:
    encoder, _ = exported
    assert [(p.get_any_name(), p.get_partial_shape().to_shape()) for p in encoder.inputs] == [
        ("image", ov.Shape([1, 3, 512, 512]))
    ]
    assert encoder.outputs[0].get_any_name() == "image_embeddings"
    image = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = l0.image_encoder(image).numpy()
    got = encoder({"image": image.numpy()})["image_embeddings"]
    assert got.shape == (1, 256, 64, 64)
    assert np.abs(got - expected).max() < 1e-3


def _boxes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(n, 2, generator=g) * 700
    return torch.cat([corner, corner + 8 + torch.rand(n, 2, generator=g) * 300], dim=1)  # x0 y0 x1 y1, 1024 frame


def test_decoder_parity_over_box_counts(l0: torch.nn.Module, exported: tuple[object, object]) -> None:
    _, decoder = exported
    assert {p.get_any_name() for p in decoder.inputs} == {"image_embeddings", "boxes"}
    assert decoder.outputs[0].get_any_name() == "low_res_logits"
    embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(4))
    outputs = {}
    for n in (1, 7):
        boxes = _boxes(n, seed=n)
        with torch.no_grad():  # SAM's own path: one embedding, repeat_interleaved over the box batch
            sparse, dense = l0.prompt_encoder(points=None, boxes=boxes, masks=None)
            expected, _ = l0.mask_decoder(
                image_embeddings=embedding,
                image_pe=l0.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
        got = decoder({"image_embeddings": embedding.numpy(), "boxes": boxes.numpy()})["low_res_logits"]
        assert got.shape == (n, 1, 256, 256)
        assert np.abs(got - expected.numpy()).max() < 1e-4 * max(1.0, float(expected.abs().max()))
        outputs[n] = got
    # Boxes are decoded independently: box 0 of the 7 alone gives the same logits; other boxes differ.
    single = decoder({"image_embeddings": embedding.numpy(), "boxes": _boxes(7, seed=7)[:1].numpy()})
    assert np.abs(single["low_res_logits"][0] - outputs[7][0]).max() < 1e-5
    assert np.abs(outputs[7][0] - outputs[7][1]).max() > 1e-4


# ---------------------------------------------------------------------------------------------------
# models.export.weights


def _manifest(tmp_path: Path, size: int, sha256: str) -> Path:
    path = tmp_path / "manifest.toml"
    path.write_text(
        f'[fake]\nfile = "fake.pt"\nsize = {size}\nsha256 = "{sha256}"\nsource = "test"\nlicence = "none"\n'
    )
    return path


def test_find_weights(tmp_path: Path) -> None:
    payload = b"not really a checkpoint" * 10
    digest = hashlib.sha256(payload).hexdigest()
    weights = tmp_path / "weights"
    weights.mkdir()
    manifest = _manifest(tmp_path, len(payload), digest)
    assert find_weights("fake", weights, manifest) is None  # absent

    (weights / "fake.pt").write_bytes(payload[:-1])  # truncated
    with pytest.raises(WeightsMismatchError, match="bytes"):
        find_weights("fake", weights, manifest)

    (weights / "fake.pt").write_bytes(payload)
    assert find_weights("fake", weights, manifest) == weights / "fake.pt"
    assert find_weights("fake.pt", weights, manifest) == weights / "fake.pt"  # by file name too

    (weights / "fake.pt").write_bytes(payload[::-1])  # right size, wrong content
    with pytest.raises(WeightsMismatchError, match="sha256"):
        find_weights("fake", weights, manifest)
    # Unknown size and sha256: nothing to check against, the file is returned.
    assert find_weights("fake", weights, _manifest(tmp_path, 0, "")) == weights / "fake.pt"
    with pytest.raises(KeyError, match="known: fake"):
        find_weights("other", weights, manifest)


def test_repository_manifest() -> None:
    specs = load_manifest()
    lite = specs["litemedsam"]
    assert (lite.file, lite.size) == ("lite_medsam.pth", 39370479)
    assert lite.sha256 == "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
    for variant in ("l0", "l1"):
        spec = specs[f"efficientvit_sam_{variant}"]
        assert spec.file == f"efficientvit_sam_{variant}.pt" and spec.licence == "Apache-2.0"
