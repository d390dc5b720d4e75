"""SSD augmentation (SSD paper, section 2.2 "Data augmentation") and the evaluation transform.

Both transforms map ``(PIL.Image, boxes[G, 4] xyxy normalised, labels[G]) -> (Tensor[3, S, S] float32
network input, boxes[G', 4] xyxy normalised float32, labels[G'] int64)``; the input follows the model's
:class:`ssd_torch.data.preprocess.Preprocess` (default: RGB, ImageNet mean/std).

:class:`SSDTrainTransform` = photometric distortion -> zoom-out (canvas up to ``max_expand`` x, filled with the
mean colour) -> min-IoU random crop (ssd.pytorch's sample options: whole image, min IoU 0.1/0.3/0.5/0.7/0.9, any
crop; boxes whose centre lies in the crop are kept and clipped) -> horizontal flip -> resize to S -> normalise,
then degenerate boxes (narrower or lower than ``min_size`` output pixels) are dropped with their labels.

Why not ``torchvision.transforms.v2`` end to end: the v2 chain (RandomPhotometricDistort, RandomZoomOut,
RandomIoUCrop, RandomHorizontalFlip, Resize, SanitizeBoundingBoxes) spends its CPU time in the per-pixel HSV hue
kernel and in materialising the zoom-out canvas (up to 4x the image in each direction), which a CPU-only demo
cannot afford. This module computes the same geometry analytically instead: zoom-out and crop are sampled
as rectangles, and only the part of the source image that lands in the crop is resized once (``PIL.resize``
with a float source ``box``) and pasted onto a mean-filled S x S canvas. The photometric distortion (the v2
ranges: brightness [0.875, 1.125], contrast/saturation [0.5, 1.5], hue +-0.05 turn, channel permutation, each
with p = 0.5, contrast before or after the colour steps) is one composed 3x4 colour matrix applied by PIL in C
to that pasted patch only, so the fill keeps the mean colour as in the paper's order. Hue is a rotation in YIQ
space (a linear approximation of the HSV hue shift). The min-IoU rule differs from ssd.pytorch's (whose
``overlap.min() < min_iou and max_iou < overlap.max()`` test never rejects) and follows Caffe/torchvision: a
crop is accepted when some box with its centre inside has IoU >= the option; an image without boxes takes any
crop.

All randomness comes from torch's RNG (``generator`` or, by default, the global one that ``DataLoader`` seeds
per worker), so a run is reproducible from its seeds; no ``random``/NumPy RNG is used.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image, ImageStat

from .preprocess import IMAGENET, Preprocess

__all__ = [
    "CROP_OPTIONS", "SSDTrainTransform", "SSDEvalTransform", "sample_zoom_out", "sample_iou_crop",
    "photometric_matrix",
]

#: ssd.pytorch's sample options: ``None`` = keep the whole image, a float = min IoU, ``-inf`` = any crop.
CROP_OPTIONS: tuple[Optional[float], ...] = (None, 0.1, 0.3, 0.5, 0.7, 0.9, float("-inf"))

BoxesLike = Union[torch.Tensor, np.ndarray, Sequence[Sequence[float]]]
_GRAY = np.array([0.299, 0.587, 0.114])  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _rand(n: int, generator: Optional[torch.Generator]) -> list[float]:
    return torch.rand(n, generator=generator).tolist()


def _as_targets(boxes: BoxesLike, labels: BoxesLike) -> tuple[torch.Tensor, torch.Tensor]:
    b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    lab = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    if b.shape[0] != lab.shape[0]:
        raise ValueError(f"{b.shape[0]} boxes but {lab.shape[0]} labels")
    return b, lab


class SSDEvalTransform:
    """Resize to ``size x size`` (bilinear) and apply ``preprocess``; boxes (xyxy normalised) and labels pass
    unchanged."""

    def __init__(self, size: int = 300, preprocess: Preprocess = IMAGENET) -> None:
        self.size, self.preprocess = int(size), preprocess

    def __call__(self, image: Image.Image, boxes: BoxesLike,
                 labels: BoxesLike) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, lab = _as_targets(boxes, labels)
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        resized = rgb.resize((self.size, self.size), Image.BILINEAR, reducing_gap=3.0)
        return self.preprocess.to_tensor(resized), b, lab


def sample_zoom_out(width: float, height: float, max_ratio: float, p: float,
                    generator: Optional[torch.Generator] = None) -> tuple[float, float, float, float]:
    """Zoom-out ("expand") geometry: ``(canvas_w, canvas_h, left, top)`` in source pixels; the image sits at
    ``(left, top)`` of a canvas ``ratio`` times its size, ``ratio ~ U(1, max_ratio)`` with probability ``p``."""
    coin, r, u, v = _rand(4, generator)
    if coin >= p or max_ratio <= 1.0:
        return float(width), float(height), 0.0, 0.0
    ratio = 1.0 + (max_ratio - 1.0) * r
    cw, ch = width * ratio, height * ratio
    return cw, ch, (cw - width) * u, (ch - height) * v


def _first_valid_crop(boxes: torch.Tensor, rects: torch.Tensor, min_iou: float) -> int:
    """Index of the first candidate ``rects[T, 4]`` that keeps a box centre and reaches ``min_iou`` (-1: none).

    Vectorised over the T trials: the same outcome as testing them one after the other (first success wins).
    """
    if rects.shape[0] == 0:
        return -1
    if boxes.shape[0] == 0:
        return 0
    b, r = boxes[None, :, :], rects[:, None, :]  # [1, G, 4], [T, 1, 4]
    cx, cy = 0.5 * (b[..., 0] + b[..., 2]), 0.5 * (b[..., 1] + b[..., 3])
    keep = (cx > r[..., 0]) & (cx < r[..., 2]) & (cy > r[..., 1]) & (cy < r[..., 3])  # [T, G]
    iw = (torch.minimum(b[..., 2], r[..., 2]) - torch.maximum(b[..., 0], r[..., 0])).clamp(min=0)
    ih = (torch.minimum(b[..., 3], r[..., 3]) - torch.maximum(b[..., 1], r[..., 1])).clamp(min=0)
    inter = iw * ih
    union = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) + (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])
    iou = torch.where(keep, inter / (union - inter), torch.full_like(inter, -math.inf))
    ok = keep.any(dim=1) & (iou.max(dim=1).values >= min_iou)
    hits = torch.nonzero(ok)
    return int(hits[0, 0]) if hits.numel() else -1


def sample_iou_crop(boxes: torch.Tensor, width: float, height: float,
                    options: Sequence[Optional[float]] = CROP_OPTIONS, trials: int = 50,
                    min_scale: float = 0.3, max_aspect: float = 2.0, max_rounds: int = 50,
                    generator: Optional[torch.Generator] = None
                    ) -> tuple[tuple[float, float, float, float], torch.Tensor]:
    """Min-IoU random crop (SSD paper 2.2) of a ``width x height`` canvas holding ``boxes[G, 4]`` (pixels, xyxy).

    Returns ``(rect, keep)``: the crop ``(x0, y0, x1, y1)`` in canvas pixels and ``keep[G]`` (bool, box centre
    strictly inside the crop). Each side is ``U(min_scale, 1)`` of the canvas, aspect ``h / w`` in
    ``[1 / max_aspect, max_aspect]``; per option ``trials`` candidates are drawn at once and the first valid
    one wins. Bounded: after ``max_rounds`` options without a valid crop the whole canvas is returned
    (torchvision's RandomIoUCrop loops until it draws its keep-as-is option, e.g. for an image without boxes).
    """
    boxes = boxes.to(torch.float64)
    everything = torch.ones(boxes.shape[0], dtype=torch.bool)
    for _ in range(max_rounds):
        option = options[int(torch.randint(len(options), (1,), generator=generator))]
        if option is None:
            break
        u = torch.rand(trials, 4, generator=generator, dtype=torch.float64)
        w = width * (min_scale + (1.0 - min_scale) * u[:, 0])
        h = height * (min_scale + (1.0 - min_scale) * u[:, 1])
        x0, y0 = (width - w) * u[:, 2], (height - h) * u[:, 3]
        rects = torch.stack([x0, y0, x0 + w, y0 + h], dim=1)
        aspect_ok = ((h / w) >= 1.0 / max_aspect) & ((h / w) <= max_aspect)
        k = _first_valid_crop(boxes, rects[aspect_ok], float(option))
        if k >= 0:
            rect = tuple(float(v) for v in rects[aspect_ok][k])
            keep = _centres_inside(boxes, rect)
            return rect, keep
    return (0.0, 0.0, float(width), float(height)), everything


def _centres_inside(boxes: torch.Tensor, rect: tuple[float, ...]) -> torch.Tensor:
    cx, cy = 0.5 * (boxes[:, 0] + boxes[:, 2]), 0.5 * (boxes[:, 1] + boxes[:, 3])
    return (cx > rect[0]) & (cx < rect[2]) & (cy > rect[1]) & (cy < rect[3])


def _hue_rotation(turns: float) -> np.ndarray:
    """3x3 RGB matrix rotating the chroma plane of YIQ by ``turns`` of a full circle (hue shift)."""
    c, s = math.cos(2 * math.pi * turns), math.sin(2 * math.pi * turns)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return np.linalg.inv(_RGB_TO_YIQ) @ rot @ _RGB_TO_YIQ


def photometric_matrix(mean_rgb: Sequence[float], brightness: tuple[float, float] = (0.875, 1.125),
                       contrast: tuple[float, float] = (0.5, 1.5), saturation: tuple[float, float] = (0.5, 1.5),
                       hue: tuple[float, float] = (-0.05, 0.05), p: float = 0.5,
                       generator: Optional[torch.Generator] = None) -> np.ndarray:
    """Random photometric distortion (the steps and ranges of v2.RandomPhotometricDistort) as one affine colour
    map ``A[3, 4]``: ``rgb_out = A[:, :3] @ rgb + A[:, 3]`` (0..255 scale). ``mean_rgb`` is the image's mean
    colour, needed by contrast (blend with the mean grey level, as torchvision's ``adjust_contrast``)."""
    r = _rand(11, generator)
    a = np.hstack([np.eye(3), np.zeros((3, 1))])
    mean = np.append(np.asarray(mean_rgb, dtype=np.float64), 1.0)

    def then(lin: np.ndarray, off: np.ndarray | float = 0.0) -> np.ndarray:
        return np.hstack([lin @ a[:, :3], (lin @ a[:, 3] + off)[:, None]])

    def contrast_step(factor: float) -> np.ndarray:
        grey = float(_GRAY @ (a @ mean))
        return then(factor * np.eye(3), (1.0 - factor) * grey)

    def lerp(lo_hi: tuple[float, float], u: float) -> float:
        return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * u

    contrast_first = r[0] < 0.5
    if r[1] < p:
        a = then(lerp(brightness, r[2]) * np.eye(3))
    if contrast_first and r[3] < p:
        a = contrast_step(lerp(contrast, r[4]))
    if r[5] < p:
        s = lerp(saturation, r[6])
        a = then(s * np.eye(3) + (1.0 - s) * np.outer(np.ones(3), _GRAY))
    if r[7] < p:
        a = then(_hue_rotation(lerp(hue, r[8])))
    if not contrast_first and r[3] < p:
        a = contrast_step(lerp(contrast, r[4]))
    if r[9] < p:
        a = then(np.eye(3)[torch.randperm(3, generator=generator).tolist()])
    return a


def _apply_colour_matrix(image: Image.Image, matrix: np.ndarray) -> Image.Image:
    if np.allclose(matrix, np.hstack([np.eye(3), np.zeros((3, 1))])):
        return image
    return image.convert("RGB", tuple(float(x) for x in matrix.reshape(-1)))


def _render(image: Image.Image, origin: tuple[float, float], rect: tuple[float, float, float, float],
            size: int, fill: tuple[int, int, int], colour: Optional[np.ndarray]) -> Image.Image:
    """The ``rect`` (canvas pixels) of a ``fill``-coloured canvas holding ``image`` at ``origin``, resized to
    ``size x size``. Only the image part inside the crop is resampled; its destination edges are rounded to
    whole output pixels and the source box is recomputed from the rounded edges, so pixels and the analytic
    box map stay aligned to float precision (clamping at the image border moves an edge by < 1 output pixel)."""
    width, height = image.size
    (left, top), (x0, y0, x1, y1) = origin, rect
    sx, sy = size / (x1 - x0), size / (y1 - y0)
    out = Image.new("RGB", (size, size), fill)
    dx0, dx1 = round(max(0.0, (left - x0) * sx)), round(min(float(size), (left + width - x0) * sx))
    dy0, dy1 = round(max(0.0, (top - y0) * sy)), round(min(float(size), (top + height - y0) * sy))
    if dx1 <= dx0 or dy1 <= dy0:
        return out
    src = (min(max(dx0 / sx + x0 - left, 0.0), width), min(max(dy0 / sy + y0 - top, 0.0), height),
           min(max(dx1 / sx + x0 - left, 0.0), width), min(max(dy1 / sy + y0 - top, 0.0), height))
    # reducing_gap: a cheap integer box-reduction first when shrinking >= 3x (zoom-out), nearly lossless
    patch = image.resize((dx1 - dx0, dy1 - dy0), Image.BILINEAR, box=src, reducing_gap=3.0)
    if colour is not None:
        patch = _apply_colour_matrix(patch, colour)
    out.paste(patch, (dx0, dy0))
    return out


class SSDTrainTransform:
    """SSD training augmentation (SSD paper 2.2; see the module docstring for the steps and their order).

    ``(PIL image, boxes[G, 4] xyxy normalised, labels[G]) -> (Tensor[3, size, size], boxes[G', 4], labels[G'])``
    with ``G' <= G``: boxes whose centre leaves the crop, or narrower/lower than ``min_size`` output pixels,
    are dropped together with their labels. Randomness: ``generator`` or torch's global RNG only.
    """

    def __init__(self, size: int = 300, preprocess: Preprocess = IMAGENET, max_expand: float = 4.0,
                 p_expand: float = 0.5, p_photometric: float = 0.5, p_flip: float = 0.5,
                 crop_options: Sequence[Optional[float]] = CROP_OPTIONS,
                 min_size: float = 1.0, generator: Optional[torch.Generator] = None) -> None:
        self.size, self.preprocess = int(size), preprocess
        self.max_expand, self.p_expand = float(max_expand), float(p_expand)
        self.p_photometric, self.p_flip = float(p_photometric), float(p_flip)
        self.crop_options, self.min_size, self.generator = tuple(crop_options), float(min_size), generator
        # zoom-out fill = the mean colour, which becomes ~0 at the input (the paper's "mean values")
        self.fill = preprocess.neutral_pixel()

    def __call__(self, image: Image.Image, boxes: BoxesLike,
                 labels: BoxesLike) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        gen = self.generator
        b, lab = _as_targets(boxes, labels)
        image = image if image.mode == "RGB" else image.convert("RGB")
        width, height = image.size
        cw, ch, left, top = sample_zoom_out(width, height, self.max_expand, self.p_expand, gen)
        canvas_boxes = b * torch.tensor([width, height, width, height]) + torch.tensor([left, top, left, top])
        rect, keep = sample_iou_crop(canvas_boxes, cw, ch, self.crop_options, generator=gen)
        x0, y0, x1, y1 = rect
        origin = torch.tensor([x0, y0, x0, y0])
        extent = torch.tensor([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
        b = ((canvas_boxes[keep] - origin) / extent).clamp_(0.0, 1.0)
        lab = lab[keep]
        # the same number of draws whatever p is, so changing a probability never shifts the other streams
        mean_rgb = ImageStat.Stat(image).mean if self.p_photometric > 0 else (0.0, 0.0, 0.0)
        colour = photometric_matrix(mean_rgb, p=self.p_photometric, generator=gen)
        out = _render(image, (left, top), rect, self.size, self.fill, colour)
        if _rand(1, gen)[0] < self.p_flip:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
            b = torch.stack([1.0 - b[:, 2], b[:, 1], 1.0 - b[:, 0], b[:, 3]], dim=1)
        ok = ((b[:, 2] - b[:, 0]) * self.size >= self.min_size) & ((b[:, 3] - b[:, 1]) * self.size >= self.min_size)
        return self.preprocess.to_tensor(out), b[ok].contiguous(), lab[ok]

