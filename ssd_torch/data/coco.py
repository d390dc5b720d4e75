"""COCO-format reader: an instances JSON (COCO 2017 or a labelling tool's export) over a folder of images.

``CocoDataset(images_dir, annotation_file)`` has the item contract of ``VOCDataset``
(:class:`ssd_torch.data.voc.DetectionDataset`): ``ds[i] -> (image, {"boxes", "labels"})``, ``annotation(i)``,
``class_names``, ``image_ids``, ``image_path(i)``, ``load_image(i)``, ``skipped``. On top, ``coco_record(i)``
(the image and its annotations as the file gives them) and ``category_ids`` (label -> the file's category id)
let ``ssd_torch.evaluation.coco_eval`` hand pycocotools the file's own ids, boxes and areas.

**Classes.** Category ids (often non-contiguous: COCO's 80 classes use ids 1..90) become labels ``1..C-1`` in
id order, with the file's names as ``class_names``. Given ``class_names``, each category is matched by name
instead (label = position in ``class_names`` + 1); a category used by an annotation whose name is not in the
list is a :class:`DatasetError` naming it. A class of the list that the file lacks has no ground truth. Given
``category_ids`` too (a model that carries COCO ids, e.g. torchvision's 91 outputs with "N/A" placeholders:
docs/CONTRACT.md "Classes of a checkpoint and a COCO file"), each category is matched by id instead (label =
position of its id + 1); a matched id must have the same name in the file, and the names of outputs without an
id (None) may repeat.

**Pixels.** A COCO ``bbox`` is ``[x, y, w, h]`` in continuous pixel coordinates, 0-based (pixel column ``j``
spans ``[j, j + 1)``), i.e. already the data contract's continuous box; the training target is::

    (x / W, y / H, (x + w) / W, (y + h) / H)                                  (coco_to_normalized)

``annotation(i)`` holds the same box in the VOC pixel convention (1-based, inclusive) so that
``ssd_torch.evaluation.evaluate`` and the VOC scorers work unchanged::

    (x + 1, y + 1, x + w, y + h)                                              (coco_to_voc_pixels)
    x = xmin - 1, y = ymin - 1, w = xmax - xmin + 1, h = ymax - ymin + 1       (voc_pixels_to_coco)

``voc.pixel_to_normalized`` of that box is the target above. The two maps are inverse; in float64 the round
trip (and that equality) is exact for integer and half-integer pixels (every synthetic box) and within one ulp
of the coordinate otherwise (the ``+ 1`` rounds).
pycocotools is always given the file's own ``bbox`` and ``area`` (``coco_record``), never a round trip.

**Crowd and empty images.** ``iscrowd=1`` regions stay out of the training target (``keep_crowd=True`` puts
them in) and are ignore regions in evaluation: ``difficult=True`` in ``annotation(i)`` (the VOC rule ignores a
detection on them and ``npos`` leaves them out), ``iscrowd`` in ``coco_record(i)`` for pycocotools. Images
without annotations are kept, with an empty target (negatives: docs/CONTRACT.md "Loss", ``min_negatives``).

**Bad data** (:class:`DatasetError`, message ``"<file>: <problem naming the image / annotation id>"``):

- always raised, even with ``skip_bad`` (the file, not an item, is wrong): the annotation file is missing, not
  JSON or not a COCO instances object (``images``, ``annotations``, ``categories`` lists; a record without a
  required key or with a value of the wrong type, named by its position and id), duplicate category ids or
  names, a used category whose name is not in ``class_names``;
- per image (``skip_bad``: the image and all its annotations are skipped, listed in ``skipped`` as
  ``(path, reason)`` and logged): an image id listed twice (every entry with it), an invalid width/height, an
  annotation with a duplicated id, an unknown category id, a non-finite box, a box with zero or negative
  width or height, or one outside the image by more than :data:`~ssd_torch.data.voc.BOX_TOLERANCE_PX` pixels
  (the whole image goes: an unlabelled object would train as background); a missing image file or one failing
  the cheap JPEG/PNG check (``verify_images=True`` decodes every image up front);
- an annotation whose ``image_id`` is not in ``images`` (``skip_bad``: that annotation is skipped);
- at read time (``ds[i]``): an image that fails to decode or whose size disagrees with the file.

The file is parsed once per process (cached by path, mtime and size) into flat arrays; load time for a
5,000-image file: ``benchmarks/results/coco_cpu.json``.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

import numpy as np
import torch
from PIL import Image

from ssd_torch.errors import DatasetError

from .images import check_image_file
from .voc import BOX_TOLERANCE_PX, Annotation, DetectionDataset, load_sized_image, target_tensors

__all__ = [
    "coco_to_normalized", "coco_to_voc_pixels", "voc_pixels_to_coco", "CocoCategory", "CocoFile",
    "CocoRecord", "read_coco_file", "clear_file_cache", "coco_file_categories", "is_coco_data", "image_file",
    "CocoDataset",
]

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]
_SHAPE_HINT = "expected a JSON object with 'images', 'annotations' and 'categories' lists (COCO instances format)"


# ---- pixel conventions ------------------------------------------------------------------------------------
def coco_to_normalized(xywh: np.ndarray, width: float, height: float) -> np.ndarray:
    """COCO ``[x, y, w, h]`` pixels ``[G, 4]`` -> xyxy normalised ``[G, 4]`` float64 (not clamped)."""
    b = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    xyxy = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    return xyxy / np.array([width, height, width, height], dtype=np.float64)


def coco_to_voc_pixels(xywh: np.ndarray) -> np.ndarray:
    """COCO ``[x, y, w, h]`` (0-based continuous) ``[G, 4]`` -> VOC pixels (1-based inclusive xyxy) ``[G, 4]``."""
    b = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2] + 1.0, b[:, :2] + b[:, 2:]], axis=1)


def voc_pixels_to_coco(boxes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`coco_to_voc_pixels`: VOC pixel xyxy ``[D, 4]`` -> COCO ``[x, y, w, h]`` ``[D, 4]``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2] - 1.0, b[:, 2:] - b[:, :2] + 1.0], axis=1)


# ---- the file ---------------------------------------------------------------------------------------------
class CocoCategory(NamedTuple):
    id: int
    name: str


class _Images(NamedTuple):
    ids: np.ndarray  # int64[N]
    file_names: tuple[str, ...]
    widths: np.ndarray  # float64[N] as in the file (validated per image)
    heights: np.ndarray


class _Annotations(NamedTuple):
    ids: np.ndarray  # int64[M]
    image_ids: np.ndarray  # int64[M]
    category_ids: np.ndarray  # int64[M]
    bboxes: np.ndarray  # float64[M, 4] COCO xywh pixels
    areas: np.ndarray  # float64[M] (the file's area, else w * h)
    iscrowd: np.ndarray  # bool[M]


class CocoFile(NamedTuple):
    """A parsed instances file: flat read-only arrays in file order; ``categories`` in id order."""

    path: Path
    images: _Images
    annotations: _Annotations
    categories: tuple[CocoCategory, ...]


def _load_json(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise DatasetError(path, "annotation file is missing") from None
    except OSError as err:
        raise DatasetError(path, f"cannot read annotation file: {err.strerror or err}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise DatasetError(path, f"not valid JSON ({err}); {_SHAPE_HINT}") from None
    except RecursionError:
        raise DatasetError(path, f"not a COCO file: its JSON is nested too deeply to read; {_SHAPE_HINT}") from None
    if not isinstance(data, dict):
        raise DatasetError(path, f"the JSON is a {type(data).__name__}; {_SHAPE_HINT}")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise DatasetError(path, f"not a COCO instances file: no {' / '.join(map(repr, missing))} list; {_SHAPE_HINT}")
    return data


def _record_name(kind: str, k: int, record: Any) -> str:
    rid = record.get("id") if isinstance(record, dict) else None
    return f"{kind} #{k}" + (f" (id {rid!r})" if rid is not None else "")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# field -> (required, validity test, what it must be); one definition for the fast path and the error search
_IMAGE_FIELDS = {"id": (True, _is_int, "an integer"), "file_name": (True, lambda v: isinstance(v, str), "a string"),
                 "width": (True, _is_number, "a number"), "height": (True, _is_number, "a number")}
_ANNOTATION_FIELDS = {
    "id": (True, _is_int, "an integer"), "image_id": (True, _is_int, "an integer"),
    "category_id": (True, _is_int, "an integer"),
    "bbox": (True, lambda v: isinstance(v, list) and len(v) == 4 and all(map(_is_number, v)), "[x, y, w, h] numbers"),
    "iscrowd": (False, lambda v: v in (0, 1) and not isinstance(v, float), "0 or 1"),
    "area": (False, lambda v: _is_number(v) and np.isfinite(v) and v >= 0, "a number >= 0"),
}
_CATEGORY_FIELDS = {"id": (True, _is_int, "an integer"), "name": (True, lambda v: isinstance(v, str), "a string")}


def _find_bad_record(records: list, fields: dict, kind: str, path: Path) -> None:
    """Raise a :class:`DatasetError` naming the first record that breaks ``fields`` (the slow, exact search)."""
    for k, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DatasetError(path, f"{kind} #{k} is a {type(rec).__name__}, not an object; {_SHAPE_HINT}")
        for name, (required, valid, what) in fields.items():
            if name not in rec:
                if required:
                    raise DatasetError(path, f"{_record_name(kind, k, rec)} has no {name!r}; {_SHAPE_HINT}")
            elif not valid(rec[name]):
                raise DatasetError(path, f"{_record_name(kind, k, rec)}: {name!r} must be {what}, got {rec[name]!r}")


def _column(records: list, name: str, default: Any = None) -> list:
    return [rec[name] for rec in records] if default is None else [rec.get(name, default) for rec in records]


def _int_array(values: list, allow_bool: bool = False) -> np.ndarray:
    arr = np.array(values)
    # bool is an int to Python and NumPy: ``"id": true`` would become id 1 (or, alone, a bool array)
    if len(values) and not allow_bool and (arr.dtype.kind not in "iu" or any(type(v) is bool for v in values)):
        raise TypeError("not integers")
    if len(values) and arr.dtype.kind not in "iub":
        raise TypeError("not integers")
    return arr.astype(np.int64).reshape(-1)


def _parse_or_locate(parse: Callable[[list], NamedTuple], records: list, fields: dict, kind: str,
                     path: Path) -> NamedTuple:
    """``parse(records)`` (vectorised, fast); if it fails, the exact per-record search names the culprit."""
    try:
        return parse(records)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        _find_bad_record(records, fields, kind, path)
        raise DatasetError(path, f"cannot read the {kind} records ({err}); {_SHAPE_HINT}") from None


def _images_columns(records: list) -> _Images:
    names = _column(records, "file_name")
    if not all(isinstance(n, str) for n in names):
        raise TypeError("file_name")
    sizes = np.array([_column(records, "width"), _column(records, "height")], dtype=np.float64).reshape(2, -1)
    return _Images(_int_array(_column(records, "id")), tuple(names), sizes[0], sizes[1])


def _annotations_columns(records: list) -> _Annotations:
    ids, image_ids, category_ids = (_int_array(_column(records, k)) for k in ("id", "image_id", "category_id"))
    bboxes = np.array(_column(records, "bbox"))  # no dtype: a string inside stays a string (float64 parses it)
    if records and (bboxes.shape != (len(records), 4) or bboxes.dtype.kind not in "iuf"):
        raise ValueError("bbox")
    bboxes = bboxes.astype(np.float64)
    crowd = _int_array(_column(records, "iscrowd", 0), allow_bool=True)
    areas = np.array(_column(records, "area", 0.0), dtype=np.float64).reshape(-1)
    if not np.all((crowd == 0) | (crowd == 1)) or not np.all(np.isfinite(areas) & (areas >= 0)):
        raise ValueError("iscrowd or area")
    bboxes = bboxes.reshape(-1, 4)
    has_area = np.array([("area" in rec) for rec in records], dtype=bool)
    areas = np.where(has_area, areas, bboxes[:, 2] * bboxes[:, 3])  # no 'area': the box's, as pycocotools' loadRes
    return _Annotations(ids, image_ids, category_ids, bboxes, areas, crowd.astype(bool))


def _parse_categories(records: list, path: Path) -> tuple[CocoCategory, ...]:
    _find_bad_record(records, _CATEGORY_FIELDS, "category", path)  # a few records: always the exact check
    cats = sorted((CocoCategory(int(r["id"]), r["name"]) for r in records), key=lambda c: c.id)
    for attr in ("id", "name"):
        values = [getattr(c, attr) for c in cats]
        dup = next((v for v in values if values.count(v) > 1), None)
        if dup is not None:
            ids = [c.id for c in cats if getattr(c, attr) == dup]
            raise DatasetError(path, f"category {attr} {dup!r} appears {len(ids)} times (ids {ids}); category ids "
                                     f"and names must be unique")
    return tuple(cats)


def _freeze(arrays: NamedTuple) -> NamedTuple:
    for arr in arrays:
        if isinstance(arr, np.ndarray):
            arr.flags.writeable = False  # cached and shared: no caller can corrupt the cache
    return arrays


# Parsed files keyed by (path, mtime_ns, size): train and eval datasets over one file share one parse.
_FILE_CACHE: dict[tuple[str, int, int], CocoFile] = {}
_FILE_CACHE_SIZE = 4


def read_coco_file(annotation_file: PathLike) -> CocoFile:
    """Parse an instances JSON into flat arrays (cached per process). Raises :class:`DatasetError` naming the
    file for every file-level problem (see the module docstring); per-image problems are left to the dataset."""
    path = Path(annotation_file)
    try:
        st = path.stat()
    except OSError:
        raise DatasetError(path, "annotation file is missing") from None
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _FILE_CACHE:
        data = _load_json(path)
        images = _parse_or_locate(_images_columns, data["images"], _IMAGE_FIELDS, "image", path)
        annotations = _parse_or_locate(_annotations_columns, data["annotations"], _ANNOTATION_FIELDS, "annotation",
                                       path)
        parsed = CocoFile(path, _freeze(images), _freeze(annotations), _parse_categories(data["categories"], path))
        while len(_FILE_CACHE) >= _FILE_CACHE_SIZE:
            _FILE_CACHE.pop(next(iter(_FILE_CACHE)))
        _FILE_CACHE[key] = parsed
    return _FILE_CACHE[key]._replace(path=path)


def clear_file_cache() -> None:
    """Forget every parsed file (frees the arrays of a large file; benchmarks time a cold parse with it)."""
    _FILE_CACHE.clear()


def coco_file_categories(annotation_file: PathLike) -> tuple[str, ...]:
    """The file's category names in id order: the ``class_names`` a :class:`CocoDataset` of it has by default."""
    return tuple(c.name for c in read_coco_file(annotation_file).categories)


def is_coco_data(paths: Sequence[PathLike]) -> bool:
    """``paths`` (a tool's data argument) name one COCO instances file (a ``.json``) rather than VOC year
    folders: the one rule of ``ssd-eval --data``, ``ssd-crosscheck --data`` and ``ssd-train --data-root``."""
    return len(paths) == 1 and Path(paths[0]).suffix.lower() == ".json"


# ---- classes ----------------------------------------------------------------------------------------------
def _label_map_by_id(f: CocoFile, names: tuple[str, ...],
                     category_ids: Sequence[Optional[int]]) -> tuple[tuple[str, ...], dict[int, int]]:
    """``(names, {category id: label})`` matched by id (``category_ids[label - 1]``; None: no category)."""
    if len(category_ids) != len(names):
        raise ValueError(f"{len(category_ids)} category_ids for {len(names)} class names")
    label_of = {cid: k + 1 for k, cid in enumerate(category_ids) if cid is not None}
    used = set(np.unique(f.annotations.category_ids).tolist())
    for cat in f.categories:
        if cat.id in label_of and names[label_of[cat.id] - 1] != cat.name:
            raise DatasetError(f.path, f"category id {cat.id} is {cat.name!r} here but the model's class with that "
                                       f"id is {names[label_of[cat.id] - 1]!r}: not the categories it was trained on")
        if cat.id not in label_of and cat.id in used:
            raise DatasetError(f.path, f"category {cat.name!r} (id {cat.id}) is not one of the model's category ids "
                                       f"{sorted(label_of)}: use the file's classes or fix the ids")
    return names, {c.id: label_of[c.id] for c in f.categories if c.id in label_of}


def _label_map(f: CocoFile, class_names: Optional[Sequence[str]],
               category_ids: Optional[Sequence[Optional[int]]] = None) -> tuple[tuple[str, ...], dict[int, int]]:
    """``(class_names, {category id: label})``; labels are 1-based (0 = background)."""
    if category_ids is not None:
        if class_names is None:
            raise ValueError("category_ids need the class_names they belong to")
        return _label_map_by_id(f, tuple(class_names), category_ids)
    if class_names is None:
        return tuple(c.name for c in f.categories), {c.id: k + 1 for k, c in enumerate(f.categories)}
    names = tuple(class_names)
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be unique, got {list(names)}")
    index = {name: k + 1 for k, name in enumerate(names)}
    used = set(np.unique(f.annotations.category_ids).tolist())
    label_of: dict[int, int] = {}
    for cat in f.categories:
        if cat.name in index:
            label_of[cat.id] = index[cat.name]
        elif cat.id in used:
            raise DatasetError(f.path, f"category {cat.name!r} (id {cat.id}) is not one of the class names "
                                       f"{list(names)}: use the file's classes or fix the names")
        else:
            log.info("%s: category %r (id %d) has no annotation and no class: ignored", f.path, cat.name, cat.id)
    return names, label_of


def _labels_of(category_ids: np.ndarray, label_of: dict[int, int]) -> np.ndarray:
    """``int64[M]`` labels of the annotations; 0 where the category id is unknown."""
    if not label_of:
        return np.zeros(len(category_ids), dtype=np.int64)
    ids = np.array(sorted(label_of), dtype=np.int64)
    labels = np.array([label_of[i] for i in ids.tolist()], dtype=np.int64)
    pos = np.minimum(np.searchsorted(ids, category_ids), len(ids) - 1)
    return np.where(ids[pos] == category_ids, labels[pos], 0)


# ---- per-image problems -----------------------------------------------------------------------------------
def _rows_of(image_ids: np.ndarray, images: _Images) -> np.ndarray:
    """Row in ``images`` of each annotation's image (the first entry of a duplicated id); -1 if none."""
    order = np.argsort(images.ids, kind="stable")
    if len(order) == 0:
        return np.full(len(image_ids), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(images.ids[order], image_ids), len(order) - 1)
    return np.where(images.ids[order][pos] == image_ids, order[pos], -1)


def _duplicated(values: np.ndarray) -> np.ndarray:
    """``bool[M]``: the value occurs more than once."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return counts[inverse.reshape(-1)] > 1


def _annotation_problems(f: CocoFile, labels: np.ndarray, rows: np.ndarray) -> list[tuple[int, str]]:
    """``(annotation index, message)`` for each annotation of a known image that makes its image bad: the
    first failing check, in file order (vectorised checks, messages only for the few bad ones)."""
    a, tol = f.annotations, BOX_TOLERANCE_PX
    w = np.where(rows >= 0, f.images.widths[rows], np.inf)
    h = np.where(rows >= 0, f.images.heights[rows], np.inf)
    x0, y0, bw, bh = a.bboxes.T
    with np.errstate(invalid="ignore"):
        checks = [(_duplicated(a.ids), lambda k: "its id is used by another annotation too"),
                  (labels == 0, lambda k: f"unknown category id {int(a.category_ids[k])}"),
                  (~np.all(np.isfinite(a.bboxes), axis=1), lambda k: f"box {a.bboxes[k].tolist()} is not finite"),
                  ((bw <= 0) | (bh <= 0), lambda k: f"box {a.bboxes[k].tolist()} has zero or negative width or height"),
                  ((x0 < -tol) | (y0 < -tol) | (x0 + bw > w + tol) | (y0 + bh > h + tol),
                   lambda k: f"box {a.bboxes[k].tolist()} lies outside the {w[k]:g}x{h[k]:g} image")]
    first: dict[int, Callable[[int], str]] = {}
    for mask, message in reversed(checks):  # the earlier check in the list wins
        for k in np.flatnonzero(mask & (rows >= 0)).tolist():
            first[k] = message
    return [(k, f"annotation id {int(a.ids[k])} (image id {int(a.image_ids[k])}): {first[k](k)}")
            for k in sorted(first)]


def _image_reasons(f: CocoFile) -> dict[int, str]:
    """``{row: reason}`` for image entries that are bad by themselves (duplicated id, invalid size)."""
    im, out = f.images, {}
    for row in np.flatnonzero(_duplicated(im.ids)).tolist():
        out[row] = f"image id {int(im.ids[row])} is listed more than once in 'images'"
    sizes = np.stack([im.widths, im.heights])
    with np.errstate(invalid="ignore"):
        bad = ~np.all(np.isfinite(sizes) & (sizes > 0) & (sizes == np.round(sizes)), axis=0)
    for row in np.flatnonzero(bad).tolist():
        out.setdefault(row, f"image id {int(im.ids[row])} has an invalid size "
                            f"{im.widths[row]:g}x{im.heights[row]:g} (need positive integers)")
    return out


# ---- image paths ------------------------------------------------------------------------------------------
def image_file(images_dir: Path, file_name: str, allow_outside: bool = False) -> Path:
    """The path of a ``file_name`` entry: ``images_dir / file_name``. Unless ``allow_outside``, the name must
    stay inside ``images_dir`` (a relative path without ``..`` escaping it; an absolute name, or one such as
    ``../../etc/passwd``, is refused: a shared annotation file must not read the reader's other files). The
    test is on the name, not on resolved links: a symbolic link the folder's owner put there is followed.
    A NUL byte is refused too. Raises :class:`DatasetError` naming the image folder (the caller adds the file
    and image id)."""
    if "\x00" in file_name:
        raise DatasetError(images_dir, f"file_name {file_name!r} holds a NUL byte")
    if not allow_outside:
        parts = Path(os.path.normpath(file_name)).parts
        if os.path.isabs(file_name) or (parts and parts[0] == os.pardir):
            raise DatasetError(images_dir, f"file_name {file_name!r} points outside the image folder; set "
                                           f"allow_outside_images=True (config data.allow_outside_images) if "
                                           f"the file is meant to be read")
    return images_dir / file_name


# ---- the dataset ------------------------------------------------------------------------------------------
class CocoRecord(NamedTuple):
    """Image ``i`` as the file gives it, for pycocotools: the file's ``image_id``, ``file_name``, size, and the
    kept annotations in the order of ``annotation(i)``: ``annotation_ids[G]``, ``category_ids[G]`` (int64),
    ``bboxes[G, 4]`` COCO xywh pixels, ``areas[G]`` (float64), ``iscrowd[G]`` (bool)."""

    image_id: int
    file_name: str
    width: int
    height: int
    annotation_ids: np.ndarray
    category_ids: np.ndarray
    bboxes: np.ndarray
    areas: np.ndarray
    iscrowd: np.ndarray


class CocoDataset(DetectionDataset):
    """Detection dataset over a COCO instances file and its image folder (see the module docstring).

    ``images_dir``: the folder that the file's ``file_name`` entries are relative to. ``transform``: as in
    ``VOCDataset`` (``None``: ``SSDEvalTransform``). ``class_names``: match categories by name (default: the
    file's names in id order); ``category_ids`` (with ``class_names``): match by id instead. ``keep_crowd``:
    crowd regions in the training target too. ``check_images``: check every image file at construction
    (existence + cheap JPEG/PNG check; ``verify_images``: full decode).
    ``image_ids`` are the file's ids as strings (the evaluator's keys); ``coco_record(i).image_id`` the int.
    ``category_ids[label - 1]``: the file's category id of a label (``None`` if the file lacks that class).
    ``allow_outside_images``: accept ``file_name`` entries that leave ``images_dir`` (absolute, ``../``);
    refused by default (:func:`image_file`).
    """

    _log = log

    def __init__(self, images_dir: PathLike, annotation_file: PathLike, transform: Callable | None = None,
                 class_names: Optional[Sequence[str]] = None, skip_bad: bool = False, keep_crowd: bool = False,
                 check_images: bool = True, verify_images: bool = False,
                 allow_outside_images: bool = False,
                 category_ids: Optional[Sequence[Optional[int]]] = None) -> None:
        self._init_reader(transform, skip_bad)
        self.images_dir = Path(images_dir)
        self.allow_outside_images = allow_outside_images
        self.annotation_file = Path(annotation_file)
        self.keep_crowd = keep_crowd
        f = read_coco_file(self.annotation_file)
        self.class_names, label_of = _label_map(f, class_names, category_ids)
        category_of = {label: cid for cid, label in label_of.items()}
        self.category_ids: tuple[Optional[int], ...] = tuple(category_of.get(k + 1)
                                                             for k in range(len(self.class_names)))
        labels = _labels_of(f.annotations.category_ids, label_of)
        rows = _rows_of(f.annotations.image_ids, f.images)
        keep_image = self._screen(f, labels, rows, check_images, verify_images)
        self._index(f, labels, rows, keep_image)

    def _screen(self, f: CocoFile, labels: np.ndarray, rows: np.ndarray, check_images: bool,
                verify_images: bool) -> np.ndarray:
        """``bool[N]`` images to keep; every problem goes through ``_record_bad`` (raise, or skip and log)."""
        if check_images and not self.images_dir.is_dir():
            raise DatasetError(self.images_dir, "image folder does not exist (it must hold the images that the "
                                                f"file_name entries of {f.path.name} name)")
        bad = _image_reasons(f)
        for row in sorted(bad):
            self._record_bad(DatasetError(f.path, bad[row]))
        for k, message in _annotation_problems(f, labels, rows):
            if int(rows[k]) not in bad:  # one record per skipped image
                bad[int(rows[k])] = message
                self._record_bad(DatasetError(f.path, f"{message}; the image is bad"))
        for k in np.flatnonzero(rows < 0).tolist():
            self._record_bad(DatasetError(f.path, f"annotation id {int(f.annotations.ids[k])} refers to image id "
                                                  f"{int(f.annotations.image_ids[k])}, which is not in 'images'"))
        for row in range(len(f.images.ids)):
            if row not in bad and not self._file_name_ok(f, row):
                bad[row] = "file_name"
        keep = np.ones(len(f.images.ids), dtype=bool)
        keep[list(bad)] = False
        if check_images:
            for row in np.flatnonzero(keep).tolist():
                keep[row] = self._image_file_ok(f, row, verify_images)
        return keep

    def _file_name_ok(self, f: CocoFile, row: int) -> bool:
        try:
            image_file(self.images_dir, f.images.file_names[row], self.allow_outside_images)
        except DatasetError as err:
            self._record_bad(DatasetError(f.path, f"image id {int(f.images.ids[row])}: {err.reason}"))
            return False
        return True

    def _image_file_ok(self, f: CocoFile, row: int, verify_images: bool) -> bool:
        try:
            check_image_file(self.images_dir / f.images.file_names[row], verify_images)
        except DatasetError as err:
            self._record_bad(DatasetError(err.path, f"{err.reason} (image id {int(f.images.ids[row])} of "
                                                    f"{f.path.name})"))
            return False
        return True

    def _index(self, f: CocoFile, labels: np.ndarray, rows: np.ndarray, keep_image: np.ndarray) -> None:
        """Kept images in file order; their annotations grouped per image (file order inside an image)."""
        self._file = f
        self._rows = np.flatnonzero(keep_image)
        position = np.full(len(keep_image), -1, dtype=np.int64)
        position[self._rows] = np.arange(len(self._rows))
        idx = np.flatnonzero((rows >= 0) & keep_image[np.maximum(rows, 0)])
        idx = idx[np.argsort(position[rows[idx]], kind="stable")]
        counts = np.bincount(position[rows[idx]], minlength=len(self._rows))
        self._ends = np.cumsum(counts)
        self._starts = self._ends - counts
        a = f.annotations
        self._ann = _freeze(_Annotations(a.ids[idx], a.image_ids[idx], a.category_ids[idx], a.bboxes[idx],
                                         a.areas[idx], a.iscrowd[idx]))
        self._labels = _freeze((labels[idx],))[0]
        self._voc = _freeze((coco_to_voc_pixels(a.bboxes[idx]),))[0]

    # ---- access -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    @property
    def image_ids(self) -> list[str]:
        """The file's image ids of the kept images, as strings, in file order."""
        return [str(v) for v in self._file.images.ids[self._rows].tolist()]

    def _span(self, i: int) -> tuple[int, int, int]:
        """``(row in the file's images, first annotation, end annotation)`` of item ``i``."""
        return int(self._rows[i]), int(self._starts[i]), int(self._ends[i])

    def _size(self, row: int) -> tuple[int, int]:
        return int(self._file.images.widths[row]), int(self._file.images.heights[row])

    def annotation(self, i: int) -> Annotation:
        """Every box of item ``i`` (crowd included, flagged ``difficult``) in VOC pixels, for evaluation."""
        row, s, e = self._span(i)
        w, h = self._size(row)
        return Annotation(str(int(self._file.images.ids[row])), w, h, self._voc[s:e], self._labels[s:e],
                          self._ann.iscrowd[s:e])

    def coco_record(self, i: int) -> CocoRecord:
        """Item ``i`` with the file's ids, boxes and areas (see :class:`CocoRecord`)."""
        row, s, e = self._span(i)
        a = self._ann
        return CocoRecord(int(self._file.images.ids[row]), self._file.images.file_names[row], *self._size(row),
                          a.ids[s:e], a.category_ids[s:e], a.bboxes[s:e], a.areas[s:e], a.iscrowd[s:e])

    def image_path(self, i: int) -> Path:
        return self.images_dir / self._file.images.file_names[int(self._rows[i])]  # checked by _screen

    def target(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Training target of item ``i``: ``(boxes[G, 4] xyxy normalised float32, labels[G] int64)``, crowd
        regions left out unless ``keep_crowd``."""
        row, s, e = self._span(i)
        keep = slice(None) if self.keep_crowd else ~self._ann.iscrowd[s:e]
        norm = coco_to_normalized(self._ann.bboxes[s:e][keep], *self._size(row))
        return target_tensors(norm, self._labels[s:e][keep])

    def load_image(self, i: int) -> Image.Image:
        """Decode item ``i`` as RGB; :class:`DatasetError` (naming the file) if unreadable or of another size."""
        row = int(self._rows[i])
        image_id = int(self._file.images.ids[row])
        return load_sized_image(self.image_path(i), *self._size(row),
                                f"{self.annotation_file.name} (image id {image_id})")
