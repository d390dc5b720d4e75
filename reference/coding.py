"""Box encoding against priors (docs/CONTRACT.md "Encoding"; SSD paper eq. 2, with ssd.pytorch's variances).

``encode``: ``t = ((g_cx - d_cx) / (v0 * d_w), (g_cy - d_cy) / (v0 * d_h), log(g_w / d_w) / v1, log(g_h / d_h) / v1)``.
``decode``: the inverse, with the exponent argument clamped at ``DECODE_CLAMP = log(1000 / 16)`` before ``exp``
(so a wild prediction cannot overflow; the same clamp as torchvision's ``BoxCoder``).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .boxes import cxcywh_to_xyxy, xyxy_to_cxcywh

__all__ = ["DECODE_CLAMP", "encode", "decode", "check_variances"]

DECODE_CLAMP: float = math.log(1000.0 / 16.0)


def _check_pair(x: np.ndarray, priors: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Return float64 ``x[P, 4]`` and ``priors[P, 4]`` after checking their shapes agree."""
    x = np.asarray(x, dtype=np.float64)
    priors = np.asarray(priors, dtype=np.float64)
    if priors.ndim != 2 or priors.shape[1] != 4:
        raise ValueError(f"priors must have shape [P, 4], got {priors.shape}")
    if x.shape != priors.shape:
        raise ValueError(f"{name} must have the priors' shape {priors.shape}, got {x.shape}")
    return x, priors


def encode(gt_xyxy: np.ndarray, priors: np.ndarray,
           variances: Sequence[float] = (0.1, 0.2)) -> np.ndarray:
    """Offsets of the matched gt ``gt_xyxy[P, 4]`` (xyxy normalised) to ``priors[P, 4]`` (cxcywh) -> ``[P, 4]``.

    Needs positive gt widths/heights (the log of a non-positive ratio is -inf/NaN).
    """
    gt_xyxy, priors = _check_pair(gt_xyxy, priors, "gt_xyxy")
    v0, v1 = float(variances[0]), float(variances[1])
    g = xyxy_to_cxcywh(gt_xyxy)
    t_xy = (g[:, :2] - priors[:, :2]) / (v0 * priors[:, 2:])
    t_wh = np.log(g[:, 2:] / priors[:, 2:]) / v1
    return np.concatenate([t_xy, t_wh], axis=1)


def decode(loc: np.ndarray, priors: np.ndarray,
           variances: Sequence[float] = (0.1, 0.2)) -> np.ndarray:
    """Boxes predicted by offsets ``loc[P, 4]`` from ``priors[P, 4]`` (cxcywh) -> ``[P, 4]`` xyxy normalised.

    ``cx = d_cx + t_x * v0 * d_w``; ``w = d_w * exp(min(t_w * v1, DECODE_CLAMP))`` (same for y / h). No clamping
    to the image here; ``nms.postprocess`` clamps to [0, 1].
    """
    loc, priors = _check_pair(loc, priors, "loc")
    v0, v1 = float(variances[0]), float(variances[1])
    cxcy = priors[:, :2] + loc[:, :2] * v0 * priors[:, 2:]
    wh = priors[:, 2:] * np.exp(np.minimum(loc[:, 2:] * v1, DECODE_CLAMP))
    return cxcywh_to_xyxy(np.concatenate([cxcy, wh], axis=1))


def check_variances(variances: Sequence[float]) -> tuple[float, float]:
    """The two encoding variances ``(v0, v1)`` of docs/CONTRACT.md "Encoding" as floats; ValueError unless they
    are exactly two finite positive numbers. The one check of every layer (``ssd_torch.coding``,
    ``kernels.interop``, ``ssd_torch.modeling.model_config.ModelConfig``)."""
    items = () if isinstance(variances, (str, bytes)) or not hasattr(variances, "__len__") else tuple(variances)
    numbers = [float(v) for v in items if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)]
    if len(items) != 2 or len(numbers) != 2 or not all(math.isfinite(v) and v > 0 for v in numbers):
        raise ValueError(f"variances must be two finite positive numbers (centre, size), got {variances!r}")
    values = numbers
    return values[0], values[1]
