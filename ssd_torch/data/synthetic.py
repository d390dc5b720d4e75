"""Synthetic shapes in a real PASCAL VOC tree: the embedded default data set and the test fixture.

``generate_voc(root, num_trainval, num_test, seed)`` writes one VOC *year folder* at ``root``::

    root/Annotations/<id>.xml          VOC layout: size, object/name/pose/truncated/difficult/bndbox
    root/JPEGImages/<id>.jpg           PIL JPEG
    root/ImageSets/Main/{trainval,train,val,test}.txt
    root/synthetic.json                generation parameters, written last (marks the tree complete)
    root/synthetic.partial.json        the same, written first and removed last (an interrupted run)

Bounding boxes are pixels in the VOC convention (1-based, inclusive) and are the *tight* box of the drawn
mask, so ``voc.pixel_to_normalized`` gives the exact continuous extent of the object's pixels.

Images: a textured, noisy, low-saturation background with a few faint distractor strokes, and 1..6 objects of
:data:`SYNTHETIC_CLASSES` in saturated random colours (colour says "object", never "which class": the class is
the shape). Object sides are log-uniform in ``[min_scale, max_scale]`` of the image (default 0.07 .. 0.95: from
below the 38x38 map's smallest prior, 0.1, up to near full-image), aspect ratio in [0.7, 1.4], textures solid /
stripes / checker / gradient. Objects are drawn largest first and a placement is rejected when it would cover
more than ``max_occlusion`` of an earlier object's box, so objects overlap but stay recognisable. With
probability ``difficult_prob`` an image also gets a tiny object (2.5-5 % of the side) flagged ``difficult``.

Each image draws from its own ``numpy`` generator seeded by ``(seed, index)``: the tree is a pure function of
the parameters (same bytes of XML, same pixels), and images can be generated in any order or in parallel.
"""
from __future__ import annotations

import inspect
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple, Optional, Union

import numpy as np
from PIL import Image, ImageDraw

from ssd_torch.errors import DatasetError
from ssd_torch.files import atomic_write_text

__all__ = [
    "SYNTHETIC_CLASSES", "STAMP", "COCO_STAMP", "SyntheticObject", "render_image", "generate_voc", "is_complete",
    "ensure_voc", "check_counts", "check_image_size", "COCO_SPLITS", "generate_coco", "is_complete_coco",
]

SYNTHETIC_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "ring", "cross", "star")
#: The stamp file of a complete synthetic VOC tree (its generation parameters; ``registry.is_synthetic_tree``).
STAMP = "synthetic.json"
#: The stamp file of a complete synthetic COCO tree.
COCO_STAMP = "synthetic_coco.json"
_FORMAT = "ssd300-synthetic-voc/1"
SizeSpec = Union[tuple[int, int], tuple[tuple[int, int], tuple[int, int]]]


class SyntheticObject(NamedTuple):
    """One drawn object: ``box`` = VOC pixels (xmin, ymin, xmax, ymax), 1-based inclusive, tight on the mask."""

    name: str
    box: tuple[int, int, int, int]
    difficult: bool


# ---- shapes -----------------------------------------------------------------------------------------------
def _star_points(w: int, h: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    angle0 = rng.uniform(0, 2 * math.pi)
    inner = rng.uniform(0.38, 0.5)
    pts = np.array([(math.cos(angle0 + k * math.pi / 5) * (1.0 if k % 2 == 0 else inner),
                     math.sin(angle0 + k * math.pi / 5) * (1.0 if k % 2 == 0 else inner)) for k in range(10)])
    pts -= pts.min(axis=0)
    pts *= np.array([w - 1, h - 1]) / pts.max(axis=0)  # stretch the star to touch all four sides
    return [tuple(p) for p in pts]


def _shape_mask(name: str, w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """An ``L`` mask of size ``w x h`` whose drawn pixels touch (nearly) every side of the box."""
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    full = [0, 0, w - 1, h - 1]
    if name == "circle":
        draw.ellipse(full, fill=255)
    elif name == "square":
        draw.rectangle(full, fill=255)
    elif name == "ring":
        draw.ellipse(full, fill=255)
        t = rng.uniform(0.2, 0.3)  # ring thickness relative to the box: a hole ~half the size stays visible
        draw.ellipse([t * (w - 1), t * (h - 1), (1 - t) * (w - 1), (1 - t) * (h - 1)], fill=0)
    elif name == "cross":
        t = rng.uniform(0.15, 0.2)
        draw.rectangle([(0.5 - t) * (w - 1), 0, (0.5 + t) * (w - 1), h - 1], fill=255)
        draw.rectangle([0, (0.5 - t) * (h - 1), w - 1, (0.5 + t) * (h - 1)], fill=255)
    elif name == "triangle":
        pts = [(0, h - 1), ((w - 1) / 2, 0), (w - 1, h - 1)]
        if rng.random() < 0.5:  # pointing up or down
            pts = [(x, h - 1 - y) for x, y in pts]
        draw.polygon(pts, fill=255)
    elif name == "star":
        draw.polygon(_star_points(w, h, rng), fill=255)
    else:
        raise ValueError(f"unknown synthetic shape {name!r}; known: {SYNTHETIC_CLASSES}")
    return mask


def _random_colour(rng: np.random.Generator, saturated: bool) -> np.ndarray:
    """RGB (0..255 float) from HSV: saturated bright colours for objects, muted ones for the background."""
    hue = rng.random()
    sat = rng.uniform(0.55, 1.0) if saturated else rng.uniform(0.0, 0.3)
    val = rng.uniform(0.45, 1.0) if saturated else rng.uniform(0.25, 0.8)
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
    return 255.0 * val * (1.0 - sat * np.minimum(np.maximum(np.minimum(k, 4.0 - k), 0.0), 1.0))


def _texture(w: int, h: int, colour: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """RGB fill of size ``w x h``: solid, stripes, checker or gradient around ``colour`` (contrast <= ~30 %)."""
    kind = rng.integers(4)
    if kind == 0:
        return Image.new("RGB", (w, h), tuple(int(c) for c in colour))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(4.0, 12.0)
    amp = rng.uniform(0.15, 0.3)
    if kind == 1:
        theta = rng.uniform(0, math.pi)
        shade = 1.0 - amp * (np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * (2 * math.pi / period)) > 0)
    elif kind == 2:
        shade = 1.0 - amp * (((xx // period) + (yy // period)) % 2)
    else:
        shade = 1.0 - amp * (xx / max(w - 1, 1) if rng.random() < 0.5 else yy / max(h - 1, 1))
    rgb = shade[..., None] * colour.astype(np.float32)[None, None, :]
    return Image.fromarray((rgb + 0.5).astype(np.uint8))


def _background(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """Muted two-colour gradient + coarse colour blotches (both from one low-res field, upsampled bilinearly
    in C) + fine per-pixel noise: a textured, noisy background, cheap enough for >= 100 images/s."""
    gh, gw = max(h // 16, 2), max(w // 16, 2)
    c0, c1 = _random_colour(rng, False), _random_colour(rng, False)
    t = np.linspace(0.0, 1.0, gw)[None, :] * rng.uniform(-1, 1) + np.linspace(0.0, 1.0, gh)[:, None] * rng.uniform(-1, 1)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    field = c0 + (c1 - c0) * t[..., None] + rng.standard_normal((gh, gw, 3)) * rng.uniform(4.0, 16.0)
    low = Image.fromarray(np.clip(field + 0.5, 0, 255).astype(np.uint8))
    smooth = np.asarray(low.resize((w, h), Image.BILINEAR), dtype=np.int16)
    amp = int(rng.integers(3, 13))
    noise = rng.integers(-amp, amp + 1, size=(h, w, 1), dtype=np.int16)
    return Image.fromarray(np.clip(smooth + noise, 0, 255).astype(np.uint8))


def _distractors(image: Image.Image, rng: np.random.Generator) -> None:
    """A few faint strokes/arcs: clutter that is not an object (the detector must not fire on edges alone)."""
    draw = ImageDraw.Draw(image)
    w, h = image.size
    for _ in range(rng.integers(0, 4)):
        colour = tuple(int(c) for c in _random_colour(rng, False))
        pts = [(float(rng.uniform(0, w)), float(rng.uniform(0, h))) for _ in range(2)]
        if rng.random() < 0.5:
            draw.line(pts, fill=colour, width=int(rng.integers(1, 4)))
        else:
            x0, x1 = sorted(p[0] for p in pts)
            y0, y1 = sorted(p[1] for p in pts)
            draw.arc([x0, y0, x1 + 1, y1 + 1], float(rng.uniform(0, 360)), float(rng.uniform(0, 360)),
                     fill=colour, width=int(rng.integers(1, 3)))


# ---- layout -----------------------------------------------------------------------------------------------
def _sample_boxes(w: int, h: int, rng: np.random.Generator, max_objects: int, min_scale: float,
                  max_scale: float, max_occlusion: float) -> list[tuple[int, int, int, int]]:
    """Object boxes ``(x, y, bw, bh)`` in 0-based pixels, largest first, occlusion of earlier boxes bounded."""
    n = int(rng.integers(1, max_objects + 1))
    sides = np.sort(np.exp(rng.uniform(math.log(min_scale), math.log(max_scale), n)))[::-1]
    placed: list[tuple[int, int, int, int]] = []
    covered: list[float] = []
    for side in sides:
        ar = math.exp(rng.uniform(math.log(0.7), math.log(1.4)))
        bw = int(round(min(side * math.sqrt(ar), 0.98) * w))
        bh = int(round(min(side / math.sqrt(ar), 0.98) * h))
        bw, bh = max(bw, 3), max(bh, 3)
        for _ in range(12):
            x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            fractions = [_overlap((x, y, bw, bh), p) / (p[2] * p[3]) for p in placed]
            if all(c + f <= max_occlusion for c, f in zip(covered, fractions)):
                covered = [c + f for c, f in zip(covered, fractions)]
                placed.append((x, y, bw, bh))
                covered.append(0.0)
                break
    return placed


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return float(max(iw, 0) * max(ih, 0))


def _draw_object(canvas: Image.Image, name: str, box: tuple[int, int, int, int],
                 rng: np.random.Generator) -> Optional[tuple[int, int, int, int]]:
    """Paste a textured shape into ``canvas``; return its tight VOC box (1-based inclusive) or None if empty."""
    x, y, bw, bh = box
    mask = _shape_mask(name, bw, bh, rng)
    tight = mask.getbbox()  # (x0, y0, x1, y1) exclusive, 0-based within the box
    if tight is None:
        return None
    canvas.paste(_texture(bw, bh, _random_colour(rng, True), rng), (x, y), mask)
    return (x + tight[0] + 1, y + tight[1] + 1, x + tight[2], y + tight[3])


def render_image(width: int, height: int, rng: np.random.Generator, max_objects: int = 6,
                 min_scale: float = 0.07, max_scale: float = 0.95, max_occlusion: float = 0.35,
                 difficult_prob: float = 0.1) -> tuple[Image.Image, list[SyntheticObject]]:
    """One synthetic image and its objects (boxes in VOC pixels, 1-based inclusive)."""
    canvas = _background(width, height, rng)
    _distractors(canvas, rng)
    specs = [(box, False) for box in
             _sample_boxes(width, height, rng, max_objects, min_scale, max_scale, max_occlusion)]
    if rng.random() < difficult_prob:  # a tiny object, drawn on top: the "difficult" ones of VOC
        side = rng.uniform(0.025, 0.05)
        bw, bh = max(int(side * width), 3), max(int(side * height), 3)
        specs.append(((int(rng.integers(0, width - bw + 1)), int(rng.integers(0, height - bh + 1)), bw, bh), True))
    objects: list[SyntheticObject] = []
    for box, difficult in specs:
        name = SYNTHETIC_CLASSES[int(rng.integers(len(SYNTHETIC_CLASSES)))]
        voc_box = _draw_object(canvas, name, box, rng)
        if voc_box is not None:
            objects.append(SyntheticObject(name, voc_box, difficult))
    return canvas, objects


# ---- the VOC tree ---------------------------------------------------------------------------------------
def _annotation_xml(folder: str, image_id: str, width: int, height: int, objects: Sequence[SyntheticObject],
                    seed: int) -> str:
    """The VOC XML text (deterministic bytes: fixed layout, integers only)."""
    lines = ["<annotation>", f"\t<folder>{folder}</folder>", f"\t<filename>{image_id}.jpg</filename>",
             f"\t<source>\n\t\t<database>ssd300 synthetic shapes, seed {seed}</database>\n\t</source>",
             f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>",
             "\t<segmented>0</segmented>"]
    for obj in objects:
        xmin, ymin, xmax, ymax = obj.box
        lines += ["\t<object>", f"\t\t<name>{obj.name}</name>", "\t\t<pose>Unspecified</pose>",
                  "\t\t<truncated>0</truncated>", f"\t\t<difficult>{int(obj.difficult)}</difficult>",
                  f"\t\t<bndbox>\n\t\t\t<xmin>{xmin}</xmin>\n\t\t\t<ymin>{ymin}</ymin>\n"
                  f"\t\t\t<xmax>{xmax}</xmax>\n\t\t\t<ymax>{ymax}</ymax>\n\t\t</bndbox>", "\t</object>"]
    return "\n".join(lines + ["</annotation>", ""])


def _image_size(spec: SizeSpec, rng: np.random.Generator) -> tuple[int, int]:
    """``(W, H)`` from a fixed ``(W, H)`` or a range ``((w_lo, w_hi), (h_lo, h_hi))`` (inclusive)."""
    dims = []
    for d in spec:
        if isinstance(d, (tuple, list)):
            lo, hi = int(d[0]), int(d[1])
            dims.append(int(rng.integers(lo, hi + 1)))
        else:
            dims.append(int(d))
    if len(dims) != 2 or min(dims) < 32:
        raise ValueError(f"image_size must give a width and a height >= 32 pixels, got {spec!r}")
    return dims[0], dims[1]


def check_image_size(spec: SizeSpec) -> None:
    """``spec`` is ``(W, H)`` or ``((w_lo, w_hi), (h_lo, h_hi))`` with every side >= 32 pixels (a ``ValueError``
    otherwise): checked before a file is written."""
    dims = list(spec) if isinstance(spec, (tuple, list)) else []
    ok = len(dims) == 2 and all(
        (isinstance(d, (tuple, list)) and len(d) == 2 and 32 <= int(d[0]) <= int(d[1])) or
        (not isinstance(d, (tuple, list)) and int(d) >= 32) for d in dims)
    if not ok:
        raise ValueError(f"image_size must give a width and a height >= 32 pixels (or ranges lo <= hi of them), "
                         f"got {spec!r}")


def _params(num_trainval: int, num_test: int, seed: int, image_size: SizeSpec, max_objects: int,
            min_scale: float, max_scale: float, difficult_prob: float, jpeg_quality: int,
            max_occlusion: float) -> dict:
    check_image_size(image_size)
    return {"format": _FORMAT, "classes": list(SYNTHETIC_CLASSES), "num_trainval": int(num_trainval),
            "num_test": int(num_test), "seed": int(seed), "image_size": json.loads(json.dumps(image_size)),
            "max_objects": int(max_objects), "min_scale": float(min_scale), "max_scale": float(max_scale),
            "difficult_prob": float(difficult_prob), "jpeg_quality": int(jpeg_quality),
            "max_occlusion": float(max_occlusion)}


def _render_one(index: int, params: dict) -> tuple[str, int, int, bytes, list[SyntheticObject]]:
    """Scene ``index`` of the tree: ``(image id, W, H, JPEG bytes, objects)``, the same in every format."""
    rng = np.random.default_rng([params["seed"], index])
    width, height = _image_size(params["image_size"], rng)
    image, objects = render_image(width, height, rng, max_objects=params["max_objects"],
                                  min_scale=params["min_scale"], max_scale=params["max_scale"],
                                  max_occlusion=params["max_occlusion"], difficult_prob=params["difficult_prob"])
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=params["jpeg_quality"])
    return f"{index:06d}", width, height, buf.getvalue(), objects


def _write_one(root: Path, index: int, params: dict) -> None:
    image_id, width, height, jpeg, objects = _render_one(index, params)
    (root / "JPEGImages" / f"{image_id}.jpg").write_bytes(jpeg)
    xml = _annotation_xml(root.name, image_id, width, height, objects, params["seed"])
    (root / "Annotations" / f"{image_id}.xml").write_text(xml)


def _write_one_star(args: tuple[Path, int, dict]) -> None:
    _write_one(*args)


class _Stamp(NamedTuple):
    """The stamp files of one tree format: ``done`` (the parameters, written last: the tree is complete) and
    ``partial`` (the same, written before the first file and removed last: an interrupted run)."""

    done: str
    partial: str
    fmt: str


_VOC_STAMP = _Stamp(STAMP, "synthetic.partial.json", "VOC")
_COCO_STAMP = _Stamp(COCO_STAMP, "synthetic_coco.partial.json", "COCO")


def _read_stamp(root: Path, stamp: _Stamp) -> Optional[dict]:
    """The parameters ``root`` was stamped with: the completion stamp, else the in-progress one; None when
    neither exists. An unreadable stamp is a :class:`DatasetError` (never guessed either way: nothing is written
    into a folder whose owner cannot be told)."""
    for name in (stamp.done, stamp.partial):
        path = root / name
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                data = None
            if not isinstance(data, dict):
                raise DatasetError(path, "unreadable synthetic-tree stamp; nothing was written: generate into an "
                                         "empty or absent folder") from None
            return data
    return None


def _describe(params: dict, other: dict) -> str:
    """``"30 trainval + 10 test, seed 0"`` plus every other parameter that differs from ``other``."""
    text = f"{params.get('num_trainval')} trainval + {params.get('num_test')} test, seed {params.get('seed')}"
    extra = [f"{k}={params.get(k)!r}" for k in sorted(set(params) | set(other))
             if k not in ("num_trainval", "num_test", "seed") and params.get(k) != other.get(k)]
    return ", ".join([text, *extra])


def _check_target(root: Path, params: dict, stamp: _Stamp) -> None:
    """Refuse (:class:`DatasetError`, nothing written) unless ``root`` is absent, holds no file, or was
    stamped by this generator with exactly ``params`` (complete or interrupted): generation never overwrites
    a file it did not write. The one rule of both tree formats."""
    if not root.exists():
        return
    if not root.is_dir():
        raise DatasetError(root, "exists and is not a folder; nothing was written")
    stamped = _read_stamp(root, stamp)
    if stamped is None:
        example = next((p for p in root.rglob("*") if p.is_file()), None)
        if example is not None:
            raise DatasetError(root, f"holds files not written by the synthetic generator (e.g. "
                                     f"{example.relative_to(root)}) and no {stamp.done} stamp; nothing was "
                                     f"written. Generate into an empty or absent folder, or train on the data "
                                     f"that is there with data.dataset={stamp.fmt.lower()}")
    elif stamped != params:
        raise DatasetError(root, f"holds a synthetic {stamp.fmt} tree generated with other parameters "
                                 f"({_describe(stamped, params)}; wanted {_describe(params, stamped)}); nothing "
                                 f"was written. Use another folder, or ask for the parameters of the tree that "
                                 f"is there")


def _is_stamped_complete(root: Path, params: dict, stamp: _Stamp, files: Sequence[Path]) -> bool:
    """``root`` holds a finished tree of ``params``: the completion stamp says so and every file is there (an
    unreadable stamp: False; writing there is then refused by :func:`_check_target`)."""
    try:
        if _read_stamp(root, stamp) != params or not (root / stamp.done).is_file():
            return False
    except DatasetError:
        return False
    return all(f.is_file() for f in files)


def _write_stamped(root: Path, params: dict, stamp: _Stamp, write_files: Callable[[], None]) -> None:
    """Check the target, then write the tree: the in-progress stamp first (claims the folder, so an interrupted
    run is completed by the next call), ``write_files()``, the completion stamp last."""
    _check_target(root, params, stamp)
    root.mkdir(parents=True, exist_ok=True)
    _write_json(root / stamp.partial, params)
    (root / stamp.done).unlink(missing_ok=True)
    write_files()
    _write_json(root / stamp.done, params)
    (root / stamp.partial).unlink()


def _split_indices(num_trainval: int, num_test: int) -> dict[str, list[int]]:
    """Scene indices per split, the one split rule of both trees: trainval first (even positions train, odd
    val), then test. The VOC tree lists them as ids ``%06d``; the COCO files as image id = index + 1."""
    trainval = list(range(num_trainval))
    return {"trainval": trainval, "train": trainval[::2], "val": trainval[1::2],
            "test": list(range(num_trainval, num_trainval + num_test))}


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def generate_voc(root: Union[str, os.PathLike], num_trainval: int, num_test: int, seed: int,
                 image_size: SizeSpec = (300, 300), max_objects: int = 6, min_scale: float = 0.07,
                 max_scale: float = 0.95, difficult_prob: float = 0.1, jpeg_quality: int = 90,
                 max_occlusion: float = 0.35, workers: int = 1,
                 announce: Optional[Callable[[], None]] = None) -> Path:
    """Write a synthetic VOC year folder at ``root`` and return it (see the module docstring).

    Ids ``000000 ..`` : the first ``num_trainval`` form ``trainval`` (even positions ``train``, odd ``val``),
    the next ``num_test`` form ``test``. ``image_size``: ``(W, H)`` or ``((w_lo, w_hi), (h_lo, h_hi))``.
    ``max_occlusion``: the most of an object's box that later (overlapping) boxes may cover.
    ``workers > 1`` uses a process pool (the output is identical). ``announce()`` is called once the folder
    has been accepted, before the first file is written (e.g. to print "generating ...").

    Writes only into an absent folder, one that holds no file, or one this generator stamped with the same
    parameters (its files are a pure function of them, so rewriting them changes no byte); anything else
    raises :class:`DatasetError` before a file is touched. The stamp ``synthetic.partial.json`` is written
    first and ``synthetic.json`` last, so an interrupted run is never mistaken for a complete tree and the
    next call completes it.
    """
    check_counts(num_trainval, num_test)
    if not 0 < min_scale <= max_scale <= 1.0 or max_objects < 1:
        raise ValueError(f"invalid object layout: scales [{min_scale}, {max_scale}], max_objects {max_objects}")
    root = Path(root)
    params = _params(num_trainval, num_test, seed, image_size, max_objects, min_scale, max_scale,
                     difficult_prob, jpeg_quality, max_occlusion)
    _check_target(root, params, _VOC_STAMP)
    if announce is not None:
        announce()
    _write_stamped(root, params, _VOC_STAMP, lambda: _write_voc_files(root, params, workers))
    return root


def check_counts(num_trainval: int, num_test: int) -> None:
    """A tree needs ``num_trainval, num_test >= 0`` with at least one image (a ``ValueError`` otherwise)."""
    if num_trainval < 0 or num_test < 0 or num_trainval + num_test == 0:
        raise ValueError(f"need a positive number of images, got trainval={num_trainval}, test={num_test}")


def _write_voc_files(root: Path, params: dict, workers: int) -> None:
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(root, i, params) for i in range(params["num_trainval"] + params["num_test"])]
    if workers > 1:
        from multiprocessing import get_context
        with get_context("spawn").Pool(workers) as pool:
            pool.map(_write_one_star, jobs, chunksize=32)
    else:
        for job in jobs:
            _write_one(*job)
    for name, members in _split_indices(params["num_trainval"], params["num_test"]).items():
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{m:06d}\n" for m in members))


def _voc_files(root: Path, params: dict) -> list[Path]:
    n = params["num_trainval"] + params["num_test"]
    return ([root / "Annotations" / f"{i:06d}.xml" for i in range(n)] +
            [root / "JPEGImages" / f"{i:06d}.jpg" for i in range(n)] +
            [root / "ImageSets" / "Main" / f"{s}.txt" for s in ("trainval", "train", "val", "test")])


def is_complete(root: Union[str, os.PathLike], num_trainval: int, num_test: int, seed: int,
                image_size: SizeSpec = (300, 300), max_objects: int = 6, min_scale: float = 0.07,
                max_scale: float = 0.95, difficult_prob: float = 0.1, jpeg_quality: int = 90,
                max_occlusion: float = 0.35) -> bool:
    """True when ``root`` holds a finished tree generated with exactly these parameters (stamp + every file)."""
    root = Path(root)
    want = _params(num_trainval, num_test, seed, image_size, max_objects, min_scale, max_scale,
                   difficult_prob, jpeg_quality, max_occlusion)
    return _is_stamped_complete(root, want, _VOC_STAMP, _voc_files(root, want))


def ensure_voc(root: Union[str, os.PathLike], num_trainval: int, num_test: int, seed: int, **kwargs) -> Path:
    """:func:`generate_voc` unless :func:`is_complete` already holds (``make demo`` regenerates only if missing);
    refuses, like :func:`generate_voc`, a folder that holds anything but a tree of these parameters."""
    check_kwargs = {k: v for k, v in kwargs.items() if k not in ("workers", "announce")}
    if is_complete(root, num_trainval, num_test, seed, **check_kwargs):
        return Path(root)
    return generate_voc(root, num_trainval, num_test, seed, **kwargs)


# ---- the COCO tree ---------------------------------------------------------------------------------------
_COCO_FORMAT = "ssd300-synthetic-coco/1"
COCO_SPLITS: tuple[str, ...] = ("trainval", "train", "val", "test")


def _coco_params(num_trainval: int, num_test: int, seed: int, category_ids: Sequence[int], **kwargs) -> dict:
    """The VOC tree's parameters (same scenes; ``kwargs``: :func:`generate_voc`'s scene keywords, with its
    defaults) + the category ids, tagged with the COCO format."""
    scene = {name: p.default for name, p in inspect.signature(generate_voc).parameters.items()
             if p.default is not inspect.Parameter.empty and name not in ("workers", "announce")}
    unknown = set(kwargs) - set(scene)
    if unknown:
        raise TypeError(f"unknown scene parameter(s) {sorted(unknown)}; known: {sorted(scene)}")
    params = _params(num_trainval, num_test, seed, **{**scene, **kwargs})
    return {**params, "format": _COCO_FORMAT, "category_ids": [int(c) for c in category_ids]}


def _coco_annotations(objects: Sequence[SyntheticObject], image_id: int, first_id: int,
                      category_of: dict[str, int]) -> list[dict]:
    """COCO records of one scene: the VOC box (1-based inclusive) as ``[x - 1, y - 1, w, h]`` (0-based
    continuous, the same pixels); ``difficult`` objects become ``iscrowd`` ignore regions."""
    out = []
    for k, obj in enumerate(objects):
        xmin, ymin, xmax, ymax = obj.box
        w, h = xmax - xmin + 1, ymax - ymin + 1
        out.append({"id": first_id + k, "image_id": image_id, "category_id": category_of[obj.name],
                    "bbox": [xmin - 1, ymin - 1, w, h], "area": w * h, "iscrowd": int(obj.difficult)})
    return out


def _write_coco_one(args: tuple[Path, int, dict]) -> tuple[int, int, list[SyntheticObject]]:
    root, index, params = args
    image_id, width, height, jpeg, objects = _render_one(index, params)
    (root / "images" / f"{image_id}.jpg").write_bytes(jpeg)
    return width, height, objects


def _coco_documents(scenes: list[tuple[int, int, list[SyntheticObject]]], params: dict) -> dict[str, dict]:
    """``{split: instances dict}``; image id = scene index + 1, annotation ids unique over the whole tree."""
    category_of = dict(zip(SYNTHETIC_CLASSES, params["category_ids"]))
    categories = [{"id": c, "name": n, "supercategory": "shape"} for n, c in category_of.items()]
    images, annotations = [], []
    for index, (width, height, objects) in enumerate(scenes):
        images.append({"id": index + 1, "file_name": f"{index:06d}.jpg", "width": width, "height": height})
        first = 1 + sum(len(a) for a in annotations)
        annotations.append(_coco_annotations(objects, index + 1, first, category_of))
    info = {"description": f"ssd300 synthetic shapes, seed {params['seed']}", "version": _COCO_FORMAT}
    return {split: {"info": info, "images": [images[i] for i in members],
                    "annotations": [a for i in members for a in annotations[i]], "categories": categories}
            for split, members in _split_indices(params["num_trainval"], params["num_test"]).items()}


def generate_coco(root: Union[str, os.PathLike], num_trainval: int, num_test: int, seed: int,
                  category_ids: Optional[Sequence[int]] = None, workers: int = 1, **kwargs) -> Path:
    """Write the scenes of ``generate_voc(root, num_trainval, num_test, seed, **kwargs)`` in COCO format::

        root/images/<id>.jpg                          the same JPEG bytes as the VOC tree's JPEGImages/
        root/annotations/instances_<split>.json       split in trainval, train, val, test (as the VOC tree's)
        root/synthetic_coco.json                      the parameters, written last (marks the tree complete)

    Image ids are scene index + 1, categories :data:`SYNTHETIC_CLASSES` with ``category_ids`` (default 1..6;
    any distinct ids, e.g. non-contiguous ones), ``difficult`` objects become ``iscrowd`` regions. A complete
    tree of these parameters is left as it is; an interrupted one is finished. Any other non-empty folder is
    refused (``DatasetError``): nothing that this generator did not write is ever overwritten.
    """

    root = Path(root)
    ids = list(range(1, len(SYNTHETIC_CLASSES) + 1)) if category_ids is None else [int(c) for c in category_ids]
    if len(ids) != len(SYNTHETIC_CLASSES) or len(set(ids)) != len(ids):
        raise ValueError(f"category_ids must be {len(SYNTHETIC_CLASSES)} distinct integers, got {ids}")
    check_counts(num_trainval, num_test)
    params = _coco_params(num_trainval, num_test, seed, ids, **kwargs)
    if not _is_stamped_complete(root, params, _COCO_STAMP, _coco_files(root, params)):
        _write_stamped(root, params, _COCO_STAMP, lambda: _write_coco_files(root, params, workers))
    return root


def _coco_files(root: Path, params: dict) -> list[Path]:
    n = params["num_trainval"] + params["num_test"]
    return ([root / "images" / f"{i:06d}.jpg" for i in range(n)] +
            [root / "annotations" / f"instances_{s}.json" for s in COCO_SPLITS])


def _write_coco_files(root: Path, params: dict, workers: int) -> None:
    for sub in ("images", "annotations"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(root, i, params) for i in range(params["num_trainval"] + params["num_test"])]
    if workers > 1:
        from multiprocessing import get_context
        with get_context("spawn").Pool(workers) as pool:
            scenes = pool.map(_write_coco_one, jobs, chunksize=32)
    else:
        scenes = [_write_coco_one(job) for job in jobs]
    for split, doc in _coco_documents(scenes, params).items():
        atomic_write_text(root / "annotations" / f"instances_{split}.json",
                          json.dumps(doc, separators=(",", ":")) + "\n")


def is_complete_coco(root: Union[str, os.PathLike], num_trainval: int, num_test: int, seed: int,
                     category_ids: Optional[Sequence[int]] = None, **kwargs) -> bool:
    """True when ``root`` holds a finished COCO tree of exactly these parameters (stamp + every file)."""
    root = Path(root)
    ids = list(range(1, len(SYNTHETIC_CLASSES) + 1)) if category_ids is None else list(category_ids)
    params = _coco_params(num_trainval, num_test, seed, ids, **kwargs)
    return _is_stamped_complete(root, params, _COCO_STAMP, _coco_files(root, params))
