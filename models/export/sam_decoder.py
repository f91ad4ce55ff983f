"""Box-prompt decoder graph shared by the SAM-family exports (LiteMedSAM, EfficientViT-SAM).

SAM's PromptEncoder.forward builds tensors whose batch size is a Python int, which tracing would bake
into the graph; this module re-states the box path with shapes taken from the input, so the exported
decoder takes any number of boxes per call.
"""

from __future__ import annotations

import torch
from torch import nn


class BoxDecoder(nn.Module):
    """(1, C, h, w) image embedding + (N, 4) boxes in the prompt frame -> (N, 1, m, m) mask logits."""

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    def forward(self, image_embeddings: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        encoder = self.prompt_encoder
        corners = boxes.reshape(-1, 2, 2) + 0.5  # shift to pixel centres, as SAM's _embed_boxes does
        sparse = encoder.pe_layer.forward_with_coords(corners, encoder.input_image_size)
        corner_labels = torch.stack([encoder.point_embeddings[2].weight[0], encoder.point_embeddings[3].weight[0]])
        sparse = sparse + corner_labels
        height, width = encoder.image_embedding_size
        dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(sparse.shape[0], -1, height, width)
        low_res_masks, _ = self.mask_decoder(
            image_embeddings=image_embeddings,
            image_pe=encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return low_res_masks


def export_box_decoder(
    decoder: BoxDecoder, embedding_shape: tuple[int, int, int, int], out_xml, example_boxes: int = 3
) -> None:
    """Convert `decoder` to OpenVINO IR at `out_xml` with inputs image_embeddings and boxes (N dynamic)."""
    import openvino as ov

    example = (torch.randn(*embedding_shape), torch.tensor([[10.0, 20.0, 120.0, 140.0]]).repeat(example_boxes, 1))
    with torch.no_grad():
        model = ov.convert_model(
            decoder.eval(),
            example_input=example,
            input=[list(embedding_shape), [-1, 4]],
        )
    model.inputs[0].get_tensor().set_names({"image_embeddings"})
    model.inputs[1].get_tensor().set_names({"boxes"})
    model.outputs[0].get_tensor().set_names({"low_res_logits"})
    ov.save_model(model, str(out_xml), compress_to_fp16=False)
