"""PASCAL VOC reader (docs/CONTRACT.md "Conventions", "Pixel boxes"): XML annotations, ImageSets splits, 07+12 concatenation.

A *root* is one year folder (``.../VOCdevkit/VOC2007``) holding ``Annotations/``, ``ImageSets/Main/`` and
``JPEGImages/``. Boxes in an :class:`Annotation` are **pixels as in the XML** (1-based, inclusive); the training
target is **xyxy normalised** to [0, 1] by the formula of the data contract::

    ((xmin - 1) / W, (ymin - 1) / H, xmax / W, ymax / H)        (pixel_to_normalized)
    x_min_pix = x_norm * W + 1,  x_max_pix = x_norm * W         (normalized_to_pixel, its inverse)

Bad data (every case raises :class:`DatasetError`, a ``ValueError`` whose message starts with the file name):

- found while *scanning* at construction: a missing split file (always an error, even with ``skip_bad``), a listed
  id without its XML or JPEG, malformed XML, a missing/zero ``<size>``, an unknown class name, a box outside the
  image by more than :data:`BOX_TOLERANCE_PX` pixels, a box with zero or negative area (in the contract's
  continuous coordinates, i.e. ``xmax - xmin + 1 <= 0``: the devkit counts ``xmin == xmax`` as one pixel), an
  image with no ``<object>`` at all (unless ``keep_empty=True``: then it is a negative image, see below), and an
  image that fails a cheap integrity check (:func:`check_image_file`: JPEG start/end-of-image markers, PNG
  signature and ``IEND`` chunk; a file failing it, or of another format, is fully decoded to confirm, so valid
  files with odd trailers pass). ``verify_images=True`` decodes every image up front instead (thorough, a
  full decode per image; its cost is in ``benchmarks/results/coco_cpu.json``).
- found when *reading* (``ds[i]``): an image that still fails to decode or whose size disagrees with its XML.
  With ``skip_bad`` the item is recorded and the next readable item is returned in its place (inside a DataLoader
  worker the record lives in that worker's copy of ``skipped``; the warning in the log names the file).

The scan parses every XML of the split up front (ElementTree; parsed annotations are cached
per process by path + mtime + size, so a second dataset over the same files is cheap) and only peeks at each
JPEG's first and last bytes; training targets are computed when an item is read.

With ``skip_bad=True`` every bad item is skipped, logged (``logging.warning`` with the file name) and listed in
``ds.skipped`` as ``(path, reason)``.

An image whose objects are *all* ``difficult`` is kept: with ``keep_difficult=False`` its training target is
empty (``G = 0``, every prior background, no hard negatives per docs/CONTRACT.md "Loss"), and it stays in the dataset so
that the evaluator still sees it (detections on it are false positives, as in the devkit). ``keep_empty=True``
keeps images whose XML has no ``<object>`` in the same way (``G = 0``): with ``min_negatives > 0`` in the loss
(docs/CONTRACT.md "Loss") they train as negatives.

:class:`DetectionDataset` is the item contract that this reader and ``ssd_torch.data.coco.CocoDataset`` share
(``ds[i]``, ``annotation(i)``, ``target(i)``, ``load_image(i)``, ``image_path(i)``, ``image_ids``, ``skipped``).
"""
from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple, Optional, Union

import numpy as np
import torch
from PIL import Image

from ssd_torch.errors import DatasetError

from .images import check_image_file, read_image

__all__ = [
    "VOC_CLASSES", "BOX_TOLERANCE_PX", "UNKNOWN_CLASS", "DatasetError", "Annotation", "parse_annotation",
    "class_names_in",
    "pixel_to_normalized", "normalized_to_pixel", "check_image_file", "load_sized_image", "target_tensors",
    "DetectionDataset", "VOCDataset",
]

log = logging.getLogger(__name__)

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
#: A box may stick out of the image by this many pixels (annotators' off-by-one) before it is an error.
BOX_TOLERANCE_PX = 1.0
#: How the error for an object of a class outside the dataset's class names starts (callers add their hint).
UNKNOWN_CLASS = "unknown class name"

PathLike = Union[str, os.PathLike]


class Annotation(NamedTuple):
    """One image's ground truth, as in the XML.

    ``boxes``: ``float64[G, 4]`` xyxy **pixels**, 1-based inclusive; ``labels``: ``int64[G]`` in ``1..C-1``
    (index into ``class_names`` + 1, 0 is background); ``difficult``: ``bool[G]``. Difficult boxes included.
    """

    image_id: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray


def pixel_to_normalized(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """VOC pixel boxes ``[G, 4]`` (1-based, inclusive) -> xyxy normalised ``[G, 4]`` (float64).

    ``((xmin - 1) / W, (ymin - 1) / H, xmax / W, ymax / H)`` (docs/CONTRACT.md "Pixel boxes"); not clamped.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scale = np.array([width, height, width, height], dtype=np.float64)
    return (b - np.array([1.0, 1.0, 0.0, 0.0])) / scale


def normalized_to_pixel(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Inverse of :func:`pixel_to_normalized`: xyxy normalised ``[..., 4]`` -> VOC pixels (``x_min * W + 1``, ``x_max * W``)."""
    b = np.asarray(boxes, dtype=np.float64)
    scale = np.array([width, height, width, height], dtype=np.float64)
    return b * scale + np.array([1.0, 1.0, 0.0, 0.0])


def _text(node: ET.Element, tag: str, path: PathLike, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DatasetError(path, f"missing <{tag}> in {where}")
    return child.text.strip()


def _number(node: ET.Element, tag: str, path: PathLike, where: str) -> float:
    text = _text(node, tag, path, where)
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(path, f"<{tag}> in {where} is not a number: {text!r}") from None
    if not math.isfinite(value):  # NaN passes every comparison check: a NaN box trained as background
        raise DatasetError(path, f"<{tag}> in {where} is not a finite number: {text!r}")
    return value


def _check_box(box: list[float], width: int, height: int, path: PathLike, where: str) -> None:
    """Reject a box outside the image (beyond the tolerance) or with zero/negative continuous area."""
    xmin, ymin, xmax, ymax = box
    tol = BOX_TOLERANCE_PX
    if xmin < 1 - tol or ymin < 1 - tol or xmax > width + tol or ymax > height + tol:
        raise DatasetError(path, f"box {box} of {where} lies outside the {width}x{height} image")
    # continuous extent of an inclusive pixel box is xmax - (xmin - 1)
    if xmax - xmin + 1 <= 0 or ymax - ymin + 1 <= 0:
        raise DatasetError(path, f"box {box} of {where} has zero or negative area")


def _parse_object(obj: ET.Element, index: int, class_ids: dict[str, int], size: tuple[int, int],
                  path: PathLike) -> tuple[list[float], int, bool]:
    where = f"object {index}"
    name = _text(obj, "name", path, where)
    if name not in class_ids:
        raise DatasetError(path, f"{UNKNOWN_CLASS} {name!r} in {where}")
    diff_node = obj.find("difficult")
    difficult = diff_node is not None and (diff_node.text or "0").strip() not in ("0", "")
    bnd = obj.find("bndbox")
    if bnd is None:
        raise DatasetError(path, f"missing <bndbox> in {where}")
    box = [_number(bnd, tag, path, f"{where} <bndbox>") for tag in ("xmin", "ymin", "xmax", "ymax")]
    _check_box(box, size[0], size[1], path, f"{where} ({name})")
    return box, class_ids[name] + 1, difficult


def parse_annotation(xml_path: PathLike, class_names: Sequence[str] = VOC_CLASSES) -> Annotation:
    """Parse one VOC XML file into an :class:`Annotation` (pixel boxes, labels ``1..len(class_names)``).

    Raises :class:`DatasetError` naming the file for malformed XML, a missing/invalid ``<size>``, an unknown
    class, a box outside the image (beyond :data:`BOX_TOLERANCE_PX`) or with zero/negative area. An XML without
    objects parses to ``G = 0`` (the dataset decides whether that is an error).
    """
    path = Path(xml_path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DatasetError(path, f"malformed XML: {err}") from None
    except LookupError as err:  # <?xml encoding="..."?> names a codec Python lacks
        raise DatasetError(path, f"malformed XML: {err} in its <?xml ... encoding=...?> declaration; save it "
                                 f"as UTF-8") from None
    except OSError as err:
        raise DatasetError(path, f"cannot read annotation: {err.strerror or err}") from None
    size = root.find("size")
    if size is None:
        raise DatasetError(path, "missing <size>")
    width, height = (_number(size, tag, path, "<size>") for tag in ("width", "height"))
    if width <= 0 or height <= 0 or width != int(width) or height != int(height):
        raise DatasetError(path, f"invalid image size {width}x{height} in <size>")
    class_ids = {name: i for i, name in enumerate(class_names)}
    parsed = [_parse_object(obj, k, class_ids, (int(width), int(height)), path)
              for k, obj in enumerate(root.findall("object"))]
    arrays = (np.array([p[0] for p in parsed], dtype=np.float64).reshape(-1, 4),
              np.array([p[1] for p in parsed], dtype=np.int64), np.array([p[2] for p in parsed], dtype=bool))
    for arr in arrays:  # annotations are cached and shared: read-only so no caller can corrupt the cache
        arr.flags.writeable = False
    return Annotation(path.stem, int(width), int(height), *arrays)


# Parsed annotations keyed by (path, mtime_ns, size, class_names): a second dataset over the same files in one
# process (train + eval, 07 + 12 re-runs in tests) does not re-parse 16k XML files.
_ANNOTATION_CACHE: dict[tuple[str, int, int, tuple[str, ...]], Annotation] = {}


def _parse_cached(xml_path: Path, class_names: tuple[str, ...]) -> Annotation:
    try:
        st = xml_path.stat()
    except OSError:
        raise DatasetError(xml_path, "annotation file is missing") from None
    key = (str(xml_path), st.st_mtime_ns, st.st_size, class_names)
    ann = _ANNOTATION_CACHE.get(key)
    if ann is None:
        ann = parse_annotation(xml_path, class_names)
        _ANNOTATION_CACHE[key] = ann
    return ann


def load_sized_image(path: Path, width: int, height: int, described_by: str) -> Image.Image:
    """Decode ``path`` as RGB and check it is ``width x height`` (as ``described_by``, e.g. the XML, says)."""
    img = read_image(path, oriented=False).image
    if img.size != (width, height):
        raise DatasetError(path, f"image is {img.size[0]}x{img.size[1]} but {described_by} says {width}x{height}")
    return img


class _Item(NamedTuple):
    image_path: Path
    xml_path: Path
    annotation: Annotation


def _read_split(root: Path, split: str) -> list[str]:
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    try:
        lines = split_file.read_text().split("\n")
    except OSError:
        raise DatasetError(split_file, f"split file for split {split!r} is missing or unreadable") from None
    except UnicodeDecodeError as err:
        raise DatasetError(split_file, f"split file is not text ({err}): one image id per line") from None
    line = next((k for k, text in enumerate(lines, 1) if "\x00" in text), None)
    if line is not None:  # a NUL in an id would reach the file system as a ValueError traceback
        raise DatasetError(split_file, f"line {line} holds a NUL byte: not a text split file (one image id per "
                                       f"line); fix or regenerate it")
    # a line may carry a second column (per-class split files: "000005 -1"); the id is the first token
    return [line.split()[0] for line in lines if line.strip()]


def class_names_in(roots: Union[PathLike, Sequence[PathLike]], split: str, skip_bad: bool = False
                   ) -> tuple[str, ...]:
    """The sorted distinct ``<object><name>`` values of a split's XML files (``data.class_names=auto``: a
    custom VOC-format dataset's classes, read from the data). Reads the names only; the dataset built with them
    checks everything else. An unreadable XML is a :class:`DatasetError` (``skip_bad``: left out, as the
    dataset will leave it out)."""
    names: set[str] = set()
    for root in [roots] if isinstance(roots, (str, os.PathLike)) else roots:
        for image_id in _read_split(Path(root), split):
            xml_path = Path(root) / "Annotations" / f"{image_id}.xml"
            try:
                tree = ET.parse(xml_path).getroot()
            except (ET.ParseError, OSError, LookupError) as err:
                if skip_bad:
                    continue
                raise DatasetError(xml_path, f"cannot read annotation: {err}") from None
            names.update((obj.findtext("name") or "").strip() for obj in tree.findall("object"))
    names.discard("")
    if not names:
        raise DatasetError(Path(roots if isinstance(roots, (str, os.PathLike)) else roots[0]),
                           f"no object names in the annotations of split {split!r}: nothing to train")
    return tuple(sorted(names))


def target_tensors(normalized: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The training target every reader returns: ``(boxes[G, 4] xyxy normalised, clamped to [0, 1], float32,
    labels[G] int64)`` from float64 normalised boxes (a box may stick out by the tolerance: clamped here)."""
    norm = np.clip(np.asarray(normalized, dtype=np.float64).reshape(-1, 4), 0.0, 1.0)
    return torch.from_numpy(norm.astype(np.float32)), torch.from_numpy(np.array(labels, dtype=np.int64))


def _training_target(ann: Annotation, keep_difficult: bool) -> tuple[torch.Tensor, torch.Tensor]:
    keep = np.ones(len(ann.labels), dtype=bool) if keep_difficult else ~ann.difficult
    return target_tensors(pixel_to_normalized(ann.boxes[keep], ann.width, ann.height), ann.labels[keep])


class DetectionDataset(torch.utils.data.Dataset):
    """The item contract of the readers (``VOCDataset``, ``ssd_torch.data.coco.CocoDataset``).

    ``ds[i] -> (image Tensor[3, S, S] float32 normalised, {"boxes": Tensor[G, 4] xyxy normalised,
    "labels": Tensor[G] int64})`` = ``transform(load_image(i), *target(i))``; ``annotation(i)`` is the
    :class:`Annotation` for evaluation (VOC pixels, ignore boxes flagged ``difficult``). A subclass implements
    ``__len__``, ``annotation``, ``image_path``, ``target`` and ``load_image``. With ``skip_bad`` an image that
    fails to decode is recorded once in ``skipped`` (``(path, reason)``), logged, and the next readable item
    stands in for it; without, its :class:`DatasetError` propagates.
    """

    class_names: tuple[str, ...]
    _log = log

    def _init_reader(self, transform: Callable | None, skip_bad: bool) -> None:
        if transform is None:
            from .transforms import SSDEvalTransform
            transform = SSDEvalTransform()
        self.transform = transform
        self.skip_bad = skip_bad
        self.skipped: list[tuple[str, str]] = []
        self._unreadable: set[int] = set()  # items that failed at read time (skip_bad): not retried

    def _record_bad(self, err: DatasetError) -> None:
        if not self.skip_bad:
            raise err
        self._log.warning("skipping bad item %s", err)
        self.skipped.append((err.path, err.reason))

    def __len__(self) -> int:
        raise NotImplementedError

    def annotation(self, i: int) -> Annotation:
        raise NotImplementedError

    def image_path(self, i: int) -> Path:
        raise NotImplementedError

    def target(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def load_image(self, i: int) -> Image.Image:
        raise NotImplementedError

    @property
    def image_ids(self) -> list[str]:
        """Image ids in dataset order (the keys of the evaluator's dictionaries)."""
        return [self.annotation(i).image_id for i in range(len(self))]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} images")
        i %= n
        for k in range(n):
            j = (i + k) % n
            if j in self._unreadable:
                continue
            try:
                img = self.load_image(j)
            except DatasetError as err:
                self._record_bad(err)  # re-raises unless skip_bad: then the next item stands in
                self._unreadable.add(j)
                continue
            boxes, labels = self.target(j)
            image, boxes, labels = self.transform(img, boxes, labels)
            return image, {"boxes": boxes, "labels": labels}
        raise DatasetError(self.image_path(0), "no readable image left in the dataset")


def _refuse_repeated_roots(roots: Sequence[Path]) -> None:
    """The same folder named twice (``--data A A``, ``A`` and ``A/``) would read every image twice: counted as
    two images, scored as one. A DatasetError names it."""
    seen: dict[Path, Path] = {}
    for root in roots:
        key = root.resolve()
        if key in seen:
            raise DatasetError(root, f"this data root is given twice (also as {seen[key]}); name each VOC year "
                                     f"folder once")
        seen[key] = root


class VOCDataset(DetectionDataset):
    """VOC detection dataset over one or several year roots (07+12 = ``[voc2007, voc2012]``), one split.

    The :class:`DetectionDataset` contract. ``transform(pil_image, boxes, labels) -> (image, boxes, labels)``;
    ``None`` means :class:`ssd_torch.data.transforms.SSDEvalTransform` (resize to 300 + the default preprocessing).
    ``ds.annotation(i)`` returns every box (difficult included, pixels) for evaluation. Image ids duplicated
    across roots are qualified as ``"<root folder name>/<id>"`` so evaluator dictionaries stay one-to-one.
    ``keep_empty``: keep images whose XML has no object (negatives) instead of treating them as bad data.
    See the module docstring for the bad-data rules.
    """

    def __init__(self, roots: Union[PathLike, Sequence[PathLike]], split: str,
                 class_names: Sequence[str] = VOC_CLASSES, transform: Callable | None = None,
                 keep_difficult: bool = False, skip_bad: bool = False, verify_images: bool = False,
                 keep_empty: bool = False) -> None:
        if isinstance(roots, (str, os.PathLike)):
            roots = [roots]
        if not roots:
            raise ValueError("VOCDataset needs at least one root folder")
        self._init_reader(transform, skip_bad)
        self.roots = [Path(r) for r in roots]
        _refuse_repeated_roots(self.roots)
        self.split = split
        self.class_names = tuple(class_names)
        self.keep_difficult = keep_difficult
        self.keep_empty = keep_empty
        self._items: list[_Item] = []
        for root in self.roots:
            self._scan_root(root, verify_images)
        self._qualify_duplicate_ids()

    # ---- construction -------------------------------------------------------------------------------
    def _scan_root(self, root: Path, verify_images: bool) -> None:
        seen: set[str] = set()
        for image_id in _read_split(root, self.split):
            if image_id in seen:  # evaluation is keyed by id: a repeated id would merge ground truth
                self._record_bad(DatasetError(root / "ImageSets" / "Main" / f"{self.split}.txt",
                                              f"image id {image_id!r} is listed twice"))
                continue
            seen.add(image_id)
            xml_path = root / "Annotations" / f"{image_id}.xml"
            image_path = root / "JPEGImages" / f"{image_id}.jpg"
            try:
                ann = _parse_cached(xml_path, self.class_names)
                if len(ann.labels) == 0 and not self.keep_empty:
                    raise DatasetError(xml_path, "image has no objects (keep_empty=True keeps it as a negative)")
                check_image_file(image_path, verify_images)
            except DatasetError as err:
                self._record_bad(err)
                continue
            self._items.append(_Item(image_path, xml_path, ann))

    def _qualify_duplicate_ids(self) -> None:
        seen: dict[str, int] = {}
        for item in self._items:
            seen[item.annotation.image_id] = seen.get(item.annotation.image_id, 0) + 1
        names_unique = len({r.name for r in self.roots}) == len(self.roots)
        for k, item in enumerate(self._items):
            if seen[item.annotation.image_id] > 1:
                root = item.image_path.parent.parent
                qualified = f"{root.name if names_unique else root}/{item.annotation.image_id}"
                self._items[k] = item._replace(annotation=item.annotation._replace(image_id=qualified))

    # ---- access -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._items)

    @property
    def image_ids(self) -> list[str]:
        """Image ids in dataset order (qualified where duplicated across roots)."""
        return [item.annotation.image_id for item in self._items]

    def annotation(self, i: int) -> Annotation:
        """Every ground-truth box of item ``i`` (pixels, difficult included) for evaluation."""
        return self._items[i].annotation

    def image_path(self, i: int) -> Path:
        return self._items[i].image_path

    def target(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Training target of item ``i``: ``(boxes[G, 4] xyxy normalised float32, labels[G] int64)``."""
        return _training_target(self._items[i].annotation, self.keep_difficult)

    def load_image(self, i: int) -> Image.Image:
        """Decode item ``i`` as an RGB PIL image; raises :class:`DatasetError` (naming the file) on failure."""
        item = self._items[i]
        return load_sized_image(item.image_path, item.annotation.width, item.annotation.height, item.xml_path.name)
