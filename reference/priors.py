"""Default boxes (priors) of SSD300 (docs/CONTRACT.md "Default boxes"; SSD paper §2.2 "Choosing scales and
aspect ratios").

``default_boxes(spec) -> [P, 4]`` cxcywh, normalised. Order: feature maps in order, cells row-major
(row i, then column j), and inside a cell ``(s_k, s_k)``, ``(s'_k, s'_k)`` with ``s'_k = sqrt(s_k * s_{k+1})``,
then for each extra aspect ratio ``ar``: ``(s_k*sqrt(ar), s_k/sqrt(ar))``, ``(s_k/sqrt(ar), s_k*sqrt(ar))``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["PriorSpec", "SSD300", "SSD300_STEPS", "default_boxes", "boxes_per_cell", "num_priors"]


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
    clip: clamp ``cx, cy, w, h`` to [0, 1] (the seed's table lists the unclipped sizes).
    steps, image_size: optional cell stride in pixels; the centre becomes ``(j + 0.5) * step / image_size``
        instead of ``(j + 0.5) / f_k`` (ssd.pytorch / torchvision layout). Both or neither.
    """

    feature_maps: tuple[int, ...]
    scales: tuple[float, ...]
    aspect_ratios: tuple[tuple[int, ...], ...]
    clip: bool = True
    steps: tuple[int, ...] | None = None
    image_size: int | None = None

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
        if self.steps is not None:
            if len(self.steps) != m:
                raise ValueError(f"PriorSpec.steps needs one entry per feature map ({m}), got {len(self.steps)}")
            _positive("steps", self.steps, integral=False)
            _positive("image_size", (self.image_size,), integral=True)


#: The seed's SSD300 layout (docs/CONTRACT.md): 8732 priors, centres ``(j + 0.5) / f_k``.
SSD300 = PriorSpec(
    feature_maps=(38, 19, 10, 5, 3, 1),
    scales=(0.1, 0.2, 0.375, 0.55, 0.725, 0.9, 1.0),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
    clip=True,
)

#: Same scales and ratios, centres from the ssd.pytorch strides ``(j + 0.5) * step / 300``.
SSD300_STEPS = PriorSpec(
    feature_maps=SSD300.feature_maps,
    scales=SSD300.scales,
    aspect_ratios=SSD300.aspect_ratios,
    clip=True,
    steps=(8, 16, 32, 64, 100, 300),
    image_size=300,
)


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


def default_boxes(spec: PriorSpec = SSD300) -> np.ndarray:
    """All priors of ``spec`` -> ``[P, 4]`` cxcywh float64, normalised, in docs/CONTRACT.md order."""
    rows: list[tuple[float, float, float, float]] = []
    for k, f in enumerate(spec.feature_maps):
        sizes = _cell_sizes(spec.scales[k], spec.scales[k + 1], spec.aspect_ratios[k])
        for i in range(f):  # row-major: row i (y), then column j (x)
            for j in range(f):
                if spec.steps is None:
                    cx, cy = (j + 0.5) / f, (i + 0.5) / f
                else:
                    cx = (j + 0.5) * spec.steps[k] / spec.image_size
                    cy = (i + 0.5) * spec.steps[k] / spec.image_size
                rows.extend((cx, cy, w, h) for w, h in sizes)
    out = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    if spec.clip:
        out = np.clip(out, 0.0, 1.0)
    return out
