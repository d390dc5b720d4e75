"""The data side of a training run: COCO next to VOC in the config, the class list read from the data, the
periodic evaluation's metric, the demo's pictures, eval.csv with more than one metric set."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from ssd_torch.data.coco import CocoDataset
from ssd_torch.data.synthetic import SYNTHETIC_CLASSES, generate_coco, generate_voc
from ssd_torch.errors import ConfigError, DatasetError
from ssd_torch.training.datasets import FirstN
from ssd_torch.training.metrics_log import MetricsLogger
from ssd_torch.training.train_config import DataConfig, TrainConfig


@pytest.fixture(scope="module")
def coco_tree(tmp_path_factory):
    return generate_coco(tmp_path_factory.mktemp("coco") / "syn", 6, 3, seed=0, category_ids=[3, 5, 7, 11, 13, 17])


@pytest.fixture(scope="module")
def voc_tree(tmp_path_factory):
    return generate_voc(tmp_path_factory.mktemp("voc") / "VOC2007", 6, 3, seed=0)


def test_first_n_forwards_what_the_coco_evaluator_reads(coco_tree):
    """Defect: ``FirstN`` (data.max_val_images) hid ``coco_record`` and ``category_ids``, so a COCO evaluation of
    the first n images failed with AttributeError."""
    from ssd_torch.evaluation.coco_eval import coco_ground_truth, evaluate_coco

    base = CocoDataset(coco_tree / "images", coco_tree / "annotations" / "instances_test.json")
    first = FirstN(base, 2)
    assert first.category_ids == base.category_ids == (3, 5, 7, 11, 13, 17)
    for i in range(2):
        assert all(np.array_equal(a, b) for a, b in zip(first.coco_record(i), base.coco_record(i)))
    gt = coco_ground_truth(first)
    assert [im["id"] for im in gt["images"]] == [base.coco_record(i).image_id for i in range(2)]
    perfect = {first.annotation(i).image_id: (first.annotation(i).boxes, np.ones(len(first.annotation(i).labels)),
                                               first.annotation(i).labels) for i in range(2)}
    assert evaluate_coco(first, perfect).stats["AP50"] == pytest.approx(1.0)


def test_coco_files_default_to_the_coco_layout_of_the_root():
    data = DataConfig(dataset="coco", roots=("data/coco",), val_roots=("data/coco",), train_split="train2017",
                      val_split="val2017")
    assert data.coco_files() == (("data/coco/annotations/instances_train2017.json", "data/coco/train2017"),
                                 ("data/coco/annotations/instances_val2017.json", "data/coco/val2017"))
    given = DataConfig(dataset="coco", train_annotations="a/t.json", train_images="a/img", val_annotations="a/v.json",
                       val_images="a/img")
    assert given.coco_files() == (("a/t.json", "a/img"), ("a/v.json", "a/img"))


def test_data_section_checks_its_new_fields():
    with pytest.raises(ConfigError, match="data.class_names"):
        DataConfig(class_names=("cat", "cat"))
    with pytest.raises(ConfigError, match="data.class_names"):
        DataConfig(class_names=("background", "cat"))
    with pytest.raises(ConfigError, match="data.class_names"):
        DataConfig(class_names="sorted")
    with pytest.raises(ConfigError, match="data.train_annotations"):
        DataConfig(dataset="voc", train_annotations="x.json")
    assert DataConfig(class_names="auto").class_names == "auto"


def test_a_config_json_written_before_the_new_fields_still_loads():
    """config.json of earlier runs has no class_names / keep_empty / COCO / min_negatives / priors / init_from."""
    d = TrainConfig().to_dict()
    for section, key in (("data", "class_names"), ("data", "keep_empty"), ("data", "train_annotations"),
                         ("loss", "min_negatives"), ("model", "priors"), ("model", "init_from")):
        del d[section][key]
    assert TrainConfig.from_dict(d) == TrainConfig()


def test_class_names_come_from_the_data(coco_tree, voc_tree):
    from ssd_torch.training.datasets import resolve_class_names

    coco = DataConfig(dataset="coco", train_annotations=str(coco_tree / "annotations" / "instances_trainval.json"),
                      train_images=str(coco_tree / "images"))
    assert resolve_class_names(coco) == SYNTHETIC_CLASSES  # the file's categories in id order
    voc_auto = DataConfig(dataset="voc", roots=(str(voc_tree),), class_names="auto")
    assert resolve_class_names(voc_auto) == tuple(sorted(SYNTHETIC_CLASSES))
    assert resolve_class_names(DataConfig(dataset="synthetic")) == SYNTHETIC_CLASSES
    assert resolve_class_names(DataConfig(class_names=("a", "b"))) == ("a", "b")


def test_data_that_disagrees_with_the_class_list_is_refused(coco_tree, voc_tree):
    from ssd_torch.data.preprocess import IMAGENET
    from ssd_torch.training.datasets import build_datasets

    voc = DataConfig(dataset="voc", roots=(str(voc_tree),), val_roots=(str(voc_tree),), val_split="test")
    with pytest.raises(DatasetError, match="unknown class .*data.class_names"):
        build_datasets(voc, ("aeroplane", "bicycle"), preprocess=IMAGENET)
    coco = DataConfig(dataset="coco", train_annotations=str(coco_tree / "annotations" / "instances_trainval.json"),
                      train_images=str(coco_tree / "images"),
                      val_annotations=str(coco_tree / "annotations" / "instances_test.json"),
                      val_images=str(coco_tree / "images"))
    with pytest.raises(DatasetError, match="not one of the class names"):
        build_datasets(coco, ("circle", "square"), preprocess=IMAGENET)


def test_eval_csv_keeps_every_metric_of_a_coco_evaluation(tmp_path):
    """Defect: eval.csv had the fixed columns step, epoch, mAP, seconds: a COCO evaluation lost AP50, AP75, ...
    and the VOC mAP, and nothing said that its mAP column was COCO's AP@[.5:.95]."""
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log("eval", {"step": 5, "epoch": 0, "metric": "coco", "mAP": 0.25, "AP50": 0.5, "AP75": 0.2,
                        "voc_mAP": 0.45, "AP/circle": 0.3, "seconds": 3.0, "result": object()})
    with (tmp_path / "eval.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["metric"] == "coco" and rows[0]["AP50"] == "0.5" and rows[0]["voc_mAP"] == "0.45"
    assert "AP/circle" not in rows[0] and "result" not in rows[0]  # per-class APs and objects stay out


def test_eval_csv_of_an_earlier_version_is_widened_not_misaligned(tmp_path):
    """A resumed run appends to the eval.csv an earlier version wrote (4 columns): the file is rewritten with
    the wider header (the old rows get empty cells), so every row has as many cells as the header."""
    (tmp_path / "eval.csv").write_text("step,epoch,mAP,seconds\n5,0,0.5,1.0\n")
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log("eval", {"step": 10, "epoch": 0, "metric": "voc07", "mAP": 0.6, "seconds": 2.0})
    logger.log("eval", {"step": 15, "epoch": 1, "metric": "coco", "mAP": 0.3, "AP50": 0.55, "seconds": 2.0})
    with (tmp_path / "eval.csv").open(newline="") as f:
        table = list(csv.reader(f))
    assert all(len(row) == len(table[0]) for row in table)
    rows = [dict(zip(table[0], row)) for row in table[1:]]
    assert [(r["step"], r["mAP"], r["metric"], r["AP50"]) for r in rows] == [
        ("5", "0.5", "", ""), ("10", "0.6", "voc07", ""), ("15", "0.3", "coco", "0.55")]


def test_demo_pictures_are_the_detectors(tmp_path, voc_tree):
    """Defect: the demo drew ``run_inference``'s VOC pixel boxes (1-based: half a pixel off); its pictures are
    now ``ssd_torch.Detector``'s drawing (0-based continuous pixels, the checkpoint's preprocessing)."""
    from PIL import Image

    from ssd_torch import Detector
    from ssd_torch.data.preprocess import CAFFE_RGB
    from ssd_torch.modeling.model import model_from_config
    from ssd_torch.modeling.model_config import ssd300_slim
    from ssd_torch.checkpoint import atomic_save, build_checkpoint
    from ssd_torch.cli.demo import draw_examples

    torch.manual_seed(0)
    cfg = ssd300_slim(num_classes=len(SYNTHETIC_CLASSES) + 1)
    cfg = type(cfg)(**{**cfg.__dict__, "preprocess": CAFFE_RGB, "head_bias_prior": 0.5})
    ckpt = atomic_save(build_checkpoint(model=model_from_config(cfg), model_config=cfg.to_dict(),
                                        class_names=["background", *SYNTHETIC_CLASSES], step=0, epoch=0),
                       tmp_path / "m.pt")
    data = DataConfig(dataset="synthetic", roots=(str(voc_tree),), val_roots=(str(voc_tree),), val_split="test")
    pictures = draw_examples(ckpt, data, tmp_path / "pics", count=2, score_threshold=0.05)
    detector = Detector.from_checkpoint(ckpt, device="cpu")
    assert [p.name for p in pictures] == ["000006.png", "000007.png"]
    for path, image_id in zip(pictures, ("000006", "000007")):
        image = Image.open(voc_tree / "JPEGImages" / f"{image_id}.jpg").convert("RGB")
        result = detector(image)
        assert len(result.select(0.05)) > 0  # something is drawn
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(result.draw(image, score_threshold=0.05)))
