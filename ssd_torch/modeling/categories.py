"""The classes of a checkpoint and how they meet a COCO file's categories (docs/CONTRACT.md "Classes of a
checkpoint and a COCO file").

A checkpoint names its outputs in ``class_names`` (``"background"`` first). It may also carry ``category_ids``:
one entry per output, the COCO category id that output predicts, ``None`` for the background and for an output
that stands for no category. torchvision's COCO model is the case in point: its 91 outputs are laid out by COCO
id, with ``"N/A"`` placeholders at the ten ids COCO 2017 leaves unused (``ssd_torch.modeling.importers``).

- **Matching a COCO file**: by id where the checkpoint carries ids, by name otherwise
  (:func:`coco_matching`; the reader applies it: ``ssd_torch.data.coco.CocoDataset(category_ids=...)``).
- **Unused outputs are never predicted**: in a checkpoint with ids, an object output without one is masked
  before any ranking (:func:`fold_unused_classes`, applied by ``Predictor.decode``), so it takes no candidate
  slot and no per-image slot.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ssd_torch.labels import object_classes_of
from ssd_torch.errors import CheckpointError

__all__ = ["category_ids_of", "unused_labels", "fold_unused_classes", "coco_matching"]

_SECTION = 'docs/CONTRACT.md "Classes of a checkpoint and a COCO file"'


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def category_ids_of(ckpt: dict[str, Any], path: str | Path, num_classes: int) -> tuple[int | None, ...] | None:
    """The checkpoint's optional ``category_ids`` (one per output: an int >= 1, or None for the background and
    for outputs without a category; ids unique), or None when it has none. A malformed entry is a
    :class:`CheckpointError` naming the file."""
    ids = ckpt.get("category_ids")
    if ids is None:
        return None
    problem = None
    if not isinstance(ids, (list, tuple)) or len(ids) != num_classes:
        problem = f"must be a list of {num_classes} entries (one per class), got {ids!r}"
    elif ids[0] is not None:
        problem = f"entry 0 is the background and must be null, got {ids[0]!r}"
    elif not all(c is None or _is_id(c) for c in ids):
        problem = f"entries must be ints >= 1 or null, got {[c for c in ids if not (c is None or _is_id(c))]}"
    elif len({c for c in ids if c is not None}) != sum(c is not None for c in ids):
        problem = "an id appears twice"
    if problem:
        raise CheckpointError(f"checkpoint {path}: invalid category_ids ({problem}; {_SECTION})")
    return tuple(ids)


def unused_labels(category_ids: Sequence[int | None] | None) -> tuple[int, ...]:
    """The object labels (1..C-1) that stand for no category: never predicted. None (no ids): none."""
    if category_ids is None:
        return ()
    return tuple(k for k, c in enumerate(category_ids) if k > 0 and c is None)


def fold_unused_classes(conf: torch.Tensor, labels: Sequence[int]) -> torch.Tensor:
    """``conf[..., C]`` logits with the classes ``labels`` masked: their logits become ``-inf`` and their
    probability mass goes to the background (its logit becomes the log-sum-exp of its own and theirs).

    Why not just ``-inf``: softmax would hand their mass to the other classes and raise every score. Folding it
    into the background keeps the softmax denominator, so every other class keeps its probability (up to
    rounding) and a masked class has probability 0, which never passes the strict score threshold."""
    if not labels:
        return conf
    conf = torch.as_tensor(conf)
    idx = torch.tensor(list(labels), dtype=torch.int64, device=conf.device)
    folded = conf.clone()
    folded[..., 0] = torch.logsumexp(torch.cat([conf[..., :1], conf.index_select(-1, idx)], dim=-1), dim=-1)
    folded[..., idx] = float("-inf")
    return folded


def coco_matching(categories: Sequence[str], category_ids: Sequence[int | None] | None,
                  source: str) -> tuple[tuple[str, ...], tuple[int | None, ...] | None]:
    """``(object class names, their COCO ids or None)`` for ``CocoDataset(class_names=, category_ids=)``: by id
    where the checkpoint (``source``) carries ids, else by name, which needs unique names (a
    :class:`CheckpointError` otherwise)."""
    names = object_classes_of(categories)
    if category_ids is not None:
        return names, tuple(category_ids[1:])
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CheckpointError(
            f"{source}: class names repeat ({repeated}) and the checkpoint carries no category_ids, so its classes "
            f"cannot be matched to a COCO file's categories by name ({_SECTION}); for torchvision's COCO model, "
            f"import it again with ssd-import, which writes its COCO ids")
    return names, None
