"""The library API (router.pipeline.Segmenter): the README's example runs, and an image in memory gives the
label map its case file gives."""

from __future__ import annotations

import re

import numpy as np
import pytest

from router.pipeline import Segmenter
from router.validation import CaseError
from tests.helpers import ROOT, blob_volume, dice, tight_box3d, write_case


def test_readme_python_example_runs(ir_dir, capsys):
    text = (ROOT / "README.md").read_text()
    example = re.search(r"## Python\n.*?```python\n(.*?)```", text, re.S)
    assert example, "README has no Python example"
    scope: dict = {}
    exec(compile(example.group(1), "README.md", "exec"), scope)  # noqa: S102 - our own README
    segs, lesion = scope["segs"], scope["lesion"]
    assert tight_box3d(lesion).tolist() == scope["boxes"][0].tolist()  # the example's box is the lesion's
    assert segs.shape == (12, 64, 64) and dice(segs == 1, lesion) > 0.8
    assert capsys.readouterr().out.strip() == "(12, 64, 64) [0 1]"


def test_an_array_is_segmented_as_its_case_file(tmp_path, ir_dir):
    volume, mask = blob_volume(shape=(10, 64, 64), centre=(5, 30, 34), radii=(3, 14, 11))
    boxes = tight_box3d(mask)[None]
    path = write_case(tmp_path / "3DBox_MR_blob.npz", imgs=volume, boxes=boxes, spacing=np.array([0.8, 0.8, 2.0]))
    segmenter = Segmenter.create(precision="fp32", threads=1, models=ir_dir)
    from_file = segmenter.segment_file(path).segs
    from_array = segmenter.segment(volume, boxes, modality="MR")  # no spacing: the label map never depended on it
    assert from_array.dtype == from_file.dtype and np.array_equal(from_array, from_file)
    assert dice(from_array == 1, mask) > 0.7
    two_d = segmenter.segment(volume[5], tight_box3d(mask)[None, [0, 1, 3, 4]], modality="MR")
    assert two_d.shape == (64, 64) and (two_d == 1).any()
    with pytest.raises(CaseError):
        segmenter.segment(volume, np.array([[5, 5, 5, 2, 2, 2]]), modality="MR")  # a box turned inside out
