"""Per-slice prompt rules for whole-scan 3D boxes, measured side by side on every slice (issue 37's research).

    python -m benchmarks.prompt_rules --cases ../shared/data/dev-fullfov:3DBox_CT_OpenKBPpt99* \
        --rules core,stab,cover,continues --store /tmp/embeddings

Each structure alone (no other boxes, no contested-voxel rule), its box's middle slice prompted with the given
(3D) box G, then every slice up and down decoded in order (no slice skipping), each slice's mask clipped to G.
Beyond the middle slice a rule chooses the prompt or the mask from the previous slice's mask box grown by
propagate3d.GROW_FRACTION of the image (P), that box inside G (F = P inside G) and G:
- core: G on the middle half of the z range, P beyond it (the shipped `propagate` without slice skipping);
- prop: P on every slice (core 0);
- stab: F and G both decoded, the mask of higher stability kept (`follow = true`);
- cover: G where F covers at least half of G's area (G is about as tight as the structure there), else F;
- continues: G where its mask `continues` the previous slice's (propagate3d.continues: half of it over the
  previous mask, stability >= 0.6, as the one-box stop), else F.
Prints each structure's DSC per rule, then the mean per case and over all. Rules that are not the product's run
here only: what made them lose is in docs/results.md ("Whole scans: 3D prompts"). `--store` reuses encoder
outputs (benchmarks.study.StoredEmbeddingPredictor): DSC is exact, no seconds are reported.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmarks.prompt_gap import dice
from benchmarks.study import parse_case_set, predictor_maker
from models.boxes import clip_to_boxes, grow_box, mask_bbox
from models.pool import ModelPool
from models.predictor import SamPredictor
from models.registry import model_dir
from router.modality import parse_case_name
from router.strategies.propagate3d import GROW_FRACTION, PropagateParams, continues, intersect_boxes

Decode = Callable[[np.ndarray], tuple[np.ndarray, float]]  # (4,) prompt -> (H, W) mask, stability
Rule = Callable[[Decode, np.ndarray, np.ndarray, np.ndarray, bool], np.ndarray]


def clip_to_box(mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A copy of (H, W) bool `mask` kept inside the (4,) box [x0, y0, x1, y1] (models.boxes.clip_to_boxes)."""
    return clip_to_boxes(mask[None].copy(), box[None])[0]


def box_area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0] + 1, 0) * max(box[3] - box[1] + 1, 0))


def rule_core(decode: Decode, given: np.ndarray, grown: np.ndarray, previous: np.ndarray, in_core: bool) -> np.ndarray:
    return decode(given if in_core else grown)[0]


def rule_prop(decode: Decode, given: np.ndarray, grown: np.ndarray, previous: np.ndarray, in_core: bool) -> np.ndarray:
    return decode(grown)[0]


def rule_stab(decode: Decode, given: np.ndarray, grown: np.ndarray, previous: np.ndarray, in_core: bool) -> np.ndarray:
    (from_given, given_stability), (followed, followed_stability) = decode(given), decode(intersect_boxes(grown, given))
    return from_given if given_stability > followed_stability else followed


def rule_cover(decode: Decode, given: np.ndarray, grown: np.ndarray, previous: np.ndarray, in_core: bool) -> np.ndarray:
    inside = intersect_boxes(grown, given)
    return decode(given if box_area(inside) >= 0.5 * box_area(given) else inside)[0]


def rule_continues(decode: Decode, given: np.ndarray, grown: np.ndarray, previous: np.ndarray,
                   in_core: bool) -> np.ndarray:
    from_given, stability = decode(given)
    if continues(clip_to_box(previous, given), clip_to_box(from_given, given), stability, PropagateParams()):
        return from_given
    return decode(intersect_boxes(grown, given))[0]


RULES: dict[str, Rule] = {"core": rule_core, "prop": rule_prop, "stab": rule_stab, "cover": rule_cover,
                          "continues": rule_continues}


def structure_mask(volume: np.ndarray, box: np.ndarray, predictor: SamPredictor, rule: Rule,
                   view: str) -> np.ndarray:
    """(D, H, W) bool: the (6,) box's structure in the (D, H, W) uint8 volume, every slice of its z range
    decoded from the middle outwards, the prompt chosen by `rule`."""
    shape = volume.shape[1:]
    margin = GROW_FRACTION * max(shape)
    given = box[[0, 1, 3, 4]].astype(np.float64)
    low, high = int(box[2]), int(box[5])
    middle, reach = low + (high - low) // 2, 0.5 * (high - low) / 2
    out = np.zeros(volume.shape, bool)

    def decode_on(z: int) -> Decode:
        def decode(prompt: np.ndarray) -> tuple[np.ndarray, float]:
            predictor.set_image(volume[z], key=(view, z))
            masks, stability = predictor.predict_scored(prompt[None])
            return masks[0], float(stability[0])
        return decode

    first = decode_on(middle)(given)[0]
    out[middle] = clip_to_box(first, given)
    for step in (1, -1):
        previous, z = first, middle + step
        while low <= z <= high:
            bbox = mask_bbox(previous)
            decode = decode_on(z)
            if bbox is None:
                mask = decode(given)[0]
            else:
                mask = rule(decode, given, grow_box(bbox, margin, shape), previous, abs(z - middle) <= reach)
            out[z] = clip_to_box(mask, given)
            previous, z = mask, z + step
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.prompt_rules", description=__doc__.split("\n")[0])
    parser.add_argument("--cases", action="append", required=True, help="DIR[:GLOB,...] with imgs/ and gts/")
    parser.add_argument("--rules", default=",".join(RULES), help=f"comma-separated, of {', '.join(RULES)}")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--store", type=Path, default=None, help="folder of stored encoder outputs (shared)")
    args = parser.parse_args(argv)
    names = args.rules.split(",")
    unknown = sorted(set(names) - set(RULES))
    if unknown:
        parser.error(f"unknown rules {unknown}; known: {', '.join(RULES)}")
    pool = ModelPool(model_dir(), args.threads, args.precision, make_predictor=predictor_maker(args.store))
    predictor = pool.get("litemedsam")
    scores: dict[str, list[list[float]]] = {}
    for spec in args.cases:
        for case, gt_path in parse_case_set(f"set={spec}").cases():
            if parse_case_name(case.name)[0] != 3:
                continue
            with np.load(case, allow_pickle=False) as npz:
                volume, boxes = npz["imgs"], npz["boxes"]
            with np.load(gt_path, allow_pickle=False) as npz:
                gt = npz["gts"]
            predictor.reset()
            for label, box in enumerate(boxes, 1):
                row = [dice(structure_mask(volume, box, predictor, RULES[n], case.stem), gt == label) for n in names]
                scores.setdefault(case.stem, []).append(row)
                print(case.stem, label, " ".join(f"{n}={v:.3f}" for n, v in zip(names, row, strict=True)),
                      file=sys.stderr, flush=True)
    print("| case | n | " + " | ".join(names) + " |\n|" + "---|" * (len(names) + 2))
    everything = [row for rows in scores.values() for row in rows]
    for name, rows in [*scores.items(), ("all", everything)]:
        means = np.mean(np.array(rows), axis=0)
        print(f"| {name} | {len(rows)} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
