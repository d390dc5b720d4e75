"""ssd-export: ONNX round trip against PyTorch (skipped without onnxruntime), sidecar files, documented usage."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_fixtures import write_tiny_checkpoint
from ssd_torch.cli import export

NAMES = ["background", "a", "b"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    pytest.importorskip("onnx", reason="the 'onnx' package (optional extra) is not installed")
    root = tmp_path_factory.mktemp("export")
    ckpt = write_tiny_checkpoint(root / "tiny.pt", NAMES, seed=2)
    onnx_path = root / "out" / "model.onnx"
    code = export.main([str(ckpt), "--onnx", str(onnx_path)])
    return ckpt, onnx_path, code


def test_sidecar_files(exported: tuple[Path, Path, int]) -> None:
    from ssd_torch.modeling.model_config import ModelConfig
    from ssd_torch.priors import default_boxes

    _, onnx_path, code = exported
    assert code == 0 and onnx_path.is_file()
    priors_path, json_path = export.sidecar_paths(onnx_path)
    meta = json.loads(json_path.read_text())
    assert meta["class_names"] == NAMES and meta["priors"] == priors_path.name and meta["variances"] == [0.1, 0.2]
    assert meta["postprocess"] == {"score_threshold": 0.01, "top_k": 400, "nms_threshold": 0.45,
                                   "max_detections": 200, "clip_boxes": True}
    assert meta["outputs"]["conf"] == ["B", 8732, 3] and meta["preprocess"]["channel_order"] == "RGB"
    assert len(meta["preprocess"]["mean"]) == 3
    priors = np.load(priors_path)
    assert priors.shape == (8732, 4) and priors.dtype == np.float32
    np.testing.assert_array_equal(priors, default_boxes(ModelConfig.from_dict(meta["model_config"]).prior_spec))


@pytest.mark.slow
def test_onnxruntime_matches_pytorch_and_documented_postprocessing(exported: tuple[Path, Path, int]) -> None:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (optional extra) is not installed")
    import torch

    from ssd_torch.modeling.predictor import load_predictor
    from ssd_torch.nms import postprocess

    ckpt, onnx_path, _ = exported
    meta = json.loads(export.sidecar_paths(onnx_path)[1].read_text())
    assert meta["check"]["ok"] and max(meta["check"]["max_abs_diff"].values()) <= 1e-4
    _p = load_predictor(ckpt)
    model, _, _ = _p.model, _p.config, list(_p.categories)
    x = torch.randn(2, 3, 300, 300, generator=torch.Generator().manual_seed(5))  # exported with batch 1: dynamic axis
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    loc, conf = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        want_loc, want_conf = model(x)
    np.testing.assert_allclose(loc, want_loc.numpy(), atol=1e-4)
    np.testing.assert_allclose(conf, want_conf.numpy(), atol=1e-4)
    # the module docstring's recipe: our post-processing on the ONNX outputs
    priors = torch.from_numpy(np.load(export.sidecar_paths(onnx_path)[0]))
    got = postprocess(torch.from_numpy(loc), torch.from_numpy(conf), priors, variances=meta["variances"],
                      **meta["postprocess"])
    want = postprocess(want_loc, want_conf, priors)
    assert len(got) == 2
    for g, w in zip(got, want):
        n = min(len(g.scores), len(w.scores), 20)  # the top detections: float noise may reorder the tail
        torch.testing.assert_close(g.scores[:n], w.scores[:n], atol=1e-4, rtol=0)


def test_check_reports_mismatch_and_absent_onnxruntime(exported: tuple[Path, Path, int], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime (optional extra) is not installed")
    import torch

    from ssd_torch.modeling.predictor import load_predictor

    ckpt, onnx_path, _ = exported
    # an export that does not compute the model's function must fail the check: perturb the PyTorch side
    _p = load_predictor(ckpt)
    model, _, _ = _p.model, _p.config, list(_p.categories)
    with torch.no_grad():
        model.conf_heads[0].bias[0] += 0.01
    bad = export.check_onnx(onnx_path, model, batch=1)
    assert bad is not None and not bad["ok"] and bad["max_abs_diff"]["conf"] >= 0.009
    assert bad["max_abs_diff"]["loc"] <= 1e-4
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    assert export.main([str(ckpt), "--onnx", str(tmp_path / "unchecked.onnx")]) == 0
    assert "not checked: onnxruntime is not installed" in capsys.readouterr().out
    assert json.loads((tmp_path / "unchecked.json").read_text())["check"] is None


def test_export_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export.main([str(tmp_path / "none.pt"), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "none.pt: file not found" in capsys.readouterr().err
    assert export.main([str(tmp_path / "none.pt"), "--onnx", str(tmp_path / "m.txt")]) == 2
    assert "must name a .onnx file" in capsys.readouterr().err


def test_postprocess_takes_onnxruntime_outputs_as_they_come(exported: tuple[Path, Path, int]) -> None:
    """The README's recipe passes onnxruntime's NumPy arrays straight to postprocess (was: AttributeError 'dim')."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (optional extra) is not installed")
    import torch

    from ssd_torch.nms import postprocess

    _, onnx_path, _ = exported
    priors_path, json_path = export.sidecar_paths(onnx_path)
    meta = json.loads(json_path.read_text())
    images = np.random.default_rng(0).standard_normal((1, 3, 300, 300)).astype(np.float32)
    loc, conf = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"images": images})
    priors = np.load(priors_path)
    got = postprocess(loc, conf, priors, variances=meta["variances"], **meta["postprocess"])
    want = postprocess(torch.from_numpy(loc), torch.from_numpy(conf), torch.from_numpy(priors),
                       variances=meta["variances"], **meta["postprocess"])
    assert len(got) == 1 and len(got[0].scores) > 0
    for g, w in zip(got[0], want[0]):
        assert torch.equal(g, w)


@pytest.mark.parametrize("pixels", ["uint8", "float32"])
def test_baked_preprocessing_matches_the_pytorch_pipeline(tmp_path: Path, pixels: str) -> None:
    """--bake-preprocess: the graph takes RGB pixels (0-255, NCHW, 300x300) and applies the checkpoint's
    preprocessing itself; its outputs equal PyTorch on ``Preprocess.to_tensor`` of the same pixels (a Caffe-BGR
    checkpoint, so that channel order, scale and mean all matter)."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (optional extra) is not installed")
    import torch
    from PIL import Image

    from cli_fixtures import save_checkpoint, tiny_checkpoint_dict
    from ssd_torch.data.preprocess import CAFFE_BGR
    from ssd_torch.modeling.predictor import load_predictor

    ckpt = tiny_checkpoint_dict(NAMES, seed=4)
    ckpt["model_config"] = {**ckpt["model_config"], "preprocess": CAFFE_BGR.to_dict()}
    path = save_checkpoint(ckpt, tmp_path / "caffe.pt")
    onnx_path = tmp_path / "baked.onnx"
    assert export.main([str(path), "--onnx", str(onnx_path), "--bake-preprocess", pixels]) == 0
    meta = json.loads(export.sidecar_paths(onnx_path)[1].read_text())
    assert meta["preprocess_in_graph"] and meta["input"]["dtype"] == pixels and meta["check"]["ok"]

    rgb = np.random.default_rng(1).integers(0, 256, (2, 300, 300, 3), dtype=np.uint8)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    loc, conf = session.run(None, {"images": rgb.transpose(0, 3, 1, 2).astype(pixels)})
    _p = load_predictor(path)
    model, cfg, _ = _p.model, _p.config, list(_p.categories)
    assert cfg.preprocess == CAFFE_BGR
    x = torch.stack([CAFFE_BGR.to_tensor(Image.fromarray(img)) for img in rgb])
    with torch.no_grad():
        want_loc, want_conf = model(x)
    for got, want in ((loc, want_loc.numpy()), (conf, want_conf.numpy())):
        # 0-255 Caffe input: outputs in the hundreds, so float32 noise is relative (the tool's own rule)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 + 1e-5 * np.abs(want).max())
    assert np.abs(want_conf.numpy()).max() > 10  # the scale that makes the relative part matter
    # the check can fail: the same graph judged against another input convention is a mismatch
    from ssd_torch.data.preprocess import IMAGENET

    wrong = export.check_onnx(onnx_path, model, preprocess=IMAGENET, pixels=pixels, batch=1)
    assert wrong is not None and not wrong["ok"]


def test_export_refuses_to_replace_existing_files(exported: tuple[Path, Path, int], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, _, _ = exported
    target = tmp_path / "m.onnx"
    notes = tmp_path / "m.json"  # the sidecar's name: a user's file here must survive
    notes.write_text("the user's notes")
    assert export.main([str(ckpt), "--onnx", str(target), "--no-check"]) == 2
    err = capsys.readouterr().err
    assert "m.json" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert notes.read_text() == "the user's notes" and not target.exists()
    assert export.main([str(ckpt), "--onnx", str(target), "--no-check", "--overwrite"]) == 0
    assert json.loads(notes.read_text())["onnx"] == "m.onnx"


@pytest.mark.parametrize("flags, message", [
    (["--opset", "5"], "--opset 5 is not supported: choose 7..20"),
    (["--opset", "99"], "--opset 99 is not supported: choose 7..20"),
    (["--opset", "10", "--with-postprocess"], "--opset 10 is not supported with --with-postprocess: choose 11..20"),
    (["--atol", "-1"], "--atol must be >= 0, got -1"),
    (["--rtol", "nan"], "--rtol must be >= 0, got nan"),
])
def test_bad_options_are_one_line_errors_before_any_work(exported: tuple[Path, Path, int], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str], flags: list[str],
                                                         message: str) -> None:
    """Was: --opset 5 a 336-line traceback, --opset 99 an exporter crash, --atol -1 files written then exit 1."""
    ckpt, _, _ = exported
    assert export.main([str(ckpt), "--onnx", str(tmp_path / "m.onnx"), *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_int8_flag_errors(exported: tuple[Path, Path, int], tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, _, _ = exported
    out = ["--onnx", str(tmp_path / "m.onnx")]
    cases = [(["--int8"], "--int8 needs --calibration-data"),
             (["--calibration-data", str(tmp_path)], "only used with --int8"),
             (["--int8", "--calibration-data", str(tmp_path / "none")], "does not exist"),
             (["--int8", "--calibration-data", str(tmp_path), "--calibration-images", "0"], "must be an int >= 1"),
             (["--int8", "--calibration-data", str(tmp_path / "x.json")], "--calibration-image-dir"),
             (["--int8", "--calibration-data", str(tmp_path), "--opset", "12"], "with --int8: choose 13..20")]
    for flags, message in cases:
        assert export.main([str(ckpt), *out, *flags]) == 2, flags
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, (flags, err)
    assert list(tmp_path.iterdir()) == []


def test_with_postprocess_cli_checks_both_graphs(exported: tuple[Path, Path, int], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI path of --with-postprocess: the sidecar names the detector outputs, both checks pass."""
    pytest.importorskip("onnxruntime", reason="onnxruntime (optional extra) is not installed")
    ckpt, _, _ = exported
    onnx_path = tmp_path / "det.onnx"
    assert export.main([str(ckpt), "--onnx", str(onnx_path), "--with-postprocess", "--bake-preprocess",
                        "uint8"]) == 0
    out = capsys.readouterr().out
    assert "post-processing graph vs PyTorch on the same outputs" in out and "MISMATCH" not in out
    meta = json.loads(export.sidecar_paths(onnx_path)[1].read_text())
    assert meta["postprocess_in_graph"] and meta["check"]["ok"] and meta["check_postprocess"]["ok"]
    assert meta["outputs"] == {"num_detections": ["B"], "boxes": ["B", 200, 4], "scores": ["B", 200],
                               "labels": ["B", 200]}
