"""The dataset kinds (``data.dataset``) and augmentations (``data.augment``): one entry per kind says how to open
a split, which classes it has by default and which metric is its headline. Adding a kind touches this module
(and its tests) only; ``ssd_torch.training.datasets`` and the config schema read everything from here.

- ``voc``: VOC year folders (:class:`~ssd_torch.data.voc.VOCDataset`, several roots concatenated: 07+12);
  default classes VOC's 20 (the synthetic shapes for a folder stamped by the synthetic generator); headline
  the VOC07 11-point mAP.
- ``synthetic``: the synthetic shapes as a VOC tree (``ssd_torch.data.synthetic``), opened as ``voc``; default
  classes :data:`~ssd_torch.data.synthetic.SYNTHETIC_CLASSES`; headline the VOC07 mAP.
- ``coco``: a COCO instances file and its image folder (:class:`~ssd_torch.data.coco.CocoDataset`); default
  classes the file's categories in id order; headline COCO's AP@[.5:.95] (pycocotools).

A split is opened by ``kind.open(source, class_names, transform, options)``: ``source`` is a
:class:`SplitSource` (VOC: the roots and the split name; COCO: the instances file and the image folder),
``options`` a :class:`ReaderOptions`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

__all__ = ["DATASETS", "AUGMENTATIONS", "CLASS_NAMES_AUTO", "HEADLINE_VOC07", "HEADLINE_COCO", "ReaderOptions", "SplitSource",
           "DatasetKind", "KINDS", "dataset_kind", "is_synthetic_tree"]

#: The metric names of :attr:`DatasetKind.headline` (what the periodic evaluation's ``"mAP"`` is).
HEADLINE_VOC07 = "voc07_mAP"
HEADLINE_COCO = "coco_AP"
#: ``data.augment`` values (``ssd_torch.training.datasets.build_train_transform``): the full SSD augmentation,
#: photometric + flip only, or a plain resize.
AUGMENTATIONS: tuple[str, ...] = ("ssd", "light", "none")
#: ``data.class_names`` value: read the classes from the training annotations.
CLASS_NAMES_AUTO = "auto"


@dataclass(frozen=True)
class ReaderOptions:
    """The reader keywords a run passes to every split (see the readers for each)."""

    keep_difficult: bool = False
    skip_bad: bool = False
    keep_empty: bool = False
    allow_outside_images: bool = False


@dataclass(frozen=True)
class SplitSource:
    """Where a split lives. VOC kinds: ``roots`` (year folders) and ``split`` (an ImageSets/Main name); COCO:
    ``annotations`` (the instances file) and ``images`` (the folder its ``file_name`` entries are relative
    to)."""

    roots: tuple[str, ...] = ()
    split: str = ""
    annotations: Optional[str] = None
    images: Optional[str] = None


def is_synthetic_tree(root: str | os.PathLike[str]) -> bool:
    """``root`` was written by the synthetic generator (its stamp, ``ssd_torch.data.synthetic.STAMP``, is there)."""
    from .synthetic import STAMP
    return (Path(root) / STAMP).is_file()


def _open_voc(source: SplitSource, class_names: Sequence[str], transform: Any, options: ReaderOptions) -> Any:
    from .voc import VOCDataset
    return VOCDataset(list(source.roots), source.split, class_names=tuple(class_names), transform=transform,
                      keep_difficult=options.keep_difficult, skip_bad=options.skip_bad,
                      keep_empty=options.keep_empty)


def _open_coco(source: SplitSource, class_names: Sequence[str], transform: Any, options: ReaderOptions) -> Any:
    from .coco import CocoDataset
    if source.annotations is None or source.images is None:
        raise ValueError("a COCO split needs its instances file and its image folder")
    return CocoDataset(source.images, source.annotations, transform=transform, class_names=tuple(class_names),
                       skip_bad=options.skip_bad, allow_outside_images=options.allow_outside_images)


def _voc_classes(source: SplitSource) -> tuple[str, ...]:
    from .synthetic import SYNTHETIC_CLASSES
    from .voc import VOC_CLASSES
    return SYNTHETIC_CLASSES if source.roots and is_synthetic_tree(source.roots[0]) else VOC_CLASSES


def _synthetic_classes(source: SplitSource) -> tuple[str, ...]:
    from .synthetic import SYNTHETIC_CLASSES
    return SYNTHETIC_CLASSES


def _coco_classes(source: SplitSource) -> tuple[str, ...]:
    from .coco import coco_file_categories
    if source.annotations is None:
        raise ValueError("the classes of a COCO split come from its instances file")
    return coco_file_categories(source.annotations)


@dataclass(frozen=True)
class DatasetKind:
    """One ``data.dataset`` kind: ``open(source, class_names, transform, options)`` -> a
    :class:`~ssd_torch.data.voc.DetectionDataset`; ``default_classes(source)`` -> its classes when the run names
    none (background not listed); ``headline``: the metric its periodic evaluation reports as ``"mAP"``;
    ``layout``: ``"voc"`` (year folders) or ``"coco"`` (an instances file + image folder)."""

    name: str
    open: Callable[[SplitSource, Sequence[str], Any, ReaderOptions], Any] = field(repr=False)
    default_classes: Callable[[SplitSource], tuple[str, ...]] = field(repr=False)
    headline: str
    layout: str


KINDS: dict[str, DatasetKind] = {
    "voc": DatasetKind("voc", _open_voc, _voc_classes, HEADLINE_VOC07, "voc"),
    "synthetic": DatasetKind("synthetic", _open_voc, _synthetic_classes, HEADLINE_VOC07, "voc"),
    "coco": DatasetKind("coco", _open_coco, _coco_classes, HEADLINE_COCO, "coco"),
}
#: ``data.dataset`` values: the registered kinds.
DATASETS: tuple[str, ...] = tuple(KINDS)


def dataset_kind(name: str) -> DatasetKind:
    """The registered kind ``name``; a ``ValueError`` naming the known kinds otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown dataset kind {name!r}; known: {list(KINDS)}") from None
