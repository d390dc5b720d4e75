"""The training and held-out data sets of a run, built from the config's data section (``DataConfig``).

The dataset kinds (``data.dataset``: ``voc``, ``synthetic``, ``coco``), their readers, default classes and
headline metrics, and the allowed ``data.augment`` values live in one registry, ``ssd_torch.data.registry``
(import ``DATASETS`` / ``AUGMENTATIONS`` / ``CLASS_NAMES_AUTO`` from there); this module only maps a
``DataConfig`` onto it.

**Data roots** (:func:`check_data_roots`): a root is the user's data, read as it is (a VOC year folder); one
that does not exist is an error naming it. The synthetic generator runs only when asked for:
``data.dataset=synthetic`` (:func:`ensure_synthetic`: into an absent or empty folder, or to complete its own
tree of the same parameters; a folder holding anything else is refused). A tool that takes a ``--data-root``
from the user turns it into ``data.dataset=voc`` with :func:`user_data_root_overrides` (the demo's own default
folder stays ``synthetic``).

The class list of a run comes first (:func:`resolve_class_names`: the config's, else the kind's, else read from
the training annotations); every data set is then built with it, and data that names another class is
refused in one line. The periodic evaluation is the data's own metric (:func:`evaluation_fn`): COCO's
AP@[.5:.95] (pycocotools) for COCO data, the VOC07 mAP otherwise.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from ssd_torch.data.preprocess import IMAGENET, Preprocess
from ssd_torch.data import registry
from ssd_torch.data.registry import ReaderOptions, SplitSource, dataset_kind
from ssd_torch.errors import DatasetError

if TYPE_CHECKING:
    from ssd_torch.training.train_config import DataConfig

__all__ = ["resolve_class_names", "build_train_transform", "check_data_roots", "ensure_synthetic",
           "user_data_root_overrides", "split_source", "build_datasets", "build_val_set", "evaluation_fn",
           "FirstN"]


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


def split_source(data: "DataConfig", held_out: bool) -> SplitSource:
    """Where the training (``held_out=False``) or held-out split of ``data`` lives, for the registry's readers:
    VOC kinds ``roots`` / ``val_roots`` and the split name; COCO the instances file and image folder
    (``DataConfig.coco_files``)."""
    if dataset_kind(data.dataset).layout == "coco":
        annotations, images = data.coco_files()[1 if held_out else 0]
        return SplitSource(annotations=annotations, images=images)
    roots, split = (data.val_roots, data.val_split) if held_out else (data.roots, data.train_split)
    return SplitSource(roots=tuple(roots), split=split)


def resolve_class_names(data: "DataConfig") -> tuple[str, ...]:
    """The object classes of a run (labels 1..C-1; background not listed): ``data.class_names`` when it is a
    list; ``"auto"`` on VOC-layout data: the sorted names in the training split's annotations; otherwise the
    kind's default (``ssd_torch.data.registry``: VOC's 20, or the synthetic shapes for a synthetic tree; a COCO
    file's categories in id order). A synthetic tree must exist (:func:`ensure_synthetic`)."""
    from ssd_torch.data.voc import class_names_in

    if isinstance(data.class_names, tuple):
        return data.class_names
    kind, source = dataset_kind(data.dataset), split_source(data, held_out=False)
    if data.class_names == registry.CLASS_NAMES_AUTO and kind.layout == "voc":
        return class_names_in(list(source.roots), source.split, skip_bad=data.skip_bad)
    return kind.default_classes(source)


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
    raise ValueError(f"unknown augmentation {augment!r}; use one of {registry.AUGMENTATIONS}")


def check_data_roots(data: "DataConfig") -> None:
    """Every VOC-layout root of ``data`` (training and held-out) that the run reads must be an existing folder:
    a mistyped path is a :class:`DatasetError` naming it, never a folder to fill. The synthetic kind's
    ``roots[0]`` is left to :func:`ensure_synthetic` (it may be absent: it is generated)."""
    if dataset_kind(data.dataset).layout != "voc":
        return
    generated = Path(data.roots[0]) if data.dataset == "synthetic" else None
    for root in dict.fromkeys([*data.roots, *data.val_roots]):
        if generated is not None and Path(root) == generated:
            continue
        if not Path(root).is_dir():
            raise DatasetError(root, "data root does not exist (expected a VOC year folder holding Annotations/, "
                                     "JPEGImages/ and ImageSets/Main/, e.g. VOCdevkit/VOC2007); check the path")


def ensure_synthetic(data: "DataConfig") -> None:
    """Make the data of a run ready to read: :func:`check_data_roots`, and for ``data.dataset == "synthetic"``
    (the one way to ask for generated data) generate the tree at ``data.roots[0]`` unless a complete one with
    these parameters is there; a folder holding anything else is refused (``DatasetError``, nothing written).
    Under DDP only rank 0 may call it (``distributed.on_rank0``)."""
    if data.dataset == "synthetic":
        from ssd_torch.data.synthetic import ensure_voc
        root = Path(data.roots[0])
        counts = (data.synthetic_trainval, data.synthetic_test, data.synthetic_seed)
        ensure_voc(root, *counts, announce=lambda: print(f"generating the synthetic VOC tree in {root} "
                                                         f"({counts[0]} trainval + {counts[1]} test)"))
    check_data_roots(data)


def user_data_root_overrides(roots: Sequence[str]) -> list[str]:
    """The config overrides for data roots that a user names (``--data-root``): the user's own data, read as
    VOC year folders (``data.dataset=voc``, ``data.roots``, ``data.val_roots`` = the first), never a target
    for the synthetic generator, whatever the preset's kind. A synthetic tree given this way is read as the
    VOC tree it is (its classes come from its stamp: ``ssd_torch.data.registry``)."""
    roots = [str(r) for r in roots]
    return ['data.dataset="voc"', f"data.roots={json.dumps(roots)}", f"data.val_roots={json.dumps(roots[:1])}"]


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


def _open_split(data: "DataConfig", held_out: bool, class_names: Sequence[str], transform: Any) -> Any:
    """One split through the registry; the held-out split keeps its difficult boxes (the VOC rule ignores
    detections on them) and COCO crowd regions (ignore regions)."""
    options = ReaderOptions(keep_difficult=held_out or data.keep_difficult, skip_bad=data.skip_bad,
                            keep_empty=data.keep_empty,
                            allow_outside_images=data.allow_outside_images)
    try:
        return dataset_kind(data.dataset).open(split_source(data, held_out), class_names, transform, options)
    except DatasetError as e:
        raise _class_hint(e, class_names, held_out) from None


def build_val_set(data: "DataConfig", class_names: Sequence[str], *, preprocess: Preprocess = IMAGENET) -> Any:
    """The held-out set (VOC: ``data.val_roots`` / ``val_split`` with difficult boxes kept; COCO: the val file,
    crowd regions kept as ignore regions) with the eval transform; ``class_names`` without background."""
    from ssd_torch.data.transforms import SSDEvalTransform
    val = _open_split(data, True, class_names, SSDEvalTransform(preprocess=preprocess))
    return val if data.max_val_images is None else FirstN(val, data.max_val_images)


def build_datasets(data: "DataConfig", class_names: Sequence[str], *,
                   preprocess: Preprocess = IMAGENET) -> tuple[Any, Any]:
    """(train set with the training transform, held-out set with the eval transform) for ``class_names``
    (:func:`resolve_class_names`, background not listed); both transforms apply the model's ``preprocess``. A
    synthetic tree must exist (:func:`ensure_synthetic`). Data naming a class outside the list is a
    ``DatasetError`` naming the file and the class."""
    train = _open_split(data, False, class_names, build_train_transform(data.augment, preprocess))
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
