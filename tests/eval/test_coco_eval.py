"""ssd_torch.evaluation.coco_eval: detections mapped back to the file's ids, the ground truth handed to
pycocotools, hand-computed COCO metrics, the annotation-id-0 trap, and the training loop's evaluate_coco_model."""
from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pycocotools", reason="pycocotools (the 'coco' extra) is not installed")

from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from coco2017_categories import coco2017_categories_json  # noqa: E402
from ssd_torch.data.coco import CocoDataset, coco_to_voc_pixels  # noqa: E402
from ssd_torch.evaluation.coco_eval import (COCO_STAT_NAMES, coco_ground_truth, coco_results,  # noqa: E402
                                            evaluate_coco, evaluate_coco_model, run_cocoeval, write_results_json)

CATS = [{"id": 40, "name": "bird"}, {"id": 7, "name": "cat"}, {"id": 12, "name": "dog"}]


def _tree(tmp_path: Path, images: list[dict], annotations: list[dict]) -> CocoDataset:
    from PIL import Image

    folder = tmp_path / "img"
    folder.mkdir()
    for im in images:
        Image.new("RGB", (im["width"], im["height"]), (90, 90, 90)).save(folder / im["file_name"])
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATS}))
    return CocoDataset(folder, path)


def _img(iid: int) -> dict:
    return {"id": iid, "file_name": f"{iid}.jpg", "width": 64, "height": 48}


def _voc(xywh: list[float]) -> np.ndarray:
    return coco_to_voc_pixels(np.array([xywh]))


def hand_case(tmp_path: Path) -> tuple[CocoDataset, dict]:
    """Image 101: one cat [10, 10, 20, 20] (area 300: small). Image 205: no object. Image 307: a crowd cat region.
    Detections by score: 0.95 on the crowd region (ignored), 0.9 on the empty image (FP), 0.8 on the cat with
    IoU 288 / 400 = 0.72 (TP at IoU thresholds .50 .55 .60 .65 .70), and a dog nowhere (no dog gt: not scored)."""
    ds = _tree(tmp_path, [_img(101), _img(205), _img(307)],
               [{"id": 1, "image_id": 101, "category_id": 7, "bbox": [10, 10, 20, 20], "area": 300.0, "iscrowd": 0},
                {"id": 2, "image_id": 307, "category_id": 7, "bbox": [30, 5, 30, 40], "area": 1000.0, "iscrowd": 1}])
    dets = {"101": (_voc([10, 10, 20, 14.4]), np.array([0.8]), np.array([1])),
            "205": (_voc([1, 1, 10, 10]), np.array([0.9]), np.array([1])),
            "307": (np.concatenate([_voc([30, 5, 30, 40]), _voc([2, 2, 5, 5])]), np.array([0.95, 0.3]),
                    np.array([1, 2]))}
    return ds, dets


def test_results_use_the_file_ids(tmp_path: Path) -> None:
    ds, dets = hand_case(tmp_path)
    results = coco_results(ds, dets)
    assert [(r["image_id"], r["category_id"], r["score"]) for r in results] == [
        (101, 7, 0.8), (205, 7, 0.9), (307, 7, 0.95), (307, 12, 0.3)]
    np.testing.assert_allclose(results[0]["bbox"], [10, 10, 20, 14.4], rtol=0, atol=1e-12)
    assert all(isinstance(r["image_id"], int) and isinstance(r["category_id"], int) for r in results)
    with pytest.raises(ValueError, match="not in the dataset"):
        coco_results(ds, {"999": dets["101"]})


def test_ground_truth_keeps_the_file_boxes_areas_and_crowd(tmp_path: Path) -> None:
    ds, _ = hand_case(tmp_path)
    gt = coco_ground_truth(ds)
    assert [im["id"] for im in gt["images"]] == [101, 205, 307]
    assert sorted(c["id"] for c in gt["categories"]) == [7, 12, 40]
    assert [(a["id"], a["image_id"], a["bbox"], a["area"], a["iscrowd"]) for a in gt["annotations"]] == [
        (1, 101, [10.0, 10.0, 20.0, 20.0], 300.0, 0), (2, 307, [30.0, 5.0, 30.0, 40.0], 1000.0, 1)]


def test_hand_computed_metrics(tmp_path: Path) -> None:
    """Cat: FP (0.9) then TP (0.8) -> precision 0.5 at every recall level where the TP counts: AP = 0.5 at 5 of
    the 10 IoU thresholds, 0 at the others -> 0.25; AP50 0.5, AP75 0; recall 1 at 5 thresholds -> AR 0.5. The cat
    is small (its file area 300 < 32^2), so medium/large have no gt (-1). The crowd detection changes nothing."""
    ds, dets = hand_case(tmp_path)
    got = evaluate_coco(ds, dets)
    want = {"AP": 0.25, "AP50": 0.5, "AP75": 0.0, "AP_small": 0.25, "AP_medium": -1.0, "AP_large": -1.0,
            "AR1": 0.5, "AR10": 0.5, "AR100": 0.5, "AR_small": 0.5, "AR_medium": -1.0, "AR_large": -1.0}
    assert got.stats == pytest.approx(want, abs=1e-12) and list(got.stats) == list(COCO_STAT_NAMES)
    assert got.per_class["cat"] == pytest.approx(0.25, abs=1e-12)
    assert math.isnan(got.per_class["dog"]) and math.isnan(got.per_class["bird"])
    assert "Average Precision" in got.summary and got.num_detections == 4
    without_crowd_det = dict(dets, **{"307": (dets["307"][0][1:], dets["307"][1][1:], dets["307"][2][1:])})
    assert evaluate_coco(ds, without_crowd_det).stats == got.stats


def test_same_numbers_as_pycocotools_on_the_written_files(tmp_path: Path) -> None:
    """The results list written to disk, read back by pycocotools next to the original annotation file."""
    ds, dets = hand_case(tmp_path)
    path = write_results_json(tmp_path / "out" / "results.json", coco_results(ds, dets))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ds.annotation_file))
        ev = COCOeval(gt, gt.loadRes(str(path)), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert list(ev.stats) == list(evaluate_coco(ds, dets).stats.values())


def test_perfect_detections_and_no_detections(tmp_path: Path) -> None:
    ds, _ = hand_case(tmp_path)
    perfect = {ds.annotation(i).image_id: (ds.annotation(i).boxes, np.ones(len(ds.annotation(i).labels)),
                                           ds.annotation(i).labels) for i in range(len(ds))}
    stats = evaluate_coco(ds, perfect).stats
    for name in ("AP", "AP50", "AP75", "AR100"):
        assert stats[name] == pytest.approx(1.0, abs=1e-12)  # pycocotools' 101-point sum gives 1 - 2e-16
    empty = evaluate_coco(ds, {})
    assert empty.stats["AP"] == 0.0 and empty.num_detections == 0  # gt but no detection: 0, not an error


def test_annotation_ids_starting_at_zero(tmp_path: Path) -> None:
    """pycocotools reads a matched gt id 0 as "unmatched": the file's id 0 must not reach it (AP would be 0)."""
    ds = _tree(tmp_path, [_img(1)], [{"id": 0, "image_id": 1, "category_id": 7, "bbox": [4, 4, 30, 30]}])
    dets = {"1": (ds.annotation(0).boxes, np.array([0.9]), ds.annotation(0).labels)}
    assert evaluate_coco(ds, dets).stats["AP"] == pytest.approx(1.0, abs=1e-12)
    raw = {"images": [_img(1)], "categories": CATS,
           "annotations": [{"id": 0, "image_id": 1, "category_id": 7, "bbox": [4, 4, 30, 30], "area": 900.0,
                            "iscrowd": 0}]}
    assert run_cocoeval(raw, coco_results(ds, dets)).stats["AP"] == 0.0  # the trap itself, kept visible


def test_evaluate_coco_model_matches_the_voc_pipeline(tmp_path: Path) -> None:
    """The training loop's periodic evaluation on COCO data: pycocotools' stats + the VOC mAP of the same
    detections, which equals evaluate_model's on the VOC tree of the same scenes."""
    from ssd_torch.data.synthetic import SYNTHETIC_CLASSES, generate_coco, generate_voc
    from ssd_torch.data.voc import VOCDataset
    from ssd_torch.evaluation.evaluate import evaluate_model
    from ssd_torch.modeling.model import model_from_config
    from ssd_torch.modeling.model_config import ssd300_slim
    from ssd_torch.modeling.predictor import Predictor

    voc = generate_voc(tmp_path / "VOC2007", 1, 2, seed=2, image_size=(80, 72))
    coco = generate_coco(tmp_path / "coco", 1, 2, seed=2, image_size=(80, 72), category_ids=[2, 4, 6, 8, 10, 12])
    torch.manual_seed(0)
    cfg = ssd300_slim(num_classes=len(SYNTHETIC_CLASSES) + 1)
    model = model_from_config(cfg)
    predictor = Predictor(model, cfg, ["background", *SYNTHETIC_CLASSES], backend="torch")
    ds = CocoDataset(coco / "images", coco / "annotations" / "instances_test.json")
    metrics = evaluate_coco_model(predictor, ds, batch_size=2)
    assert metrics["mAP"] == metrics["AP"] and set(COCO_STAT_NAMES) <= set(metrics)
    assert {f"AP/{n}" for n in SYNTHETIC_CLASSES} <= set(metrics)
    assert metrics["result"].stats["AP"] == metrics["AP"]
    voc_metrics = evaluate_model(predictor, VOCDataset(voc, "test", class_names=SYNTHETIC_CLASSES), batch_size=2)
    assert metrics["voc_mAP"] == voc_metrics["mAP"]


# ---- a model that carries COCO ids (torchvision's 91 outputs) on COCO 2017's categories --------------------


def _ann(aid: int, image_id: int, category_id: int, bbox: list) -> dict:
    return {"id": aid, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": 0}


def _coco2017_tree(tmp_path: Path, annotations: list[dict], categories: list[dict] | None = None) -> Path:
    from PIL import Image

    (tmp_path / "img").mkdir()
    Image.new("RGB", (64, 48), (90, 90, 90)).save(tmp_path / "img" / "1.jpg")
    path = tmp_path / "instances_val2017.json"
    path.write_text(json.dumps({"images": [_img(1)], "annotations": annotations,
                                "categories": categories or coco2017_categories_json()}))
    return path


def test_torchvision_outputs_match_coco2017_by_id(tmp_path: Path) -> None:
    """80 categories at ids 1..90 with gaps, matched to torchvision's 91 outputs by id: a person (1) is label 1,
    a toothbrush (90) label 90; detections go back to the same ids; "N/A" outputs have no category."""
    from ssd_torch.modeling.importers import coco_category_ids, coco_class_names

    names = coco_class_names()
    ids = coco_category_ids(names)
    path = _coco2017_tree(tmp_path, [_ann(1, 1, 1, [4, 4, 20, 20]), _ann(2, 1, 90, [30, 10, 10, 30])])
    ds = CocoDataset(tmp_path / "img", path, class_names=names[1:], category_ids=ids[1:])
    assert ds.annotation(0).labels.tolist() == [1, 90] and ds.category_ids == ids[1:]
    boxes = coco_to_voc_pixels(np.array([[4, 4, 20, 20], [30, 10, 10, 30]], dtype=float))
    listed = coco_results(ds, {"1": (boxes, np.array([0.9, 0.8]), np.array([1, 90]))})
    assert [r["category_id"] for r in listed] == [1, 90]
    gt = coco_ground_truth(ds)
    assert [(c["id"], c["name"]) for c in gt["categories"]] == [(c, n) for c, n in zip(ids, names) if c is not None]
    assert evaluate_coco(ds, {"1": (boxes, np.array([0.9, 0.8]), np.array([1, 90]))}).stats["AP"] == pytest.approx(1.0)


def test_by_id_refuses_a_file_whose_names_or_ids_differ(tmp_path: Path) -> None:
    from ssd_torch.errors import DatasetError

    names, ids = ("person", "N/A", "car"), (1, None, 3)
    renamed = [{"id": 1, "name": "person"}, {"id": 3, "name": "automobile"}]
    path = _coco2017_tree(tmp_path, [_ann(1, 1, 1, [4, 4, 20, 20])], renamed)
    with pytest.raises(DatasetError, match="category id 3 is 'automobile' here but the model's class with that id "
                                           "is 'car'"):
        CocoDataset(tmp_path / "img", path, class_names=names, category_ids=ids)
    other = tmp_path / "other"
    other.mkdir()
    path = _coco2017_tree(other, [_ann(1, 1, 7, [4, 4, 20, 20])], [{"id": 1, "name": "person"},
                                                                   {"id": 7, "name": "train"}])
    with pytest.raises(DatasetError, match=r"category 'train' \(id 7\) is not one of the model's category ids"):
        CocoDataset(other / "img", path, class_names=names, category_ids=ids)
