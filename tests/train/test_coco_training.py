"""ssd-train on COCO-format data, end to end: the synthetic scenes in VOC and in COCO format train bit-identical
weights; the COCO run evaluates with pycocotools during training (eval.csv says so), and ssd-eval, ssd-report and
ssd-crosscheck read the result. Plus the data switches that only matter for images without objects:
``data.keep_empty`` (VOC) and ``loss.min_negatives``."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from ssd_torch.cli import eval as eval_cli
from ssd_torch.cli import report, train
from ssd_torch.cli import synthetic as synthetic_cli
from ssd_torch.data import synthetic
from ssd_torch.data.synthetic import SYNTHETIC_CLASSES
from ssd_torch.evaluation.visualize import read_csv_rows
from ssd_torch.checkpoint import read_checkpoint
from train_fixtures import one_line

#: a seconds-long run of the demo preset (slim SSD300): 2 steps of 4 images, an evaluation after each
QUICK = ["--preset", "demo", "--batch-size", "4", "--max-steps", "2", "--workers", "0", "--no-progress",
         "--set", "schedule.warmup_iterations=0", "--set", "run.log_every=1", "--set", "run.tensorboard=false",
         "--set", "run.eval_every=1", "--set", "run.eval_batch_size=4"]


def _coco_args(root: Path, train_file: str = "instances_trainval.json", val_file: str = "instances_test.json"):
    ann = root / "annotations"
    return ["--data-root", str(ann / train_file), "--images", str(root / "images"),
            "--val-data", str(ann / val_file), "--val-images", str(root / "images")]


def test_voc_and_coco_formats_train_identical_weights_then_eval_report(tmp_path, capsys):
    """The same scenes (``python -m ssd_torch.data.synthetic --format coco``: same JPEG bytes, difficult ->
    iscrowd) give the same data order and the same training targets, so two steps give bit-identical weights;
    the periodic evaluation is each format's own metric, and the COCO run's VOC mAP equals the VOC run's."""
    voc_run, coco_run, coco_root = tmp_path / "voc_run", tmp_path / "coco_run", tmp_path / "syn_coco"
    assert synthetic_cli.main([str(coco_root), "--trainval", "8", "--test", "4", "--format", "coco"]) == 0
    assert train.main([*QUICK, "--data-root", str(tmp_path / "syn"), "--set", 'data.dataset="synthetic"',
                       "--output-dir", str(voc_run),
                       "--set", "data.synthetic_trainval=8", "--set", "data.synthetic_test=4"]) == 0
    assert train.main([*QUICK, "--data-format", "coco", *_coco_args(coco_root), "--output-dir", str(coco_run)]) == 0
    out = capsys.readouterr().out
    assert "step 1: COCO AP@[.5:.95]" in out and "step 1: VOC07 mAP@0.5 (11-point)" in out

    voc_ckpt, coco_ckpt = (read_checkpoint(r / "checkpoints" / "last.pt") for r in (voc_run, coco_run))
    assert voc_ckpt["class_names"] == coco_ckpt["class_names"] == ["background", *SYNTHETIC_CLASSES]
    assert all(torch.equal(voc_ckpt["model"][k], coco_ckpt["model"][k]) for k in voc_ckpt["model"])
    losses = [[{k: v for k, v in row.items() if k != "images_per_s"} for row in read_csv_rows(r / "metrics.csv")]
              for r in (voc_run, coco_run)]
    assert losses[0] == losses[1] and len(losses[0]) == 2

    voc_evals, coco_evals = read_csv_rows(voc_run / "eval.csv"), read_csv_rows(coco_run / "eval.csv")
    assert [r["metric"] for r in voc_evals] == ["voc07", "voc07"]
    assert [r["metric"] for r in coco_evals] == ["coco", "coco"]
    assert {"AP50", "AP75", "AP_small", "AR100", "voc_mAP"} <= set(coco_evals[0])
    for voc_row, coco_row in zip(voc_evals, coco_evals):  # crowd = difficult: the same VOC07 scoring
        assert float(coco_row["voc_mAP"]) == pytest.approx(float(voc_row["mAP"]), abs=1e-12)
    config = json.loads((coco_run / "config.json").read_text())
    assert config["data"]["dataset"] == "coco" and config["data"]["class_names"] == list(SYNTHETIC_CLASSES)
    assert coco_ckpt["metrics"]["mAP"] == pytest.approx(float(coco_evals[-1]["mAP"]))

    # ssd-eval reads the COCO run's checkpoint on the COCO file: the same detections, the same numbers
    ann = coco_root / "annotations"
    assert eval_cli.main([str(coco_run / "checkpoints" / "last.pt"), "--data", str(ann / "instances_test.json"),
                          "--images", str(coco_root / "images"), "--batch-size", "4", "--device", "cpu",
                          "--no-progress", "--out", str(tmp_path / "eval")]) == 0
    results = json.loads((tmp_path / "eval" / "results_voc07.json").read_text())
    assert results["coco"]["AP"] == pytest.approx(float(coco_evals[-1]["mAP"]), abs=1e-9)
    assert results["mAP"] == pytest.approx(float(coco_evals[-1]["voc_mAP"]), abs=1e-9)

    capsys.readouterr()
    assert report.main([str(voc_run), str(coco_run), "--plot", str(tmp_path / "loss.png")]) == 0
    rows = {line.split("|")[1].strip(): line.split("|") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and not line.startswith("| run ")}
    assert rows["coco_run"][7].strip() == "COCO AP@[.5:.95]" and rows["voc_run"][7].strip().startswith("VOC07")
    assert float(rows["coco_run"][6]) == pytest.approx(float(coco_evals[-1]["mAP"]), abs=1e-4)


def _empty_file(source: Path, target: Path) -> Path:
    """The instances file ``source`` without any annotation: every image is a negative."""
    doc = json.loads(source.read_text())
    doc["annotations"] = []
    target.write_text(json.dumps(doc))
    return target


def test_min_negatives_makes_images_without_objects_count(tmp_path, capsys):
    """``loss.min_negatives`` reaches the loss through the config: on images without any object, the paper's
    rule (0) gives no loss at all, ``min_negatives=8`` a confidence loss from 8 background priors per image."""
    root = synthetic.generate_coco(tmp_path / "syn_coco", 4, 2, seed=0)
    _empty_file(root / "annotations" / "instances_trainval.json", root / "annotations" / "empty.json")
    args = [*QUICK, *_coco_args(root, "empty.json"), "--max-steps", "1", "--set", "data.max_val_images=1"]
    conf = {}
    for k in (0, 8):
        run = tmp_path / f"run{k}"
        assert train.main([*args, "--output-dir", str(run), "--set", f"loss.min_negatives={k}"]) == 0
        (row,) = read_csv_rows(run / "metrics.csv")
        assert float(row["num_pos"]) == 0 and float(row["loc_loss"]) == 0
        conf[k] = float(row["conf_loss"])
        assert json.loads((run / "config.json").read_text())["loss"]["min_negatives"] == k
    assert conf[0] == 0 and conf[8] > 0
    capsys.readouterr()
    assert train.main([*args, "--output-dir", str(tmp_path / "bad"), "--set", "loss.min_negatives=-1"]) == 2
    assert "loss.min_negatives must be an integer >= 0, got -1" in one_line(capsys.readouterr().err)


def test_voc_images_without_objects_and_classes_read_from_the_data(tmp_path, capsys):
    """A VOC-format tree of one's own classes: ``--classes auto`` reads them from the training annotations (into
    config.json and the checkpoint); an XML without objects is bad data unless ``data.keep_empty``; held-out data
    with a class the training data lacks is refused."""
    root = synthetic.generate_voc(tmp_path / "mine", 4, 2, seed=1)
    xml = root / "Annotations" / "000001.xml"
    text = xml.read_text()
    xml.write_text(text[:text.index("\t<object>")] + "</annotation>\n")  # an image without objects
    args = [*QUICK, "--data-format", "voc", "--data-root", str(root), "--classes", "auto", "--max-steps", "1",
            "--set", "data.max_val_images=1", "--set", "loss.min_negatives=4", "--output-dir", str(tmp_path / "run")]
    keep_empty, val_split = ["--set", "data.keep_empty=true"], ["--set", "data.val_split=val"]  # val: in trainval
    assert train.main([*args, *val_split]) == 2
    assert "000001.xml: image has no objects" in one_line(capsys.readouterr().err)
    assert train.main([*args, *keep_empty]) == 2  # the test split shows a class the 4 training images lack
    err = one_line(capsys.readouterr().err)
    assert "000004.xml: unknown class name 'star'" in err and "the held-out data has a class" in err
    assert train.main([*args, *keep_empty, *val_split]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    found = sorted({"ring", "square", "triangle"})  # the classes of the 3 training images with objects
    assert config["data"]["class_names"] == found and config["data"]["keep_empty"] is True
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["class_names"] == ["background", *found]


def test_coco_data_flags_are_checked_before_anything_runs(tmp_path, capsys):
    j = str(tmp_path / "train.json")
    cases = {
        ("--data-root", j): "give --images DIR",
        ("--data-root", j, "--images", "x", "--data-format", "voc"): "is a COCO instances file, not VOC data",
        ("--data-root", j, "--data-root", str(tmp_path)): "one COCO instances file alone",
        ("--data-root", str(tmp_path), "--images", "x"): "data.train_images must be null unless data.dataset is",
        ("--classes", "a,background"): "data.class_names must be",
    }
    for flags, message in cases.items():
        assert train.main(["--preset", "demo", "--output-dir", str(tmp_path / "run"), *flags]) == 2
        assert message in one_line(capsys.readouterr().err), flags
    assert not (tmp_path / "run").exists()
    assert train.main(["--preset", "coco", "--data-root", "/data/coco", "--print-config"]) == 0
    data = json.loads(capsys.readouterr().out)["data"]
    assert (data["dataset"], data["roots"], data["val_roots"]) == ("coco", ["/data/coco"], ["/data/coco"])


def test_coco_run_without_the_files_names_them(tmp_path, capsys):
    """``--preset coco`` with nothing under data/coco: one line naming the missing instances file."""
    assert train.main(["--preset", "coco", "--data-root", str(tmp_path / "coco"), "--backbone-weights", "none",
                       "--output-dir", str(tmp_path / "run")]) == 2
    err = one_line(capsys.readouterr().err)
    assert str(tmp_path / "coco" / "annotations" / "instances_train2017.json") in err and "missing" in err
    shutil.rmtree(tmp_path / "run", ignore_errors=True)
