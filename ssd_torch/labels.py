"""Two lists of names, kept apart everywhere (docs/CONTRACT.md "Conventions": label 0 is background, object
classes are 1..C-1):

- ``categories``: indexed by label, ``categories[0] == "background"``, ``len == C`` (a checkpoint's
  ``class_names`` entry, ``Predictor.categories``, ``Detector.categories``);
- ``object_classes``: the names of labels 1..C-1 only (a dataset's ``class_names``, ``data.class_names``,
  ``VOC_CLASSES``, ``--classes``).

:func:`categories_of` and :func:`object_classes_of` are the only conversions, and :func:`check_categories` is
the one rule a categories list obeys (the checkpoint builder, the checkpoint reader, fine-tuning and the
trainer call it).
"""
from __future__ import annotations

from typing import Any, Sequence

__all__ = ["BACKGROUND", "categories_of", "object_classes_of", "check_categories"]

#: The name of label 0.
BACKGROUND = "background"


def check_categories(names: Any, what: str, count: int | None = None) -> tuple[str, ...]:
    """``names`` as a categories tuple, or a ValueError starting with ``what``: a list of str, background
    first, with ``count`` entries when given (the model's ``num_classes``). Names need not be unique: an
    imported torchvision model repeats COCO's "N/A" placeholders."""
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence) or not all(
            isinstance(n, str) for n in names):
        raise ValueError(f"{what}: class names must be a list of str, got {names!r}")
    if not names or names[0] != BACKGROUND:
        raise ValueError(f"{what}: class names must start with {BACKGROUND!r}, got {list(names[:3])}")
    if count is not None and len(names) != count:
        raise ValueError(f"{what}: {len(names)} class names but num_classes = {count} (class count mismatch)")
    return tuple(names)


def categories_of(object_classes: Sequence[str]) -> tuple[str, ...]:
    """``("background", *object_classes)``: the names of labels 0..C-1."""
    return (BACKGROUND, *object_classes)


def object_classes_of(categories: Sequence[str]) -> tuple[str, ...]:
    """The names of labels 1..C-1 (``categories`` checked by :func:`check_categories`)."""
    return check_categories(categories, "categories")[1:]
