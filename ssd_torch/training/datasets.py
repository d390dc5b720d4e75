"""The training and held-out data sets of a run, built from the config's data section (``DataConfig``).

``DATASETS`` and ``AUGMENTATIONS`` are the registries that ``DataConfig`` validates against. The synthetic data
set is generated on first use by :func:`ensure_synthetic` (``ssd_torch.data.synthetic.ensure_voc``: only into an
absent or empty folder, or to complete its own tree of the same parameters; a folder holding anything else is
refused).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ssd_torch.data.preprocess import IMAGENET, Preprocess

if TYPE_CHECKING:
    from ssd_torch.training.train_config import DataConfig

__all__ = ["DATASETS", "AUGMENTATIONS", "dataset_class_names", "build_train_transform", "ensure_synthetic",
           "build_datasets", "build_val_set", "FirstN"]

#: ``data.dataset``: VOC year folders, or the synthetic shapes tree (``ssd_torch.data.synthetic``).
DATASETS: tuple[str, ...] = ("voc", "synthetic")
#: ``data.augment`` (see :func:`build_train_transform`).
AUGMENTATIONS: tuple[str, ...] = ("ssd", "light", "none")


class FirstN(torch.utils.data.Dataset):
    """The first ``n`` items of a VOC-like dataset (keeps ``annotation`` and ``class_names`` for evaluation)."""

    def __init__(self, base: Any, n: int) -> None:
        self.base, self.n = base, min(n, len(base))
        self.class_names = base.class_names

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        return self.base[i]

    def annotation(self, i: int) -> Any:
        return self.base.annotation(i)

    def image_path(self, i: int) -> Any:
        return self.base.image_path(i)

    def load_image(self, i: int) -> Any:
        return self.base.load_image(i)


def dataset_class_names(dataset: str) -> list[str]:
    """The class names of a ``data.dataset`` kind, ``"background"`` first (the model's label space)."""
    from ssd_torch.data.synthetic import SYNTHETIC_CLASSES
    from ssd_torch.data.voc import VOC_CLASSES
    return ["background", *(SYNTHETIC_CLASSES if dataset == "synthetic" else VOC_CLASSES)]


def build_train_transform(augment: str, preprocess: Preprocess, size: int = 300) -> Any:
    """``ssd``: the full SSD augmentation; ``light``: photometric + flip (no zoom-out / crop); ``none``: resize.
    ``preprocess``: the model's input convention (``ModelConfig.preprocess``)."""
    from ssd_torch.data.transforms import SSDEvalTransform, SSDTrainTransform
    if augment == "ssd":
        return SSDTrainTransform(size=size, preprocess=preprocess)
    if augment == "light":
        return SSDTrainTransform(size=size, preprocess=preprocess, p_expand=0.0, crop_options=(None,))
    if augment == "none":
        return SSDEvalTransform(size=size, preprocess=preprocess)
    raise ValueError(f"unknown augmentation {augment!r}; use one of {AUGMENTATIONS}")


def ensure_synthetic(data: "DataConfig") -> None:
    """For ``data.dataset == "synthetic"``: generate the tree at ``data.roots[0]`` unless a complete one with
    these parameters is there; a folder holding anything else is refused (``DatasetError``, nothing written).
    Under DDP only rank 0 may call it (``distributed.on_rank0``)."""
    if data.dataset != "synthetic":
        return
    from ssd_torch.data.synthetic import ensure_voc
    root = Path(data.roots[0])
    counts = (data.synthetic_trainval, data.synthetic_test, data.synthetic_seed)
    ensure_voc(root, *counts, announce=lambda: print(f"generating the synthetic VOC tree in {root} "
                                                     f"({counts[0]} trainval + {counts[1]} test)"))


def build_val_set(data: "DataConfig", *, preprocess: Preprocess = IMAGENET) -> Any:
    """The held-out split (``data.val_roots`` / ``val_split``, difficult boxes kept, the eval transform)."""
    from ssd_torch.data.transforms import SSDEvalTransform
    from ssd_torch.data.voc import VOCDataset
    val = VOCDataset(list(data.val_roots), data.val_split, class_names=dataset_class_names(data.dataset)[1:],
                     transform=SSDEvalTransform(preprocess=preprocess), keep_difficult=True, skip_bad=data.skip_bad)
    return val if data.max_val_images is None else FirstN(val, data.max_val_images)


def build_datasets(data: "DataConfig", *, preprocess: Preprocess = IMAGENET) -> tuple[Any, Any, list[str]]:
    """(train set with the training transform, held-out set with the eval transform, class names with
    ``"background"`` first); both transforms apply the model's ``preprocess``. A synthetic tree must exist
    (:func:`ensure_synthetic`)."""
    from ssd_torch.data.voc import VOCDataset
    names = dataset_class_names(data.dataset)
    train = VOCDataset(list(data.roots), data.train_split, class_names=names[1:],
                       transform=build_train_transform(data.augment, preprocess),
                       keep_difficult=data.keep_difficult, skip_bad=data.skip_bad)
    if data.max_train_images is not None:
        train = FirstN(train, data.max_train_images)
    return train, build_val_set(data, preprocess=preprocess), names
