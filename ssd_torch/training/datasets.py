"""The training and held-out data sets of a run, built from the config's data section (``DataConfig``).

``DATASETS`` and ``AUGMENTATIONS`` are the registries that ``DataConfig`` validates against:

- ``voc``: VOC year folders (``ssd_torch.data.voc.VOCDataset``, several roots concatenated: 07+12);
- ``synthetic``: the synthetic shapes as a VOC tree, generated on first use by :func:`ensure_synthetic`
  (``ssd_torch.data.synthetic.ensure_voc``: only into an absent or empty folder, or to complete its own tree of
  the same parameters; a folder holding anything else is refused);
- ``coco``: a COCO instances file and its image folder for training, another pair for the held-out evaluation
  (``ssd_torch.data.coco.CocoDataset``; ``DataConfig.coco_files``).

The class list of a run comes first (:func:`resolve_class_names`: the config's, else the kind's, else read from
the training annotations); every data set is then built with it, and data that names another class is
refused in one line. The periodic evaluation is the data's own metric (:func:`evaluation_fn`): COCO's
AP@[.5:.95] (pycocotools) for COCO data, the VOC07 mAP otherwise.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from ssd_torch.data.preprocess import IMAGENET, Preprocess
from ssd_torch.errors import DatasetError

if TYPE_CHECKING:
    from ssd_torch.training.train_config import DataConfig

__all__ = ["DATASETS", "AUGMENTATIONS", "CLASS_NAMES_AUTO", "resolve_class_names", "build_train_transform",
           "ensure_synthetic", "build_datasets", "build_val_set", "evaluation_fn", "FirstN"]

#: ``data.dataset``: VOC year folders, the synthetic shapes tree (``ssd_torch.data.synthetic``), COCO files.
DATASETS: tuple[str, ...] = ("voc", "synthetic", "coco")
#: ``data.augment`` (see :func:`build_train_transform`).
AUGMENTATIONS: tuple[str, ...] = ("ssd", "light", "none")
#: ``data.class_names`` value: read the classes from the training annotations.
CLASS_NAMES_AUTO = "auto"


class FirstN(torch.utils.data.Dataset):
    """The first ``n`` items of a detection dataset; keeps what evaluation reads: ``annotation``,
    ``class_names``, and for COCO data ``coco_record`` and ``category_ids`` (pycocotools gets the file's ids)."""

    def __init__(self, base: Any, n: int) -> None:
        self.base, self.n = base, min(n, len(base))
        self.class_names = base.class_names
        if hasattr(base, "category_ids"):
            self.category_ids = base.category_ids

    def __len__(self) -> int:
        return self.n

    def _check(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        return i

    def __getitem__(self, i: int) -> Any:
        return self.base[self._check(i)]

    @property
    def image_ids(self) -> list[str]:
        return [self.annotation(i).image_id for i in range(self.n)]

    def annotation(self, i: int) -> Any:
        return self.base.annotation(self._check(i))

    def coco_record(self, i: int) -> Any:
        return self.base.coco_record(self._check(i))

    def image_path(self, i: int) -> Any:
        return self.base.image_path(self._check(i))

    def load_image(self, i: int) -> Any:
        return self.base.load_image(self._check(i))


def resolve_class_names(data: "DataConfig") -> tuple[str, ...]:
    """The object classes of a run (labels 1..C-1; background not listed): ``data.class_names`` when it is a
    list; for COCO data (null or ``"auto"``) the training file's categories in id order; ``"auto"`` on VOC
    data: the sorted names in the training split's annotations; null: VOC's 20 classes or the synthetic shapes.
    A synthetic tree must exist (:func:`ensure_synthetic`)."""
    from ssd_torch.data.synthetic import SYNTHETIC_CLASSES
    from ssd_torch.data.voc import VOC_CLASSES, class_names_in

    if isinstance(data.class_names, tuple):
        return data.class_names
    if data.dataset == "coco":
        from ssd_torch.data.coco import coco_class_names
        return coco_class_names(data.coco_files()[0][0])
    if data.class_names == CLASS_NAMES_AUTO:
        return class_names_in(list(data.roots), data.train_split, skip_bad=data.skip_bad)
    return SYNTHETIC_CLASSES if data.dataset == "synthetic" else VOC_CLASSES


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


def _class_hint(err: DatasetError, class_names: Sequence[str], held_out: bool) -> DatasetError:
    """A VOC file naming a class outside the run's list: the error says where the list comes from."""
    from ssd_torch.data.voc import UNKNOWN_CLASS
    if not err.reason.startswith(UNKNOWN_CLASS):
        return err
    shown = list(class_names[:6]) + (["..."] if len(class_names) > 6 else [])
    fix = ("the held-out data has a class that the training data lacks: list every class in data.class_names, "
           "or hold out a split with the training classes only" if held_out else
           "list the data's classes there, or set data.class_names=auto to read them from the training annotations")
    return DatasetError(err.path, f"{err.reason}; this run's classes are {shown} (data.class_names): {fix}")


def _voc(data: "DataConfig", held_out: bool, class_names: Sequence[str], transform: Any) -> Any:
    from ssd_torch.data.voc import VOCDataset
    roots, split = (data.val_roots, data.val_split) if held_out else (data.roots, data.train_split)
    try:  # the held-out split keeps its difficult boxes: the VOC rule ignores detections on them
        return VOCDataset(list(roots), split, class_names=tuple(class_names), transform=transform,
                          keep_difficult=held_out or data.keep_difficult, skip_bad=data.skip_bad,
                          keep_empty=data.keep_empty)
    except DatasetError as e:
        raise _class_hint(e, class_names, held_out) from None


def _coco(data: "DataConfig", files: tuple[str, str], class_names: Sequence[str], transform: Any) -> Any:
    from ssd_torch.data.coco import CocoDataset
    annotations, images = files
    return CocoDataset(images, annotations, transform=transform, class_names=tuple(class_names),
                       skip_bad=data.skip_bad)


def build_val_set(data: "DataConfig", class_names: Sequence[str], *, preprocess: Preprocess = IMAGENET) -> Any:
    """The held-out set (VOC: ``data.val_roots`` / ``val_split`` with difficult boxes kept; COCO: the val file,
    crowd regions kept as ignore regions) with the eval transform; ``class_names`` without background."""
    from ssd_torch.data.transforms import SSDEvalTransform
    transform = SSDEvalTransform(preprocess=preprocess)
    if data.dataset == "coco":
        val = _coco(data, data.coco_files()[1], class_names, transform)
    else:
        val = _voc(data, True, class_names, transform)
    return val if data.max_val_images is None else FirstN(val, data.max_val_images)


def build_datasets(data: "DataConfig", class_names: Sequence[str], *,
                   preprocess: Preprocess = IMAGENET) -> tuple[Any, Any]:
    """(train set with the training transform, held-out set with the eval transform) for ``class_names``
    (:func:`resolve_class_names`, background not listed); both transforms apply the model's ``preprocess``. A
    synthetic tree must exist (:func:`ensure_synthetic`). Data naming a class outside the list is a
    ``DatasetError`` naming the file and the class."""
    transform = build_train_transform(data.augment, preprocess)
    if data.dataset == "coco":
        train = _coco(data, data.coco_files()[0], class_names, transform)
    else:
        train = _voc(data, False, class_names, transform)
    if data.max_train_images is not None:
        train = FirstN(train, data.max_train_images)
    return train, build_val_set(data, class_names, preprocess=preprocess)


def evaluation_fn(dataset: str) -> Callable[..., dict[str, Any]]:
    """The periodic evaluation of a ``data.dataset`` kind: ``evaluate_coco_model`` (pycocotools AP@[.5:.95] as
    ``"mAP"``, the VOC07 mAP of the same detections as ``"voc_mAP"``) for COCO data, ``evaluate_model`` (VOC07
    11-point mAP) otherwise. Both take ``(model, dataset, priors, *, batch_size, device, backend, amp_dtype,
    channels_last)`` and say which metric their ``"mAP"`` is under ``"metric"``."""
    if dataset == "coco":
        from ssd_torch.evaluation.coco_eval import evaluate_coco_model
        return evaluate_coco_model
    from ssd_torch.evaluation.evaluate import evaluate_model
    return evaluate_model
