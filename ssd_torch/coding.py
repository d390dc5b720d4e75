"""Box encoding against priors on tensors (docs/CONTRACT.md "Encoding"; SSD paper eq. 2 with ssd.pytorch's variances).

``encode``: ``t = ((g_cx - d_cx) / (v0 d_w), (g_cy - d_cy) / (v0 d_h), log(g_w / d_w) / v1, log(g_h / d_h) / v1)``;
``decode`` is its inverse with the exponent argument clamped at ``DECODE_CLAMP = log(1000 / 16)`` (taken from
``reference.coding``). Priors are ``cxcywh[P, 4]``; gt / decoded boxes are ``xyxy`` normalised; leading batch
dimensions broadcast against the priors.
"""
from __future__ import annotations

from typing import Sequence

import torch

from reference.coding import DECODE_CLAMP, check_variances

from .boxes import cxcywh_to_xyxy

__all__ = ["encode", "encode_planes", "decode"]


def _check_pair(x: torch.Tensor, priors: torch.Tensor, name: str) -> None:
    """Raise unless ``priors`` is ``[P, 4]`` and ``x`` is ``[..., P, 4]``."""
    for t, n in ((x, name), (priors, "priors")):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{n} must be a torch.Tensor, got {type(t).__name__}")
    if priors.dim() != 2 or priors.shape[1] != 4:
        raise ValueError(f"priors must have shape [P, 4], got {tuple(priors.shape)}")
    if x.dim() < 2 or x.shape[-2:] != priors.shape:
        raise ValueError(f"{name} must have shape [..., {priors.shape[0]}, 4], got {tuple(x.shape)}")


def encode_planes(gt_planes: Sequence[torch.Tensor], priors: torch.Tensor,
                  variances: Sequence[float] = (0.1, 0.2)) -> list[torch.Tensor]:
    """:func:`encode` on per-coordinate planes: ``(x0, y0, x1, y1)``, each ``[..., P]`` -> ``[t_x, t_y, t_w,
    t_h]``, each ``[..., P]``. Long contiguous planes keep the elementwise loops fast; the batched matcher uses
    it to mask background priors before the one final stack."""
    v0, v1 = check_variances(variances)
    x0, y0, x1, y1 = gt_planes
    d_cx, d_cy, d_w, d_h = priors.unbind(-1)
    # Same operations as reference.boxes.xyxy_to_cxcywh + reference.coding.encode, in the same order.
    g_cx, g_cy, g_w, g_h = (x0 + x1) / 2.0, (y0 + y1) / 2.0, x1 - x0, y1 - y0
    return [(g_cx - d_cx) / (v0 * d_w), (g_cy - d_cy) / (v0 * d_h),
            torch.log(g_w / d_w) / v1, torch.log(g_h / d_h) / v1]


def encode(gt_xyxy: torch.Tensor, priors: torch.Tensor,
           variances: Sequence[float] = (0.1, 0.2)) -> torch.Tensor:
    """Offsets of matched gt boxes ``gt_xyxy[..., P, 4]`` (xyxy) to ``priors[P, 4]`` (cxcywh) -> ``[..., P, 4]``.

    Needs positive gt widths and heights (the log of a non-positive ratio is -inf / NaN).
    """
    _check_pair(gt_xyxy, priors, "gt_xyxy")
    if not gt_xyxy.is_floating_point():
        raise TypeError(f"gt_xyxy must be a floating point tensor, got {gt_xyxy.dtype}")
    return torch.stack(encode_planes(gt_xyxy.unbind(-1), priors, variances), dim=-1)


def decode(loc: torch.Tensor, priors: torch.Tensor,
           variances: Sequence[float] = (0.1, 0.2)) -> torch.Tensor:
    """Boxes predicted by offsets ``loc[..., P, 4]`` from ``priors[P, 4]`` (cxcywh) -> ``[..., P, 4]`` xyxy.

    ``cx = d_cx + t_x v0 d_w``; ``w = d_w exp(min(t_w v1, DECODE_CLAMP))``. No clamping to the image here.
    """
    _check_pair(loc, priors, "loc")
    v0, v1 = check_variances(variances)
    t_x, t_y, t_w, t_h = loc.unbind(-1)
    d_cx, d_cy, d_w, d_h = priors.unbind(-1)
    cx = d_cx + t_x * v0 * d_w
    cy = d_cy + t_y * v0 * d_h
    w = d_w * torch.exp(torch.clamp(t_w * v1, max=DECODE_CLAMP))
    h = d_h * torch.exp(torch.clamp(t_h * v1, max=DECODE_CLAMP))
    return cxcywh_to_xyxy(torch.stack([cx, cy, w, h], dim=-1))
