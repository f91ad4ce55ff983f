"""models/predictor.py without exported IR: a SamPredictor made from a tiny model built in code and compiled
apart from it (models.compiled.CompiledSam), with the exported models' input and output names and layouts.

The tiny encoder's embedding is the image's channel mean at 16 x 16 (min-max normalised, so 0 or 1 here);
the tiny decoder's logit is 2.5 x (embedding - 0.2) inside the box (2 bright, -0.5 dark), -10 outside: a mask
is the box's bright part, and its stability score (SAM's, offset 1) is the bright share of the box in the
16-pixel frame.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import pytest

from models.compiled import CompiledSam
from models.predictor import Embedding, SamPredictor
from models.registry import LITEMEDSAM_BUFFERS, ModelSpec

SIDE = 16  # the tiny model's input side, embedding side and prompt frame
TINY = ModelSpec("tiny", image_size=SIDE, prompt_frame=SIDE, normalisation="minmax", embedding_shape=(1, 1, SIDE, SIDE),
                 weights="none", buffers=LITEMEDSAM_BUFFERS, floor_boxes=True)


def _opset():  # openvino.opset13 in recent releases, openvino.runtime.opset13 in older ones
    try:
        import openvino.opset13 as ops
    except ImportError:
        import openvino.runtime.opset13 as ops
    return ops


def tiny_model() -> CompiledSam:
    """The encoder `image` (1, 3, S, S) -> `image_embeddings` (1, 1, S, S) and the decoder (`image_embeddings`,
    `boxes` (N, 4) in the prompt frame) -> `low_res_logits` (N, 1, S, S), compiled for the CPU in f32."""
    ops = _opset()
    image = ops.parameter([1, 3, SIDE, SIDE], np.float32, name="image")
    mean = ops.reduce_mean(image, ops.constant(np.array([1], np.int64)), keep_dims=True)
    mean.output(0).get_tensor().set_names({"image_embeddings"})
    encoder = ov.Model([mean], [image], "tiny_encoder")

    embedding = ops.parameter([1, 1, SIDE, SIDE], np.float32, name="image_embeddings")
    boxes = ops.parameter([-1, 4], np.float32, name="boxes")
    corners = ops.reshape(boxes, ops.constant(np.array([-1, 4, 1, 1], np.int64)), False)
    x0, y0, x1, y1 = ops.split(corners, ops.constant(np.int64(1)), 4).outputs()  # each (N, 1, 1, 1)
    xs = ops.constant(np.arange(SIDE, dtype=np.float32).reshape(1, 1, 1, SIDE))
    ys = ops.constant(np.arange(SIDE, dtype=np.float32).reshape(1, 1, SIDE, 1))
    inside = ops.logical_and(ops.logical_and(ops.greater_equal(xs, x0), ops.less_equal(xs, x1)),
                             ops.logical_and(ops.greater_equal(ys, y0), ops.less_equal(ys, y1)))  # (N, 1, S, S)
    bright = ops.multiply(ops.subtract(embedding, ops.constant(np.float32(0.2))), ops.constant(np.float32(2.5)))
    logits = ops.select(inside, bright, ops.constant(np.float32(-10.0)))
    logits.output(0).get_tensor().set_names({"low_res_logits"})
    decoder = ov.Model([logits], [embedding, boxes], "tiny_decoder")

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    return CompiledSam(TINY, "fp32", core.compile_model(encoder, "CPU", config),
                       core.compile_model(decoder, "CPU", config))


@pytest.fixture(scope="module")
def compiled() -> CompiledSam:
    return tiny_model()


def half_bright(height: int = 32, width: int = 32) -> np.ndarray:
    """(H, W, 3) uint8: the left half 200, the right half 0."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = 200
    return image


def test_a_predictor_runs_a_model_compiled_apart_from_it(compiled) -> None:
    predictor = SamPredictor(compiled, decode_batch=2)
    assert predictor.spec is TINY and predictor.precision == "fp32"
    predictor.set_image(half_bright())
    embedding = predictor.get_image_embedding()
    assert embedding.original_hw == (32, 32) and embedding.features.shape == (1, 1, SIDE, SIDE)
    assert np.array_equal(embedding.features[0, 0], np.repeat([[1.0] * 8 + [0.0] * 8], SIDE, axis=0))
    boxes = np.array([[4, 4, 27, 27], [20, 2, 30, 30], [0, 0, 31, 31]])
    masks, stability = predictor.predict_scored(boxes)
    assert masks.shape == (3, 32, 32) and masks.dtype == bool
    assert not masks[:, :, 17:].any(), "only the bright half"
    # [2, 13] in the frame, bilinear back to 32 px: rows 5..26 (4 and 27 read the -10 outside), columns 5..16
    # (16 reads 1/4 of a bright logit 2 and 3/4 of a dark -0.5)
    expected = np.zeros((32, 32), bool)
    expected[5:27, 5:17] = True
    assert np.array_equal(masks[0], expected), "the box's bright part, upsampled"
    assert not masks[1].any(), "a box on the dark half finds nothing"
    # in the 16-pixel frame box 0 is [2, 2, 13, 13]: 6 of its 12 columns bright; box 2 is the whole frame
    assert stability.tolist() == [0.5, 0.0, 0.5]
    assert predictor.decoder_calls == 2 and predictor.largest_decoded_batch == 2  # 3 boxes, 2 at a time
    assert np.array_equal(predictor.predict(boxes, batch=3), masks) and predictor.largest_decoded_batch == 3


def test_the_cache_serves_a_key_again_and_an_embedding_can_be_set(compiled) -> None:
    predictor = SamPredictor(compiled)
    image = half_bright()
    predictor.set_image(image, key="a")
    predictor.set_image(np.zeros_like(image), key="b")
    predictor.set_image(image, key="a")
    assert predictor.encoder_calls == 2 and len(predictor.cache) == 2
    box = np.array([[0, 0, 31, 31]])
    assert predictor.predict(box)[0, :, :17].all()
    dark = Embedding(np.zeros((1, 1, SIDE, SIDE), np.float32), (32, 32))
    predictor.set_image_embedding(dark)
    assert not predictor.predict(box).any() and predictor.encoder_calls == 2
    predictor.reset()
    assert len(predictor.cache) == 0
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict(box)
    with pytest.raises(TypeError):
        predictor.set_image(image, "RGB")  # SAM's image_format: never a cache key


def test_compiled_models_refuse_an_unknown_precision(compiled) -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        CompiledSam(TINY, "fp64", compiled.encoder, compiled.decoder)
