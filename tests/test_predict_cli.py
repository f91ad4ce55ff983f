"""predict.py end to end: output contract, bad inputs, exit status (real LiteMedSAM on OpenVINO)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

import predict
from tests.helpers import ROOT, blob_volume, tight_box3d, write_case


def run_predict(inputs: Path, outputs: Path, capsys) -> tuple[int, str]:
    status = predict.main(["-i", str(inputs), "-o", str(outputs), "--no-progress", "--threads", "2"])
    return status, capsys.readouterr().err


def good_2d(rng) -> dict:
    image = rng.integers(0, 60, (64, 80, 3), dtype=np.uint8)
    image[20:40, 30:60] = 220
    return {"imgs": image, "boxes": np.array([[28, 18, 61, 41]])}


def test_output_contract_2d_3d_and_uint16(tmp_path, capsys, ir_dir):
    rng = np.random.default_rng(0)
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    write_case(inputs / "2DBox_Endoscopy_a.npz", **good_2d(rng))
    grey = good_2d(rng)["imgs"][:, :, 0]
    write_case(inputs / "2DBox_US_grey.npz", imgs=grey, boxes=np.array([[28, 18, 61, 41]]))
    volume, mask = blob_volume(shape=(12, 64, 64), centre=(6, 30, 32), radii=(3, 12, 10))
    write_case(inputs / "3DBox_CT_b.npz", imgs=volume, boxes=tight_box3d(mask)[None], spacing=np.array([1.0, 1.0, 3.0]))
    # 256 boxes: labels above 255 need uint16
    many = np.array([[x, y, x + 3, y + 3] for y in range(0, 64, 4) for x in range(0, 64, 4)])
    write_case(inputs / "2DBox_Microscopy_many.npz", imgs=rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), boxes=many)
    (inputs / "notes.txt").write_text("not a case")
    before = {p.name: p.read_bytes() for p in inputs.iterdir()}

    status, err = run_predict(inputs, outputs, capsys)
    assert status == 0, err
    assert "skip notes.txt: not an .npz case file" in err
    names = sorted(p.name for p in outputs.glob("*.npz"))
    assert names == ["2DBox_Endoscopy_a.npz", "2DBox_Microscopy_many.npz", "2DBox_US_grey.npz", "3DBox_CT_b.npz"]
    shapes = {"2DBox_Endoscopy_a.npz": (64, 80), "2DBox_US_grey.npz": (64, 80), "3DBox_CT_b.npz": (12, 64, 64),
              "2DBox_Microscopy_many.npz": (64, 64)}
    for name, shape in shapes.items():
        with np.load(outputs / name) as npz:
            assert npz.files == ["segs"]
            segs = npz["segs"]
        assert segs.shape == shape
        assert segs.dtype == (np.uint16 if name == "2DBox_Microscopy_many.npz" else np.uint8)
    with np.load(outputs / "2DBox_Microscopy_many.npz") as npz:
        assert npz["segs"].max() > 255
    with np.load(outputs / "3DBox_CT_b.npz") as npz:
        segs = npz["segs"]
    assert segs[6].sum() > 0 and segs[:3].max() == 0 and segs[10:].max() == 0
    efficiency = (outputs / "efficiency.csv").read_text().splitlines()
    assert efficiency[0] == "case,seconds" and len(efficiency) == 5
    assert not list(outputs.glob(".*tmp")), "temp files left behind"
    assert {p.name: p.read_bytes() for p in inputs.iterdir()} == before, "inputs were modified"


EMPTY, BOX = np.zeros((8, 8, 3), np.uint8), np.array([[1, 1, 5, 5]])
BAD_CASES = {
    "2DBox_CT_notzip.npz": (lambda p: p.write_bytes(b"this is not a zip file"), "not a readable .npz"),
    "2DBox_CT_truncated.npz": (None, "not a readable .npz"),
    "2DBox_CT_noimgs.npz": (lambda p: write_case(p, boxes=BOX), "missing key 'imgs'"),
    "2DBox_CT_noboxes.npz": (lambda p: write_case(p, imgs=EMPTY), "missing key 'boxes'"),
    "2DBox_CT_ndim.npz": (lambda p: write_case(p, imgs=np.zeros((2, 8, 8, 3), np.uint8), boxes=BOX),
                          "must be (H, W) or (H, W, 3)"),
    "3DBox_CT_ndim.npz": (lambda p: write_case(p, imgs=EMPTY[:, :, 0], boxes=np.array([[1, 1, 1, 5, 5, 5]])),
                          "must be (D, H, W)"),
    "2DBox_CT_boxwidth.npz": (lambda p: write_case(p, imgs=EMPTY, boxes=np.array([[1, 1, 1, 5, 5, 5]])),
                              "'boxes' must be (N, 4)"),
    "2DBox_CT_degenerate.npz": (lambda p: write_case(p, imgs=EMPTY, boxes=np.array([[6, 1, 2, 5]])),
                                "box 0 is degenerate"),
    "2DBox_CT_outside.npz": (lambda p: write_case(p, imgs=EMPTY, boxes=np.array([[20, 20, 30, 30]])),
                             "entirely outside"),
    "2DBox_CT_nan.npz": (lambda p: write_case(p, imgs=np.full((8, 8), np.nan), boxes=BOX), "NaN or Inf"),
    "2DBox_CT_inf.npz": (lambda p: write_case(p, imgs=np.full((8, 8), np.inf), boxes=BOX), "NaN or Inf"),
    "2DBox_CT_pickle.npz": (lambda p: np.savez(p, imgs=np.array([{"x": 1}], dtype=object), boxes=BOX),
                            "unreadable array"),
    "badname.npz": (lambda p: write_case(p, imgs=EMPTY, boxes=BOX),
                    "file name must look like"),
}


def test_bad_inputs_fail_alone_with_clear_errors(tmp_path, capsys, ir_dir):
    rng = np.random.default_rng(1)
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    good = write_case(inputs / "2DBox_Endoscopy_good.npz", **good_2d(rng))
    for name, (make, _) in BAD_CASES.items():
        if make is None:  # truncated: the first half of a valid case
            data = good.read_bytes()
            (inputs / name).write_bytes(data[: len(data) // 2])
        else:
            make(inputs / name)
    # Valid edge cases that must be written: no boxes; boxes partly outside (clipped); one-pixel and
    # one-slice boxes; float and uint16 images.
    write_case(inputs / "2DBox_CT_noboxes_ok.npz", imgs=np.zeros((16, 16, 3), np.uint8), boxes=np.zeros((0, 4)))
    write_case(inputs / "2DBox_CT_clip.npz", **{**good_2d(rng), "boxes": np.array([[-10, -5, 500, 41]])})
    write_case(inputs / "2DBox_CT_onepixel.npz", **{**good_2d(rng), "boxes": np.array([[40, 30, 40, 30]])})
    write_case(inputs / "2DBox_CT_float.npz", imgs=rng.normal(0, 300, (32, 32)), boxes=np.array([[4, 4, 20, 20]]))
    write_case(inputs / "2DBox_CT_uint16.npz", imgs=rng.integers(0, 4000, (32, 32, 3), dtype=np.uint16),
               boxes=np.array([[4, 4, 20, 20]]))
    volume, mask = blob_volume(shape=(6, 48, 48), centre=(3, 24, 24), radii=(2, 10, 10))
    write_case(inputs / "3DBox_CT_oneslice.npz", imgs=volume, boxes=np.array([[14, 14, 3, 34, 34, 3]]),
               spacing=np.array([1.0, 1.0, 1.0]))

    status, err = run_predict(inputs, outputs, capsys)
    assert status == 1
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    for name, (_, message) in BAD_CASES.items():
        matching = [line for line in error_lines if name in line]
        assert len(matching) == 1, (name, err)
        assert message in matching[0], (name, matching[0])
        assert not (outputs / name).exists()
    assert len(error_lines) == len(BAD_CASES)
    written = {p.name for p in outputs.glob("*.npz")}
    assert written == {"2DBox_Endoscopy_good.npz", "2DBox_CT_noboxes_ok.npz", "2DBox_CT_clip.npz",
                       "2DBox_CT_onepixel.npz",
                       "2DBox_CT_float.npz", "2DBox_CT_uint16.npz", "3DBox_CT_oneslice.npz"}
    with np.load(outputs / "2DBox_CT_noboxes_ok.npz") as npz:
        assert npz["segs"].shape == (16, 16) and npz["segs"].max() == 0
    with np.load(outputs / "3DBox_CT_oneslice.npz") as npz:
        segs = npz["segs"]
    assert segs[3].max() == 1 and np.delete(segs, 3, axis=0).max() == 0
    assert "done: 7 case(s) written, 13 failed" in err


def test_missing_input_folder_and_models(tmp_path, capsys, monkeypatch):
    assert predict.main(["-i", str(tmp_path / "nope"), "-o", str(tmp_path / "out")]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "in").mkdir()
    assert predict.main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--models", str(tmp_path)]) == 1
    assert "litemedsam is not exported" in capsys.readouterr().err


def test_output_folder_equal_to_input_folder_is_refused(tmp_path, capsys):
    case = write_case(tmp_path / "in" / "2DBox_CT_a.npz", **good_2d(np.random.default_rng(0)))
    before = case.read_bytes()
    assert predict.main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "in" / ".")]) == 1
    assert "is the input folder" in capsys.readouterr().err
    assert case.read_bytes() == before


def test_bad_routing_table_is_one_line(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    config = tmp_path / "routes.toml"
    for text, message in [("[modality.Xray]\n", "unknown modality table"), ("[default\n", "routes.toml")]:
        config.write_text(text)
        assert predict.main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--config", str(config)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: routing table") and message in err and len(err.strip().splitlines()) == 1, err
    missing = tmp_path / "missing.toml"
    assert predict.main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--config", str(missing)]) == 1
    assert "No such file" in capsys.readouterr().err


def test_unknown_modality_is_warned_once(tmp_path, capsys, ir_dir):
    rng = np.random.default_rng(2)
    for name in ("2DBox_Thermography_a.npz", "2DBox_Thermography_b.npz"):
        write_case(tmp_path / "in" / name, **good_2d(rng))
    status, err = run_predict(tmp_path / "in", tmp_path / "out", capsys)
    assert status == 0
    warnings = [line for line in err.splitlines() if "WARNING" in line and "Thermography" in line]
    assert len(warnings) == 1 and "default route" in warnings[0], err
    assert len(list((tmp_path / "out").glob("*.npz"))) == 2


def test_no_progress_bars_in_logs(tmp_path, ir_dir):
    """Off a terminal (docker logs, CI) stderr holds only the summary lines, without tqdm's redraws."""
    volume, _ = blob_volume(shape=(8, 48, 48), centre=(4, 24, 24), radii=(3, 10, 10))
    write_case(tmp_path / "in" / "3DBox_CT_bar.npz", imgs=volume, boxes=np.array([[14, 14, 2, 34, 34, 6]]),
               spacing=np.array([1.0, 1.0, 1.0]))
    done = subprocess.run([sys.executable, "predict.py", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                           "--threads", "2"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "slice/s" not in done.stderr
    assert "3DBox_CT_bar" in done.stderr and "done: 1 case(s) written" in done.stderr


def test_run_json_holds_the_parameters_each_case_ran_with(tmp_path, capsys, monkeypatch, ir_dir):
    """run.json's per-case route (model, strategy, every parameter) is what the strategy was handed, here with a
    --config table that changes one parameter of one modality (the others stay [default.propagate]'s)."""
    import dataclasses
    import json

    from router.strategies.propagate3d import PropagateParams
    from router.strategies.registry import STRATEGIES

    ran_with: dict[str, object] = {}

    def spying_run(strategy):
        real_run = strategy.run

        def run(image, boxes, predictor, params, on_slice=None):
            ran_with[strategy.name] = params
            return real_run(image, boxes, predictor, params, on_slice)

        return run

    for strategy in STRATEGIES.values():  # the instance's attribute shadows its class's method
        monkeypatch.setattr(strategy, "run", spying_run(strategy))
    routes = (ROOT / "router" / "routes.toml").read_text()
    config = tmp_path / "routes.toml"
    config.write_text(routes + "\n[modality.MR.propagate]\nskip_step = 2\n")
    volume, mask = blob_volume(shape=(12, 64, 64), centre=(6, 30, 32), radii=(3, 12, 10))
    write_case(tmp_path / "in" / "3DBox_MR_a.npz", imgs=volume, boxes=tight_box3d(mask)[None],
               spacing=np.array([1.0, 1.0, 3.0]))
    write_case(tmp_path / "in" / "2DBox_Endoscopy_b.npz", **good_2d(np.random.default_rng(3)))
    status = predict.main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--no-progress", "--threads", "2",
                           "--config", str(config)])
    assert status == 0, capsys.readouterr().err
    cases = json.loads((tmp_path / "out" / "run.json").read_text())["cases"]
    mr, endoscopy = cases["3DBox_MR_a"], cases["2DBox_Endoscopy_b"]
    assert (mr["route"], mr["model"], mr["strategy"]) == ("litemedsam/propagate", "litemedsam", "propagate")
    assert (endoscopy["model"], endoscopy["strategy"]) == ("litemedsam", "image2d")
    assert mr["params"] == json.loads(json.dumps(dataclasses.asdict(ran_with["propagate"])))
    assert endoscopy["params"] == json.loads(json.dumps(dataclasses.asdict(ran_with["image2d"])))
    assert ran_with["propagate"] == PropagateParams(skip_step=2)  # the one changed value, the others as shipped
    assert mr["params"]["skip_step"] == 2 and mr["params"]["core"] == PropagateParams().core
