"""Scalar float32 box arithmetic shared by the CPU twins (``@njit``) and the CUDA kernels (device functions).

Each function is written once in plain Python and compiled twice, so the CPU twin, the CUDA kernel and the
CUDA simulator all run the *same* arithmetic in the *same* order as ``reference.boxes.box_iou`` and
``reference.coding.encode`` (docs/CONTRACT.md "Matching", "Encoding"), only in float32:

* ``iou = inter / (area_a + area_b - inter)``, intersection clamped at 0 per axis, IoU 0 when the union is 0;
* ``t = ((g_cx - d_cx) / (v0 * d_w), (g_cy - d_cy) / (v0 * d_h), log(g_w / d_w) / v1, log(g_h / d_h) / v1)``.

Constants are ``np.float32`` so that numba never promotes the arithmetic to float64 (a Python float literal
would, and on a GPU float64 is both slower and a different rounding than the torch layer's float32).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, njit

__all__ = ["iou_scalar", "encode_scalar", "iou_cpu", "encode_cpu", "iou_cuda", "encode_cuda", "HALF", "ZERO"]

ZERO = np.float32(0.0)
HALF = np.float32(0.5)


def iou_scalar(ax0: float, ay0: float, ax1: float, ay1: float, area_a: float,
               bx0: float, by0: float, bx1: float, by1: float, area_b: float) -> float:
    """IoU of two xyxy boxes (normalised) given their precomputed areas ``(x1 - x0) * (y1 - y0)``; float32."""
    iw = min(ax1, bx1) - max(ax0, bx0)
    ih = min(ay1, by1) - max(ay0, by0)
    iw = max(iw, ZERO)
    ih = max(ih, ZERO)
    inter = iw * ih
    union = area_a + area_b - inter
    if union > ZERO:
        return inter / union
    return ZERO  # two zero-area boxes: 0 rather than NaN, as reference.boxes.box_iou


def encode_scalar(gx0: float, gy0: float, gx1: float, gy1: float,
                  dcx: float, dcy: float, dw: float, dh: float,
                  v0: float, v1: float, out: np.ndarray) -> None:
    """Offsets of gt box ``g`` (xyxy) from prior ``d`` (cxcywh) into ``out[4]`` (docs/CONTRACT.md
    "Encoding"); float32."""
    gcx = (gx0 + gx1) / np.float32(2.0)
    gcy = (gy0 + gy1) / np.float32(2.0)
    gw = gx1 - gx0
    gh = gy1 - gy0
    out[0] = (gcx - dcx) / (v0 * dw)
    out[1] = (gcy - dcy) / (v0 * dh)
    out[2] = np.float32(math.log(gw / dw)) / v1
    out[3] = np.float32(math.log(gh / dh)) / v1


iou_cpu = njit(inline="always", cache=False)(iou_scalar)
encode_cpu = njit(inline="always", cache=False)(encode_scalar)
iou_cuda = cuda.jit(device=True, inline=True)(iou_scalar)
encode_cuda = cuda.jit(device=True, inline=True)(encode_scalar)
