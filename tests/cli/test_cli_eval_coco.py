"""ssd-eval on COCO data: the same scenes in VOC and COCO format give the same detections and the same VOC AP,
pycocotools' numbers come through the CLI (perfect detections -> 1.0, a hand-made case), the standard results
list carries the file's ids, the cache key includes the annotation file, and user errors exit 2."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pycocotools", reason="pycocotools (the 'coco' extra) is not installed")

from cli_fixtures import write_tiny_checkpoint  # noqa: E402
from ssd_torch.cli import eval as eval_cli  # noqa: E402
from ssd_torch.evaluation import checkpoint_eval, coco_eval
from ssd_torch.data.coco import CocoDataset, coco_to_voc_pixels  # noqa: E402
from ssd_torch.data.synthetic import SYNTHETIC_CLASSES, generate_coco, generate_voc  # noqa: E402

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / d) for d in ("eval", "model")]
from coco2017_categories import COCO2017_CATEGORIES, coco2017_categories_json  # noqa: E402
from peer_state_dicts import random_state_dict, torchvision_shapes  # noqa: E402

NAMES = ["background", *SYNTHETIC_CLASSES]
IDS = [3, 5, 8, 13, 21, 34]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("scenes")
    kwargs = dict(image_size=(96, 80), difficult_prob=0.5)
    return (generate_voc(base / "VOC2007", 2, 3, seed=6, **kwargs),
            generate_coco(base / "coco", 2, 3, seed=6, category_ids=IDS, **kwargs))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", NAMES, seed=0)


def _coco_args(coco: Path, checkpoint: Path, out: Path, split: str = "test") -> list[str]:
    return [str(checkpoint), "--data", str(coco / "annotations" / f"instances_{split}.json"), "--images",
            str(coco / "images"), "--device", "cpu", "--batch-size", "2", "--out", str(out), "--no-progress"]


def _results(out: Path, metric: str = "voc07") -> dict[str, Any]:
    return json.loads((out / f"results_{metric}.json").read_text())


def _replace_cached_detections(results: dict[str, Any], detections: dict) -> None:
    """Put chosen detections where ssd-eval keeps its detection cache for this checkpoint + data + settings."""
    checkpoint_eval.save_detections(Path(results["detections_cache"]), detections)


@pytest.mark.slow
def test_same_scenes_same_detections_and_voc_ap(scenes: tuple[Path, Path], checkpoint: Path, tmp_path: Path) -> None:
    voc, coco = scenes
    assert eval_cli.main([str(checkpoint), "--data", str(voc), "--device", "cpu", "--batch-size", "2", "--out",
                          str(tmp_path / "voc"), "--no-progress"]) == 0
    assert eval_cli.main(_coco_args(coco, checkpoint, tmp_path / "coco")) == 0
    a, b = _results(tmp_path / "voc"), _results(tmp_path / "coco")
    assert a["settings"] == b["settings"] and a["settings"]["backend"] == "auto"  # the new default
    da = checkpoint_eval.load_detections(Path(a["detections_cache"]))
    db = checkpoint_eval.load_detections(Path(b["detections_cache"]))
    assert [str(int(k) + 1) for k in da] == list(db)  # VOC "000002" is COCO image id 3
    for key, arrays in da.items():
        for x, y in zip(arrays, db[str(int(key) + 1)]):
            np.testing.assert_array_equal(x, y)
    assert (a["mAP"], a["ap"], a["npos"]) == (b["mAP"], b["ap"], b["npos"])
    assert b["split"] is None and set(b["coco"]) == set(coco_eval.COCO_STAT_NAMES)
    # non-trivial APs: the same noisy detections in both caches score the same in both formats
    rng = np.random.default_rng(0)
    ds = CocoDataset(coco / "images", coco / "annotations" / "instances_test.json")
    noisy = {}
    for i in range(len(ds)):
        ann = ds.annotation(i)
        boxes = ann.boxes + rng.normal(0, 3, size=ann.boxes.shape)
        noisy[ann.image_id] = (boxes, rng.random(len(boxes)), np.where(rng.random(len(boxes)) < 0.8, ann.labels, 1))
    _replace_cached_detections(b, noisy)
    _replace_cached_detections(a, {f"{int(k) - 1:06d}": v for k, v in noisy.items()})
    for out, data in ((tmp_path / "voc", [str(voc)]), (tmp_path / "coco", None)):
        args = _coco_args(coco, checkpoint, out) if data is None else [str(checkpoint), "--data", *data, "--device",
                                                                        "cpu", "--batch-size", "2", "--out", str(out),
                                                                        "--no-progress"]
        assert eval_cli.main(args + ["--metric", "area"]) == 0
    a, b = _results(tmp_path / "voc", "area"), _results(tmp_path / "coco", "area")
    assert a["from_cache"] and b["from_cache"] and 0.05 < a["mAP"] < 1.0
    assert (a["mAP"], a["ap"]) == (b["mAP"], b["ap"])


def test_perfect_detections_through_the_cli(scenes: tuple[Path, Path], checkpoint: Path, tmp_path: Path) -> None:
    """Every object detected exactly (crowd regions too, with the top scores: they are ignored) -> AP 1.0 in
    pycocotools and in the VOC scorer; the results list holds the file's ids and boxes."""
    _, coco = scenes
    out = tmp_path / "o"
    assert eval_cli.main(_coco_args(coco, checkpoint, out, "trainval")) == 0
    ds = CocoDataset(coco / "images", coco / "annotations" / "instances_trainval.json")
    assert ds.annotation(0).difficult.any() or ds.annotation(1).difficult.any()  # the case has crowd regions
    perfect = {}
    for i in range(len(ds)):
        ann = ds.annotation(i)
        perfect[ann.image_id] = (ann.boxes, np.where(ann.difficult, 1.0, 0.5), ann.labels)
    _replace_cached_detections(_results(out), perfect)
    assert eval_cli.main(_coco_args(coco, checkpoint, out, "trainval")) == 0
    res = _results(out)
    assert res["from_cache"] and res["mAP"] == 1.0
    for name in ("AP", "AP50", "AP75", "AR100"):
        assert res["coco"][name] == pytest.approx(1.0, abs=1e-12)
    listed = json.loads(Path(res["coco_results"]).read_text())
    doc = json.loads((coco / "annotations" / "instances_trainval.json").read_text())
    assert sorted((r["image_id"], r["category_id"], *r["bbox"]) for r in listed) == sorted(
        (a["image_id"], a["category_id"], *map(float, a["bbox"])) for a in doc["annotations"])


def _hand_tree(base: Path) -> tuple[Path, Path]:
    from PIL import Image

    images = base / "img"
    images.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (64, 48), (80, 90, 100)).save(images / name)
    doc = {"images": [{"id": 11, "file_name": "a.jpg", "width": 64, "height": 48},
                      {"id": 12, "file_name": "b.jpg", "width": 64, "height": 48}],
           "annotations": [{"id": 1, "image_id": 11, "category_id": 13, "bbox": [10, 10, 20, 20], "area": 400.0,
                            "iscrowd": 0}],
           "categories": [{"id": 13, "name": "ring"}, {"id": 3, "name": "circle"}]}
    path = base / "instances_hand.json"
    path.write_text(json.dumps(doc))
    return path, images


def test_hand_made_case_through_the_cli(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """One ring (file category 13) in image 11, nothing in image 12. Detections: a ring on the empty image
    (0.9, FP), then the ring with IoU 288/400 = 0.72 (0.8, TP at IoU .50-.70): COCO AP = 0.5 x 5/10 = 0.25,
    AP50 0.5, AP75 0, AR 0.5; VOC07 AP of the ring 0.5. Classes the file lacks (square, ...) stay out."""
    path, images = _hand_tree(tmp_path)
    ckpt = tmp_path / "run" / "tiny.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(checkpoint.read_bytes())
    args = [str(ckpt), "--data", str(path), "--images", str(images), "--device", "cpu", "--no-progress"]
    assert eval_cli.main(args) == 0
    out = ckpt.parent / "eval_tiny_instances_hand"  # the default --out for COCO data: eval_<checkpoint>_<json name>
    ring = NAMES.index("ring")
    box = coco_to_voc_pixels(np.array([[10, 10, 20, 14.4]]))
    _replace_cached_detections(_results(out), {
        "11": (box, np.array([0.8]), np.array([ring])),
        "12": (coco_to_voc_pixels(np.array([[1.0, 1, 9, 9]])), np.array([0.9]), np.array([ring]))})
    capsys.readouterr()
    assert eval_cli.main(args) == 0
    printed = capsys.readouterr().out
    res = _results(out)
    want = {"AP": 0.25, "AP50": 0.5, "AP75": 0.0, "AP_small": 0.25, "AP_medium": -1.0, "AP_large": -1.0,
            "AR1": 0.5, "AR10": 0.5, "AR100": 0.5, "AR_small": 0.5, "AR_medium": -1.0, "AR_large": -1.0}
    assert res["coco"] == pytest.approx(want, abs=1e-12)
    assert res["coco_ap"] == {"circle": None, "ring": pytest.approx(0.25)} and res["mAP"] == 0.5
    assert [(r["image_id"], r["category_id"]) for r in json.loads(Path(res["coco_results"]).read_text())] == [
        (11, 13), (12, 13)]
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in printed and "0.2500" in printed


def test_cache_key_includes_the_annotation_file(checkpoint: Path, tmp_path: Path) -> None:
    path, images = _hand_tree(tmp_path)
    args = [str(checkpoint), "--data", str(path), "--images", str(images), "--device", "cpu", "--no-progress",
            "--out", str(tmp_path / "o")]
    assert eval_cli.main(args) == 0
    first = _results(tmp_path / "o")
    assert eval_cli.main(args) == 0 and _results(tmp_path / "o")["from_cache"]
    doc = json.loads(path.read_text())
    doc["images"][1]["width"] = 65  # the annotation file changed: another cache entry (then a size mismatch)
    path.write_text(json.dumps(doc))
    assert eval_cli.main(args) == 2
    doc["images"][1]["width"] = 64
    doc["info"] = {"note": "same images, other bytes"}
    path.write_text(json.dumps(doc))
    assert eval_cli.main(args) == 2  # another evaluation's results are kept ...
    assert eval_cli.main(args + ["--overwrite"]) == 0  # ... unless replaced on purpose
    second = _results(tmp_path / "o")
    assert not second["from_cache"] and second["detections_cache"] != first["detections_cache"]


def _err(args: list[str], capsys: pytest.CaptureFixture) -> str:
    assert eval_cli.main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    return err


def test_user_errors_exit_2(scenes: tuple[Path, Path], checkpoint: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture) -> None:
    voc, coco = scenes
    ann = coco / "annotations" / "instances_test.json"
    common = ["--device", "cpu", "--out", str(tmp_path / "o"), "--no-progress"]
    assert "give --images DIR" in _err([str(checkpoint), "--data", str(ann)] + common, capsys)
    assert "--split is for VOC data" in _err([str(checkpoint), "--data", str(ann), "--images", str(coco / "images"),
                                              "--split", "val"] + common, capsys)
    assert "--images is for COCO data" in _err([str(checkpoint), "--data", str(voc), "--images", str(coco)] + common,
                                               capsys)
    assert "read alone" in _err([str(checkpoint), "--data", str(voc), str(ann)] + common, capsys)
    err = _err([str(checkpoint), "--data", str(tmp_path / "none.json"), "--images", str(coco / "images")] + common,
               capsys)
    assert "none.json: annotation file is missing" in err
    voc_ckpt = write_tiny_checkpoint(tmp_path / "voc.pt", ["background", "aeroplane", "bicycle"])
    err = _err([str(voc_ckpt), "--data", str(ann), "--images", str(coco / "images")] + common, capsys)
    assert "category 'circle' (id 3) is not one of the class names" in err and "checkpoint's classes" in err
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in (coco / "images").iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    (broken / "000003.jpg").unlink()
    err = _err([str(checkpoint), "--data", str(ann), "--images", str(broken)] + common, capsys)
    assert "000003.jpg: image file is missing (image id 4" in err


# ---- a torchvision model on COCO 2017's categories (issue #20 s1) ------------------------------------------


@pytest.fixture(scope="module")
def coco2017_layout(scenes: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The synthetic test scenes re-labelled into COCO 2017's exact category table (80 names at ids 1..90 with
    gaps): the six shapes become person (1), car (3), dog (18), bottle (44), chair (62), toothbrush (90)."""
    _, coco = scenes
    doc = json.loads((coco / "annotations" / "instances_test.json").read_text())
    to_coco = dict(zip(IDS, (1, 3, 18, 44, 62, 90)))
    for a in doc["annotations"]:
        a["category_id"] = to_coco[a["category_id"]]
    doc["categories"] = coco2017_categories_json()
    path = tmp_path_factory.mktemp("coco2017") / "instances_val2017.json"
    path.write_text(json.dumps(doc))
    return path, coco / "images"


@pytest.fixture(scope="module")
def torchvision_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ssd-import torchvision`` of random weights in torchvision's exact ``ssd300_vgg16`` layout (91 outputs)."""
    from ssd_torch.cli import import_checkpoint

    folder = tmp_path_factory.mktemp("tv")
    torch = pytest.importorskip("torch")
    torch.save(random_state_dict(torchvision_shapes(), seed=2), folder / "ssd300_vgg16_coco.pth")
    assert import_checkpoint.main(["torchvision", str(folder / "ssd300_vgg16_coco.pth"), "--out",
                                   str(folder / "tv.pt")]) == 0
    return folder / "tv.pt"


def _unused_outputs() -> set[int]:
    """torchvision's "N/A" outputs: the COCO ids without a category."""
    return set(range(1, 91)) - {i for i, _ in COCO2017_CATEGORIES}


@pytest.mark.slow  # torchvision's full VGG16 SSD300 on 2 images on the CPU (~15 s)
def test_torchvision_import_evaluates_on_coco2017_categories(coco2017_layout: tuple[Path, Path],
                                                             torchvision_checkpoint: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    """The README's flow: ssd-import torchvision, then ssd-eval on a file with COCO 2017's category table. Was: a
    traceback (``class_names must be unique``: the 10 "N/A" outputs). Now matched by id; no "N/A" is predicted."""
    path, images = coco2017_layout
    args = [str(torchvision_checkpoint), "--data", str(path), "--images", str(images), "--device", "cpu",
            "--batch-size", "2", "--out", str(tmp_path / "o"), "--no-progress"]
    assert eval_cli.main(args) == 0, capsys.readouterr().err
    res = _results(tmp_path / "o")
    listed = json.loads(Path(res["coco_results"]).read_text())
    file_ids = {i for i, _ in COCO2017_CATEGORIES}
    assert listed and {r["category_id"] for r in listed} <= file_ids
    labels = np.concatenate([d[2] for d in checkpoint_eval.load_detections(Path(res["detections_cache"])).values()])
    assert len(labels) and not set(labels.tolist()) & _unused_outputs()  # random weights: every class scores ~1/91
    names = dict(COCO2017_CATEGORIES)
    present = {a["category_id"] for a in json.loads(path.read_text())["annotations"] if not a["iscrowd"]}
    assert set(res["coco_ap"]) == set(names.values())
    assert {n for n, v in res["coco_ap"].items() if v is not None} == {names[i] for i in present}
    assert "N/A" not in capsys.readouterr().out  # the per-class table lists the 80 classes, not the placeholders


@pytest.mark.slow  # torchvision's full VGG16 SSD300 and the NumPy reference on one image (~20 s)
def test_torchvision_import_crosschecks_on_coco2017_categories(coco2017_layout: tuple[Path, Path],
                                                               torchvision_checkpoint: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    from ssd_torch.cli import crosscheck

    path, images = coco2017_layout
    code = crosscheck.main(["--checkpoint", str(torchvision_checkpoint), "--data", str(path), "--images",
                            str(images), "--batches", "1", "--batch-size", "1", "--paths", "torch-cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err + out
