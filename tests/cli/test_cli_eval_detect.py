"""ssd-eval and ssd-detect end to end on a tiny generated VOC tree and a tiny (random) slim checkpoint."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli_fixtures import write_tiny_checkpoint
from reference.voc_eval import evaluate_voc as reference_evaluate_voc
from ssd_torch.cli import detect, eval as eval_cli
from ssd_torch.evaluation import checkpoint_eval, coco_eval
from ssd_torch.data.synthetic import SYNTHETIC_CLASSES, generate_voc
from ssd_torch.data.voc import VOC_CLASSES

NAMES = ["background", *SYNTHETIC_CLASSES]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_voc(tmp_path_factory.mktemp("voc") / "VOC2007", 2, 3, seed=1, image_size=(96, 80))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", NAMES, seed=0)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _reference_map(out_dir: Path, results: dict, tree: Path, use_07: bool) -> float:
    """Re-score the cached detections with the reference evaluator (ground truth from the XML files)."""
    from ssd_torch.data.voc import VOCDataset
    from ssd_torch.evaluation.evaluate import ground_truth_of

    dets = checkpoint_eval.load_detections(Path(results["detections_cache"]))
    gt = ground_truth_of(VOCDataset(tree, "test", class_names=SYNTHETIC_CLASSES))
    return reference_evaluate_voc(dets, gt, len(NAMES), use_07_metric=use_07).mAP


def test_eval_scores_then_rescores_from_the_cache(tree: Path, checkpoint: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "eval"
    base = [str(checkpoint), "--data", str(tree), "--split", "test", "--device", "cpu", "--batch-size", "3",
            "--out", str(out), "--no-progress"]
    assert eval_cli.main(base) == 0
    first = json.loads((out / "results_voc07.json").read_text())
    assert first["num_images"] == 3 and not first["from_cache"] and first["metric"] == "voc07_11point"
    assert set(first["ap"]) == set(SYNTHETIC_CLASSES)
    assert _same(first["mAP"], _reference_map(out, first, tree, True))

    import ssd_torch.evaluation.evaluate

    def must_not_run(*args, **kwargs):  # the cache must make inference unnecessary
        raise AssertionError("inference re-ran although the detections are cached")

    monkeypatch.setattr(ssd_torch.evaluation.evaluate, "run_inference", must_not_run)
    assert eval_cli.main(base + ["--metric", "area"]) == 0
    second = json.loads((out / "results_area.json").read_text())
    assert second["from_cache"] and second["detections_cache"] == first["detections_cache"]
    assert _same(second["mAP"], _reference_map(out, second, tree, False))
    # another inference setting is another evaluation: its results would replace these, so it is refused ...
    assert eval_cli.main(base[:7] + ["--batch-size", "2", "--out", str(out), "--no-progress"]) == 2
    # ... and with --overwrite it is another cache entry, so it runs the model
    with pytest.raises(AssertionError, match="inference re-ran"):
        eval_cli.main(base[:7] + ["--batch-size", "2", "--out", str(out), "--no-progress", "--overwrite"])


def test_eval_coco(tree: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(checkpoint), "--data", str(tree), "--device", "cpu", "--out", str(tmp_path), "--coco",
            "--no-progress"]
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        assert eval_cli.main(args) == 2
        assert "pycocotools" in capsys.readouterr().err
        return
    assert eval_cli.main(args) == 0
    coco = json.loads((tmp_path / "results_voc07.json").read_text())["coco"]
    assert set(coco) == set(coco_eval.COCO_STAT_NAMES) and all(-1.0 <= v <= 1.0 for v in coco.values())


def test_coco_metrics_of_perfect_detections_is_one() -> None:
    pytest.importorskip("pycocotools", reason="pycocotools (optional extra) is not installed")
    gt = {"a": (np.array([[11.0, 21.0, 60.0, 70.0], [5.0, 5.0, 9.0, 9.0]]), np.array([1, 2]), np.array([False, True]))}
    dets = {"a": (np.array([[11.0, 21.0, 60.0, 70.0]]), np.array([0.9]), np.array([1]))}
    stats = coco_eval.coco_metrics(dets, gt, 3, {"a": (100, 100)})
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)


def _run(module, args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = module.main(args)
    return code, capsys.readouterr().err


def test_eval_user_errors_exit_2_without_traceback(tree: Path, checkpoint: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--device", "cpu", "--out", str(tmp_path), "--no-progress"]
    code, err = _run(eval_cli, [str(checkpoint), "--data", str(tree), "--split", "nosplit"] + common, capsys)
    assert code == 2 and "nosplit.txt" in err and "Traceback" not in err
    voc_ckpt = write_tiny_checkpoint(tmp_path / "voc.pt", ["background", *VOC_CLASSES])
    code, err = _run(eval_cli, [str(voc_ckpt), "--data", str(tree), "--split", "test"] + common, capsys)
    assert code == 2 and "unknown class name" in err and ".xml" in err and "aeroplane" in err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    code, err = _run(eval_cli, [str(tmp_path / "junk.pt"), "--data", str(tree)] + common, capsys)
    assert code == 2 and "junk.pt" in err and "not a PyTorch checkpoint" in err
    code, err = _run(eval_cli, [str(checkpoint), "--data", str(tmp_path / "missing")] + common, capsys)
    assert code == 2 and "missing does not exist" in err


def test_eval_unreadable_image_names_the_file(tree: Path, checkpoint: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    broken = shutil.copytree(tree, tmp_path / "VOC2007")
    victim = broken / "JPEGImages" / "000003.jpg"  # first test image
    victim.write_bytes(b"\xff\xd8\xff garbage")
    code, err = _run(eval_cli, [str(checkpoint), "--data", str(broken), "--device", "cpu", "--out",
                                str(tmp_path / "o"), "--no-progress"], capsys)
    assert code == 2 and "000003.jpg" in err and "Traceback" not in err


@pytest.mark.slow
def test_detect_draws_and_lists_detections(tree: Path, checkpoint: Path, tmp_path: Path) -> None:
    import torch
    from PIL import Image

    from ssd_torch.data.transforms import SSDEvalTransform
    from ssd_torch.modeling.predictor import load_predictor
    from ssd_torch.nms import postprocess
    from ssd_torch.priors import default_boxes

    out = tmp_path / "drawn"
    assert detect.main([str(checkpoint), str(tree / "JPEGImages"), "--out", str(out), "--score-threshold", "0.5",
                        "--device", "cpu"]) == 0
    doc = json.loads((out / "detections.json").read_text())
    assert [Path(r["file"]).name for r in doc["images"]] == [f"{i:06d}.jpg" for i in range(5)]
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:06d}.jpg.png" for i in range(5)]
    # independent recomputation for the first image: same count above the threshold, same boxes in pixels
    _p = load_predictor(checkpoint)
    model, cfg, names = _p.model, _p.config, list(_p.categories)
    img = Image.open(tree / "JPEGImages" / "000000.jpg").convert("RGB")
    x = SSDEvalTransform()(img, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))[0][None]
    with torch.no_grad():
        det = postprocess(*model(x), default_boxes(cfg.prior_spec))[0]
    keep = det.scores >= 0.5
    rec = doc["images"][0]
    assert len(rec["detections"]) == int(keep.sum())
    want = det.boxes[keep].double().numpy() * np.array([96, 80, 96, 80])
    np.testing.assert_allclose([d["box"] for d in rec["detections"]], want.reshape(-1, 4), atol=0.01)
    assert all(d["score"] >= 0.5 and d["class"] == names[d["label"]] for d in rec["detections"])


def test_detect_single_file_and_user_errors(tree: Path, checkpoint: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert detect.main([str(checkpoint), str(tree / "JPEGImages" / "000001.jpg"), "--out", str(tmp_path / "one"),
                        "--device", "cpu"]) == 0
    assert (tmp_path / "one" / "000001.jpg.png").is_file()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff truncated")
    code, err = _run(detect, [str(checkpoint), str(broken), "--out", str(tmp_path / "o"), "--device", "cpu"], capsys)
    assert code == 2 and "broken.jpg" in err and "cannot read image" in err
    code, err = _run(detect, [str(checkpoint), str(tmp_path / "nothing"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "no such image or folder" in err


def test_regenerated_data_under_the_same_path_is_evaluated_anew(checkpoint: Path, tmp_path: Path) -> None:
    """Reproduces: the cache key hashed the VOC root's path, not its images or annotations, so data regenerated
    under the same path was scored with the old detections (0.0028 where a fresh evaluation gave 0.8528)."""
    root, out = tmp_path / "VOC2007", tmp_path / "eval"
    args = [str(checkpoint), "--data", str(root), "--split", "test", "--device", "cpu", "--out", str(out),
            "--no-progress"]
    generate_voc(root, 2, 3, seed=1, image_size=(96, 80))
    assert eval_cli.main(args) == 0
    first = json.loads((out / "results_voc07.json").read_text())
    shutil.rmtree(root)
    generate_voc(root, 2, 3, seed=2, image_size=(96, 80))  # other scenes, same ids, same path
    assert eval_cli.main(args + ["--overwrite"]) == 0
    second = json.loads((out / "results_voc07.json").read_text())
    assert not second["from_cache"] and second["cache_key"] != first["cache_key"]
    assert second["npos"] != first["npos"] or second["mAP"] != first["mAP"]


def test_overwrite_never_reuses_a_cache_and_replaces_every_earlier_result(tree: Path, checkpoint: Path,
                                                                         tmp_path: Path) -> None:
    """Reproduces: --overwrite read a cache it should have replaced, and left the other metric's results file
    (results_area.json) of the earlier evaluation behind."""
    out = tmp_path / "eval"
    base = [str(checkpoint), "--data", str(tree), "--split", "test", "--device", "cpu", "--out", str(out),
            "--no-progress"]
    assert eval_cli.main(base + ["--metric", "area"]) == 0
    earlier = json.loads((out / "results_area.json").read_text())
    (out / "notes.txt").write_text("a user's file")
    assert eval_cli.main(base + ["--batch-size", "2", "--overwrite"]) == 0  # another evaluation, replaced on purpose
    now = json.loads((out / "results_voc07.json").read_text())
    assert not now["from_cache"] and not (out / "results_area.json").exists()
    assert not Path(earlier["detections_cache"]).exists() and Path(now["detections_cache"]).is_file()
    assert (out / "notes.txt").read_text() == "a user's file"
    assert eval_cli.main(base + ["--batch-size", "2", "--overwrite"]) == 0  # the same evaluation: run again
    assert not json.loads((out / "results_voc07.json").read_text())["from_cache"]


def test_the_default_out_is_distinct_per_checkpoint_and_data(tree: Path, checkpoint: Path, tmp_path: Path) -> None:
    """Reproduces: the default --out was one folder per run folder, shared by every checkpoint in it."""
    other = tmp_path / "other.pt"
    shutil.copyfile(checkpoint, other)
    from ssd_torch.evaluation.checkpoint_eval import default_out_dir

    a = default_out_dir(checkpoint, [tree], "test")
    assert a != default_out_dir(other, [tree], "test") and a != default_out_dir(checkpoint, [tree], "trainval")
    assert a.parent == checkpoint.parent
