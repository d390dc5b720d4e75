"""Default boxes (priors) of SSD300 (docs/CONTRACT.md "Default boxes"; SSD paper §2.2 "Choosing scales and
aspect ratios").

``default_boxes(spec) -> [P, 4]`` cxcywh, normalised. Order: feature maps in order, cells row-major
(row i, then column j), and inside a cell ``(s_k, s_k)``, ``(s'_k, s'_k)`` with ``s'_k = sqrt(s_k * s_{k+1})``,
then for each extra aspect ratio ``ar``: ``(s_k*sqrt(ar), s_k/sqrt(ar))``, ``(s_k/sqrt(ar), s_k*sqrt(ar))``.

Presets: ``SSD300`` (the contract's layout: the paper's linear scales, centres ``(j + 0.5) / f_k``) and one per peer
whose trained weights ``ssd-import`` reads, each equal to that peer's own generator: ``SSD_PYTORCH_VOC``
(ssd.pytorch ``data/config.py`` ``voc`` + ``layers/functions/prior_box.py`` ``PriorBox``), ``LUFFICC_VOC``
(lufficc/SSD ``ssd/config/defaults.py`` ``MODEL.PRIORS`` + ``ssd/modeling/anchors/prior_box.py``; the same
numbers) and ``TORCHVISION_COCO`` (torchvision ``ssd300_vgg16``'s ``DefaultBoxGenerator``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["PriorSpec", "SSD300", "SSD_PYTORCH_VOC", "LUFFICC_VOC", "TORCHVISION_COCO", "PRESETS", "default_boxes",
           "boxes_per_cell", "num_priors"]


def _positive(name: str, values: tuple, integral: bool) -> None:
    """Raise ValueError unless every entry of ``values`` is a positive number (an int if ``integral``)."""
    for i, v in enumerate(values):
        ok_type = isinstance(v, (int, np.integer)) if integral else isinstance(v, (int, float, np.number))
        if isinstance(v, bool) or not ok_type or not v > 0 or not math.isfinite(v):
            kind = "a positive int" if integral else "a positive finite number"
            raise ValueError(f"PriorSpec.{name}[{i}] must be {kind}, got {v!r}")


@dataclass(frozen=True)
class PriorSpec:
    """Layout of the default boxes.

    feature_maps: side ``f_k`` of each square feature map, e.g. (38, 19, 10, 5, 3, 1).
    scales: ``s_1 .. s_m`` plus the extra final scale used only for ``s'_m`` (len = maps + 1; SSD300: last = 1.0).
    aspect_ratios: extra aspect ratios per map (each ``ar`` gives two boxes: ``ar`` and ``1/ar``).
    clip: clamp to [0, 1] (docs/CONTRACT.md "Default boxes": some unclipped sizes exceed 1).
    clip_centres: with ``clip``, whether the clamp covers ``cx, cy`` too (True: ``cx, cy, w, h``, as
        ssd.pytorch's and lufficc's ``PriorBox``) or only ``w, h`` (False: torchvision's ``DefaultBoxGenerator``,
        whose 10x10 map has centres up to 9.5 / 9.375 = 1.0133). Ignored without ``clip``.
    steps, image_size: optional cell stride in pixels; the centre becomes ``(j + 0.5) / (image_size / step)``
        instead of ``(j + 0.5) / f_k`` (ssd.pytorch / lufficc / torchvision layout, written as they write it, so
        that the float64 values are theirs bit for bit). Both or neither.
    """

    feature_maps: tuple[int, ...]
    scales: tuple[float, ...]
    aspect_ratios: tuple[tuple[int, ...], ...]
    clip: bool = True
    steps: tuple[int, ...] | None = None
    image_size: int | None = None
    clip_centres: bool = True

    def __post_init__(self) -> None:
        # Normalise lists to tuples so that the spec stays hashable and truly immutable.
        set_ = object.__setattr__
        set_(self, "feature_maps", tuple(self.feature_maps))
        set_(self, "scales", tuple(float(s) for s in self.scales))
        set_(self, "aspect_ratios", tuple(tuple(a) for a in self.aspect_ratios))
        if self.steps is not None:
            set_(self, "steps", tuple(self.steps))
        m = len(self.feature_maps)
        if m == 0:
            raise ValueError("PriorSpec.feature_maps must not be empty")
        _positive("feature_maps", self.feature_maps, integral=True)
        if len(self.scales) != m + 1:
            raise ValueError(
                f"PriorSpec.scales needs len(feature_maps) + 1 = {m + 1} entries (the last one is only used for "
                f"the extra box sqrt(s_k * s_k+1) of the last map), got {len(self.scales)}")
        _positive("scales", self.scales, integral=False)
        if len(self.aspect_ratios) != m:
            raise ValueError(f"PriorSpec.aspect_ratios needs one tuple per feature map ({m}), "
                             f"got {len(self.aspect_ratios)}")
        for k, ars in enumerate(self.aspect_ratios):
            _positive(f"aspect_ratios[{k}]", ars, integral=False)
        if (self.steps is None) != (self.image_size is None):
            raise ValueError("PriorSpec.steps and PriorSpec.image_size must be given together (or neither)")
        for flag in ("clip", "clip_centres"):
            if not isinstance(getattr(self, flag), (bool, np.bool_)):
                raise ValueError(f"PriorSpec.{flag} must be a bool, got {getattr(self, flag)!r}")
        if self.steps is not None:
            if len(self.steps) != m:
                raise ValueError(f"PriorSpec.steps needs one entry per feature map ({m}), got {len(self.steps)}")
            _positive("steps", self.steps, integral=False)
            _positive("image_size", (self.image_size,), integral=True)


#: The SSD300 layout of docs/CONTRACT.md "Default boxes": 8732 priors, centres ``(j + 0.5) / f_k``.
SSD300 = PriorSpec(
    feature_maps=(38, 19, 10, 5, 3, 1),
    scales=(0.1, 0.2, 0.375, 0.55, 0.725, 0.9, 1.0),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
    clip=True,
)

#: The strides of ssd.pytorch, lufficc and torchvision (pixels at a 300x300 input).
_PEER_STEPS = (8, 16, 32, 64, 100, 300)


def _from_pixel_sizes(min_sizes: tuple[int, ...], max_size: int, image_size: int = 300) -> tuple[float, ...]:
    """ssd.pytorch / lufficc write box sizes in pixels: ``min_sizes[k] / image_size`` is ``s_k`` and their
    ``max_sizes[k]`` equals ``min_sizes[k + 1]`` (the extra box is ``sqrt(min_k * max_k)``); the last
    ``max_size`` is the extra final scale."""
    return tuple(m / image_size for m in min_sizes) + (max_size / image_size,)


#: ssd.pytorch's VOC priors (``data/config.py`` ``voc``: min_sizes 30, 60, 111, 162, 213, 264, max_sizes up to
#: 315, steps 8..300, clip), computed by its ``PriorBox.forward``: all four coordinates clamped to [0, 1].
SSD_PYTORCH_VOC = PriorSpec(
    feature_maps=SSD300.feature_maps,
    scales=_from_pixel_sizes((30, 60, 111, 162, 213, 264), 315),
    aspect_ratios=SSD300.aspect_ratios,
    clip=True,
    steps=_PEER_STEPS,
    image_size=300,
)

#: lufficc/SSD's VOC SSD300 priors (``MODEL.PRIORS`` defaults: the same sizes, strides and clip as ssd.pytorch).
LUFFICC_VOC = SSD_PYTORCH_VOC

#: torchvision's ``ssd300_vgg16`` anchors: ``DefaultBoxGenerator([[2], [2, 3], [2, 3], [2, 3], [2], [2]],
#: scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05], steps=[8, 16, 32, 64, 100, 300])`` with its default
#: ``clip=True``, which clamps only the widths and heights.
TORCHVISION_COCO = PriorSpec(
    feature_maps=SSD300.feature_maps,
    scales=(0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05),
    aspect_ratios=SSD300.aspect_ratios,
    clip=True,
    steps=_PEER_STEPS,
    image_size=300,
    clip_centres=False,
)

#: Every named layout, by name (the names ``ssd-import`` and the docs use).
PRESETS: dict[str, PriorSpec] = {"ssd300": SSD300, "ssd.pytorch-voc": SSD_PYTORCH_VOC, "lufficc-voc": LUFFICC_VOC,
                                 "torchvision-coco": TORCHVISION_COCO}


def boxes_per_cell(spec: PriorSpec) -> list[int]:
    """Boxes per cell of each map: 2 square boxes + 2 per extra aspect ratio (SSD300: [4, 6, 6, 6, 4, 4])."""
    return [2 + 2 * len(ars) for ars in spec.aspect_ratios]


def num_priors(spec: PriorSpec) -> int:
    """Total number of priors ``P = sum_k f_k^2 * boxes_per_cell_k`` (SSD300: 8732)."""
    return sum(f * f * n for f, n in zip(spec.feature_maps, boxes_per_cell(spec)))


def _cell_sizes(s_k: float, s_next: float, aspect_ratios: tuple) -> list[tuple[float, float]]:
    """``(w, h)`` of the boxes of one cell, in docs/CONTRACT.md order."""
    sizes = [(s_k, s_k)]
    s_prime = math.sqrt(s_k * s_next)  # the extra square box of scale s'_k (paper §2.2)
    sizes.append((s_prime, s_prime))
    for ar in aspect_ratios:
        r = math.sqrt(ar)
        sizes.append((s_k * r, s_k / r))
        sizes.append((s_k / r, s_k * r))
    return sizes


def _cell_centres(spec: PriorSpec, k: int) -> np.ndarray:
    """Centres of the ``f_k`` cells of map ``k`` along one axis -> ``[f_k]`` float64 (the same for x and y)."""
    f = spec.feature_maps[k]
    idx = np.arange(f, dtype=np.float64)
    if spec.steps is None:
        return (idx + 0.5) / f
    return (idx + 0.5) / (spec.image_size / spec.steps[k])  # the peers' f_k = image_size / step, not f


def _clamp(boxes: np.ndarray, spec: PriorSpec) -> np.ndarray:
    """``clip``: clamp ``[P, 4]`` cxcywh to [0, 1], the centres too only with ``clip_centres``."""
    if not spec.clip:
        return boxes
    if spec.clip_centres:
        return np.clip(boxes, 0.0, 1.0)
    return np.concatenate([boxes[:, :2], np.clip(boxes[:, 2:], 0.0, 1.0)], axis=1)


def default_boxes(spec: PriorSpec = SSD300) -> np.ndarray:
    """All priors of ``spec`` -> ``[P, 4]`` cxcywh float64, normalised, in docs/CONTRACT.md order."""
    rows: list[tuple[float, float, float, float]] = []
    for k in range(len(spec.feature_maps)):
        sizes = _cell_sizes(spec.scales[k], spec.scales[k + 1], spec.aspect_ratios[k])
        centres = _cell_centres(spec, k).tolist()
        for cy in centres:  # row-major: row i (y), then column j (x)
            for cx in centres:
                rows.extend((cx, cy, w, h) for w, h in sizes)
    return _clamp(np.asarray(rows, dtype=np.float64).reshape(-1, 4), spec)
