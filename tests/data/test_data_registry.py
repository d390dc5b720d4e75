"""The dataset-kind registry (issue #18 section 4) and the data-root rules of a run (issue #20 section 3)."""
from __future__ import annotations

from pathlib import Path

import pytest

from data_fixtures import GOOD, add_item, make_root
from ssd_torch.data import AUGMENTATIONS, DATASETS
from ssd_torch.data.coco import CocoDataset
from ssd_torch.data.registry import HEADLINE_COCO, HEADLINE_VOC07, KINDS, dataset_kind
from ssd_torch.data.synthetic import SYNTHETIC_CLASSES, generate_coco, generate_voc
from ssd_torch.data.voc import VOC_CLASSES, VOCDataset
from ssd_torch.errors import DatasetError
from ssd_torch.training.datasets import (build_datasets, ensure_synthetic, resolve_class_names,
                                         user_data_root_overrides)
from ssd_torch.training.train_config import DataConfig, resolve_config


def test_registry_is_the_one_list_of_kinds() -> None:
    assert DATASETS == ("voc", "synthetic", "coco") == tuple(KINDS)
    assert AUGMENTATIONS == ("ssd", "light", "none")
    assert [dataset_kind(k).headline for k in DATASETS] == [HEADLINE_VOC07, HEADLINE_VOC07, HEADLINE_COCO]
    with pytest.raises(ValueError, match="unknown dataset kind 'imagenet'"):
        dataset_kind("imagenet")
    import ssd_torch.training.datasets as datasets
    assert not hasattr(datasets, "DATASETS") and not hasattr(datasets, "AUGMENTATIONS")


def test_each_kind_opens_its_split(tmp_path: Path) -> None:
    voc = generate_voc(tmp_path / "VOC", 3, 2, seed=0)
    coco = generate_coco(tmp_path / "coco", 3, 2, seed=0)
    for kind in ("voc", "synthetic"):
        data = DataConfig(dataset=kind, roots=(str(voc),), val_roots=(str(voc),), val_split="test")
        assert resolve_class_names(data) == SYNTHETIC_CLASSES  # a stamped tree has the shapes' classes
        train, val = build_datasets(data, SYNTHETIC_CLASSES)
        assert isinstance(train, VOCDataset) and (len(train), len(val)) == (3, 2)
    data = DataConfig(dataset="coco", train_annotations=str(coco / "annotations" / "instances_trainval.json"),
                      train_images=str(coco / "images"), val_annotations=str(coco / "annotations" /
                                                                                "instances_test.json"),
                      val_images=str(coco / "images"))
    assert resolve_class_names(data) == SYNTHETIC_CLASSES
    train, val = build_datasets(data, SYNTHETIC_CLASSES)
    assert isinstance(train, CocoDataset) and (len(train), len(val)) == (3, 2)


def _demo_with_root(root: Path) -> DataConfig:
    return resolve_config("demo", None, user_data_root_overrides([str(root)])).data


def test_a_mistyped_data_root_is_an_error_not_a_folder_to_fill(tmp_path: Path, capsys) -> None:
    """Defect: ``--preset demo --data-root PATH`` with a mistyped PATH filled it with generated shapes."""
    missing = tmp_path / "VOC2O07"
    with pytest.raises(DatasetError, match="VOC2O07: data root does not exist"):
        ensure_synthetic(_demo_with_root(missing))
    assert not missing.exists() and "generating" not in capsys.readouterr().out
    with pytest.raises(DatasetError, match="does not exist"):
        ensure_synthetic(DataConfig(dataset="voc", roots=(str(missing),), val_roots=(str(missing),)))


def test_a_users_voc_folder_is_read_as_voc_not_refused_as_synthetic_output(tmp_path: Path) -> None:
    """Defect: ``--preset demo --data-root data/realvoc`` treated a real VOC folder as synthetic output and
    refused it."""
    root = make_root(tmp_path, "realvoc")
    for k in range(3):
        add_item(root, f"{k:06d}", GOOD)
        add_item(root, f"t{k:05d}", GOOD, split="test")
    before = sorted(p.name for p in root.rglob("*"))
    data = _demo_with_root(root)
    ensure_synthetic(data)
    assert resolve_class_names(data) == VOC_CLASSES
    train, val = build_datasets(data, resolve_class_names(data))
    assert len(train) == 3 and len(val) == 3 and sorted(p.name for p in root.rglob("*")) == before


def test_the_generator_runs_when_asked_for(tmp_path: Path, capsys) -> None:
    root = tmp_path / "syn"
    data = DataConfig(dataset="synthetic", roots=(str(root),), val_roots=(str(root),), synthetic_trainval=2,
                      synthetic_test=1)
    ensure_synthetic(data)
    assert "generating" in capsys.readouterr().out and (root / "synthetic.json").is_file()
    demo = resolve_config("demo", None, []).data  # the demo's own default folder: still generated
    assert demo.dataset == "synthetic" and demo.roots == ("data/synthetic",)
