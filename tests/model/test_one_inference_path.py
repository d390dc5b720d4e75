"""One model, one inference path: a run trained with non-default variances and post-processing settings writes
them into its checkpoints, and every path decodes with them: the in-training evaluation, ``Predictor``,
``Detector``, ``ssd-eval``, ``ssd-detect``, ``ssd-crosscheck`` and ``ssd-export``'s sidecar.

Defect reproduced: ``--set loss.variances=[0.1,0.25]`` trained with those variances but the in-training
evaluation, ``Detector``, ``ssd-eval``, ``ssd-detect`` and ``ssd-export`` decoded with (0.1, 0.2); nothing
wrote the variances (nor the post-processing settings) into the checkpoint.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from train_fixtures import tiny_run_args  # noqa: E402

from ssd_torch import Detector  # noqa: E402
from ssd_torch.checkpoint import read_checkpoint  # noqa: E402
from ssd_torch.cli import crosscheck, detect, train  # noqa: E402
from ssd_torch.cli import eval as eval_cli  # noqa: E402
from ssd_torch.modeling.predictor import load_predictor  # noqa: E402
from ssd_torch.nms import postprocess  # noqa: E402

VARIANCES = [0.1, 0.25]
POST = {"score_threshold": 0.05, "top_k": 50, "nms_threshold": 0.3, "max_detections": 20}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2-step demo-preset run with other variances and post-processing settings, evaluated at the end."""
    tmp = tmp_path_factory.mktemp("onepath")
    data, run_dir = tmp / "syn", tmp / "run"
    sets = [f"model.variances={json.dumps(VARIANCES)}", *(f"postprocess.{k}={v}" for k, v in POST.items())]
    args = tiny_run_args(data, run_dir, *[x for s in sets for x in ("--set", s)], steps=2)
    assert train.main(args) == 0
    return data, run_dir


def test_the_checkpoint_carries_the_variances_and_postprocess_settings(run: tuple[Path, Path]) -> None:
    ckpt = read_checkpoint(run[1] / "checkpoints" / "last.pt")
    assert ckpt["model_config"]["variances"] == VARIANCES
    assert {k: ckpt["postprocess"][k] for k in POST} == POST
    predictor = load_predictor(run[1] / "checkpoints" / "last.pt")
    assert predictor.config.variances == tuple(VARIANCES) and predictor.postprocess.top_k == POST["top_k"]


def _image(data: Path) -> Path:
    return sorted((data / "JPEGImages").glob("*.jpg"))[0]


def test_detector_decodes_with_the_run_variances(run: tuple[Path, Path]) -> None:
    from PIL import Image

    data, run_dir = run
    detector = Detector.from_checkpoint(run_dir / "checkpoints" / "last.pt", device="cpu", backend="torch")
    image = Image.open(_image(data)).convert("RGB")
    got = detector(image)
    loc, conf = detector.predictor.network(detector.predictor.prepare(image)[None])
    want = postprocess(loc, conf, detector.predictor.priors, variances=VARIANCES, **POST)[0]
    default = postprocess(loc, conf, detector.predictor.priors, variances=(0.1, 0.2), **POST)[0]
    assert len(got) == len(want.scores) <= POST["max_detections"]
    np.testing.assert_allclose(got.boxes_normalized, want.boxes.numpy(), atol=1e-7)
    assert not np.allclose(got.boxes_normalized[:5], default.boxes.numpy()[:5], atol=1e-4)  # the test can fail


def _last_eval_map(run_dir: Path) -> float:
    with open(run_dir / "eval.csv", newline="") as f:
        return float(list(csv.DictReader(f))[-1]["mAP"])


def test_ssd_eval_gives_the_in_training_evaluation(run: tuple[Path, Path], tmp_path: Path) -> None:
    data, run_dir = run
    assert eval_cli.main([str(run_dir / "checkpoints" / "last.pt"), "--data", str(data), "--device", "cpu",
                          "--backend", "torch", "--no-progress", "--out", str(tmp_path / "e")]) == 0
    result = json.loads((tmp_path / "e" / "results_voc07.json").read_text())
    assert result["settings"]["variances"] == VARIANCES and result["settings"]["postprocess"]["top_k"] == 50
    assert result["mAP"] == pytest.approx(_last_eval_map(run_dir), abs=1e-12)


def test_ssd_detect_gives_the_detector_detections(run: tuple[Path, Path], tmp_path: Path) -> None:
    data, run_dir = run
    ckpt = run_dir / "checkpoints" / "last.pt"
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(_image(data).read_bytes())
    assert detect.main([str(ckpt), str(src), "--out", str(tmp_path / "out"), "--device", "cpu",
                        "--backend", "torch", "--score-threshold", "0.05"]) == 0
    doc = json.loads((tmp_path / "out" / "detections.json").read_text())
    listed = doc["images"][0]["detections"]
    want = Detector.from_checkpoint(ckpt, device="cpu", backend="torch")(src / "a.jpg").to_dict()["detections"]
    assert [d["box"] for d in listed] == [d["box"] for d in want] and len(listed) <= POST["max_detections"]


def test_crosscheck_compares_with_the_checkpoint_settings(run: tuple[Path, Path],
                                                          capsys: pytest.CaptureFixture) -> None:
    data, run_dir = run
    code = crosscheck.main(["--checkpoint", str(run_dir / "checkpoints" / "last.pt"), "--data", str(data),
                            "--split", "test", "--batches", "1", "--batch-size", "4", "--paths", "torch-cpu"])
    assert code == 0, capsys.readouterr().out


def test_the_export_sidecar_carries_the_settings(run: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from ssd_torch.cli import export

    _, run_dir = run
    assert export.main([str(run_dir / "checkpoints" / "last.pt"), "--onnx", str(tmp_path / "m.onnx"),
                        "--no-check"]) == 0
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["variances"] == VARIANCES and {k: meta["postprocess"][k] for k in POST} == POST


def test_an_old_checkpoint_without_the_entries_reads_as_the_contract_defaults(run: tuple[Path, Path],
                                                                              tmp_path: Path) -> None:
    ckpt = read_checkpoint(run[1] / "checkpoints" / "last.pt")
    del ckpt["model_config"]["variances"], ckpt["postprocess"]
    torch.save(ckpt, tmp_path / "old.pt")
    predictor = load_predictor(tmp_path / "old.pt")
    assert predictor.config.variances == (0.1, 0.2) and predictor.postprocess.top_k == 400
