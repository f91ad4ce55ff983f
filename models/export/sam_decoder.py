"""Box-prompt decoder graph shared by the SAM-family exports (LiteMedSAM, EfficientViT-SAM).

SAM's PromptEncoder.forward builds tensors whose batch size is a Python int, which tracing would bake
into the graph; this module re-states the box path with shapes taken from the input, so the exported
decoder takes any number of boxes per call.

It also re-states SAM's MaskDecoder/TwoWayTransformer forward (same weights, same maths, outputs equal
to float rounding) in a form that costs far less per box on a CPU:
  * the first layer's image-side projections (token->image keys/values, image->token queries) do not
    depend on the box, so they run once per image instead of once per box (SAM repeats the embedding);
  * attention over the 4096 image tokens uses block-diagonal head masks instead of splitting heads,
    so no (N, 4096, C) tensor is ever transposed (those transposes were ~30% of the decoder's time);
  * the two stride-2 transposed convolutions are per-pixel matmuls in token layout, and only the one
    mask SAM returns for a box prompt (multimask_output=False) is computed.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def _head_mask(num_heads: int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """(H, 1, D) 0/1 mask: row h selects the D/H columns of head h."""
    eye = torch.eye(num_heads, dtype=like.dtype, device=like.device)
    return eye.repeat_interleave(dim // num_heads, dim=1).reshape(num_heads, 1, dim)


def _attend_few_to_many(attention: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SAM Attention with few queries (B, T, C) and many keys (Bk, M, C), Bk in {1, B}: (B, T, C).

    Heads stay in the channel axis: a block-diagonal copy of the queries (B, H*T, D) scores every head
    against the untransposed keys in one matmul; the diagonal blocks of the output are the heads' results.
    """
    q, k, v = attention.q_proj(q), attention.k_proj(k), attention.v_proj(v)
    heads, dim = attention.num_heads, attention.internal_dim
    mask = _head_mask(heads, dim, q)
    q_blocks = (q.unsqueeze(1) * mask).flatten(1, 2)  # (B, H*T, D)
    logits = q_blocks @ k.transpose(1, 2) / math.sqrt(dim // heads)  # (B, H*T, M); transpose_b in OpenVINO
    out = torch.softmax(logits, dim=-1) @ v  # (B, H*T, D)
    out = (out.unflatten(1, (heads, -1)) * mask).sum(1)  # keep head h's own columns: (B, T, D)
    return attention.out_proj(out)


def _attend_many_to_few(attention: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SAM Attention with many queries (Bq, M, C), Bq in {1, B}, and few keys (B, T, C): (B, M, C).

    Block-diagonal keys and values (B, H*T, D) give every head's scores side by side, (B, M, H*T); a
    softmax per head and one matmul with the block values return the heads already recombined.
    """
    q, k, v = attention.q_proj(q), attention.k_proj(k), attention.v_proj(v)
    heads, dim = attention.num_heads, attention.internal_dim
    mask = _head_mask(heads, dim, q)
    k_blocks = (k.unsqueeze(1) * mask).flatten(1, 2)
    v_blocks = (v.unsqueeze(1) * mask).flatten(1, 2)
    logits = q @ k_blocks.transpose(1, 2) / math.sqrt(dim // heads)  # (B, M, H*T)
    weights = torch.softmax(logits.unflatten(2, (heads, -1)), dim=-1).flatten(2)
    return attention.out_proj(weights @ v_blocks)


def _two_way_block(block: nn.Module, queries, keys, query_pe, key_pe):
    """TwoWayAttentionBlock.forward; `keys` may have batch 1 (shared by every box) on the first layer."""
    if block.skip_first_layer_pe:
        queries = block.self_attn(q=queries, k=queries, v=queries)
    else:
        q = queries + query_pe
        queries = queries + block.self_attn(q=q, k=q, v=queries)
    queries = block.norm1(queries)
    k = keys + key_pe
    queries = block.norm2(queries + _attend_few_to_many(block.cross_attn_token_to_image, queries + query_pe, k, keys))
    queries = block.norm3(queries + block.mlp(queries))
    keys = block.norm4(keys + _attend_many_to_few(block.cross_attn_image_to_token, k, queries + query_pe, queries))
    return queries, keys


def _transposed_conv_2x2(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """Stride-2, kernel-2 ConvTranspose2d as a per-pixel matmul: (B, P, Cin) -> (B, 4 * P, Cout).

    Output pixel 4p + 2i + j of the result is sub-pixel (i, j) of input pixel p. Kept at rank 3:
    OpenVINO's CPU plugin returned garbage for the same maths written with rank-8 tensors.
    """
    weight = conv.weight.permute(0, 2, 3, 1).flatten(1)  # (Cin, 2 * 2 * Cout), columns (i, j, c)
    out = x @ weight + conv.bias.repeat(4)
    return out.reshape(x.shape[0], -1, conv.weight.shape[1])


def _predict_mask(decoder: nn.Module, image_embeddings, image_pe, sparse, dense_embedding):
    """MaskDecoder.predict_masks for the single (box prompt) mask: (N, 1, 4h, 4w) logits.

    image_embeddings (1, C, h, w); image_pe (1, C, h, w); sparse (N, 2, C); dense_embedding (1, C, 1, 1).
    """
    transformer = decoder.transformer
    height, width = image_embeddings.shape[-2:]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse), dim=1)
    keys = (image_embeddings + dense_embedding).flatten(2).transpose(1, 2)  # (1, h*w, C): one per image
    key_pe = image_pe.flatten(2).transpose(1, 2)
    queries = tokens
    for block in transformer.layers:
        queries, keys = _two_way_block(block, queries, keys, tokens, key_pe)
    attn = _attend_few_to_many(transformer.final_attn_token_to_image, queries + tokens, keys + key_pe, keys)
    queries = transformer.norm_final_attn(queries + attn)

    up0, norm, act0, up1, act1 = decoder.output_upscaling
    x = _transposed_conv_2x2(keys, up0)  # (N, h*w*4, C/4): pixel (y, x) then sub-pixel (i, j)
    x = act0(F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps))  # LayerNorm2d over channels
    x = act1(_transposed_conv_2x2(x, up1))  # (N, h*w*16, C/8): then sub-pixel (k, l)
    hyper = decoder.output_hypernetworks_mlps[0](queries[:, 1])  # mask token 0 only: (N, C/8)
    masks = (x @ hyper.unsqueeze(-1)).reshape(-1, width, 2, 2, 2, 2)  # (N*h, w, i, j, k, l)
    # logit row 4y + 2i + k, column 4x + 2j + l
    return masks.permute(0, 2, 4, 1, 3, 5).reshape(-1, 1, 4 * height, 4 * width)


class BoxDecoder(nn.Module):
    """(1, C, h, w) image embedding + (N, 4) boxes in the prompt frame -> (N, 1, m, m) mask logits."""

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    def _sparse(self, boxes: torch.Tensor) -> torch.Tensor:
        """(N, 4) boxes -> (N, 2, C) corner embeddings, as SAM's PromptEncoder._embed_boxes."""
        encoder = self.prompt_encoder
        corners = boxes.reshape(-1, 2, 2) + 0.5  # shift to pixel centres, as SAM's _embed_boxes does
        sparse = encoder.pe_layer.forward_with_coords(corners, encoder.input_image_size)
        corner_labels = torch.stack([encoder.point_embeddings[2].weight[0], encoder.point_embeddings[3].weight[0]])
        return sparse + corner_labels

    def forward(self, image_embeddings: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(1, C, h, w) embedding, (N, 4) boxes -> (N, 1, 4h, 4w) low-resolution mask logits."""
        encoder = self.prompt_encoder
        dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return _predict_mask(self.mask_decoder, image_embeddings, encoder.get_dense_pe(), self._sparse(boxes), dense)

    def reference_forward(self, image_embeddings: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """The same logits through SAM's own MaskDecoder (embedding repeated per box): the parity reference."""
        encoder = self.prompt_encoder
        sparse = self._sparse(boxes)
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
    decoder: BoxDecoder, embedding_shape: tuple[int, int, int, int], out_xml: Path, example_boxes: int = 3
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
