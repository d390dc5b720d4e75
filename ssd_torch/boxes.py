"""Box formats and IoU on tensors (docs/CONTRACT.md "Conventions"): the torch twin of ``reference.boxes``.

Formats: ``xyxy`` = (x_min, y_min, x_max, y_max) and ``cxcywh`` = (centre x, centre y, width, height), both
normalised to [0, 1], continuous (no +1). Every function keeps the input's device and dtype.
"""
from __future__ import annotations

import threading

import torch

__all__ = ["xyxy_to_cxcywh", "cxcywh_to_xyxy", "box_area", "box_iou", "pairwise_inter_union", "scratch"]

_SCRATCH = threading.local()


def scratch(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, slot: int) -> torch.Tensor:
    """An uninitialised ``Tensor[shape]`` for temporaries, reused across calls on the CPU.

    On the CPU every fresh multi-MB tensor is a new mapping whose pages fault in on first touch, which costs
    more than the arithmetic done in it (the [B, G, P] IoU of a batch is ~20 MB); the batched matcher and
    NMS therefore keep a few growing per-thread buffers (``slot`` tells concurrent temporaries apart) and
    write into them with ``out=`` / in-place ops. On CUDA the caching allocator already does this.
    """
    numel = 1
    for n in shape:
        numel *= n
    device = torch.device(device)
    if device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    pool = getattr(_SCRATCH, "pool", None)
    if pool is None:
        pool = _SCRATCH.pool = {}
    key = (dtype, slot)
    buf = pool.get(key)
    if buf is None or buf.numel() < numel:
        buf = pool[key] = torch.empty(numel, dtype=dtype)
    return buf[:numel].view(shape)



def _check_boxes(b: torch.Tensor, name: str) -> None:
    """Raise unless ``b`` is a floating point tensor whose last axis holds 4 coordinates."""
    if not isinstance(b, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(b).__name__}")
    if b.dim() == 0 or b.shape[-1] != 4:
        raise ValueError(f"{name} must have shape [..., 4], got {tuple(b.shape)}")
    if not b.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {b.dtype}")


def xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    """``xyxy[..., 4] -> cxcywh[..., 4]``: ``cx = (x0 + x1) / 2``, ``w = x1 - x0`` (same for y)."""
    _check_boxes(b, "boxes")
    # Per-coordinate [..., N] planes keep the elementwise loops long (a [..., 2] slice loops over 2 elements).
    x0, y0, x1, y1 = b.unbind(-1)
    return torch.stack([(x0 + x1) / 2.0, (y0 + y1) / 2.0, x1 - x0, y1 - y0], dim=-1)


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    """``cxcywh[..., 4] -> xyxy[..., 4]``: ``x0 = cx - w / 2``, ``x1 = cx + w / 2`` (same for y)."""
    _check_boxes(b, "boxes")
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], dim=-1)


def box_area(b: torch.Tensor) -> torch.Tensor:
    """Area of ``xyxy[..., N, 4]`` boxes -> ``[..., N]``: ``(x1 - x0) * (y1 - y0)`` (negative sizes not clamped)."""
    _check_boxes(b, "boxes")
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def pairwise_inter_union(a: torch.Tensor, b: torch.Tensor,
                         use_scratch: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersection and union areas of ``xyxy`` boxes ``a[..., N, 4]`` x ``b[..., M, 4]`` -> two ``[..., N, M]``.

    The reference's arithmetic: ``inter = max(min(x1a, x1b) - max(x0a, x0b), 0) * (same for y)`` and
    ``union = (area_a + area_b) - inter``, on per-coordinate planes (long elementwise loops) and in place. With
    ``use_scratch`` the results live in :func:`scratch` slots 0 and 1 (valid until the next such call).
    """
    ax0, ay0, ax1, ay1 = (c.unsqueeze(-1) for c in a.unbind(-1))  # [..., N, 1]
    bx0, by0, bx1, by1 = (c.contiguous().unsqueeze(-2) for c in b.unbind(-1))  # [..., 1, M]
    shape = torch.broadcast_shapes(ax0.shape, bx0.shape)
    dtype = torch.promote_types(a.dtype, b.dtype)
    if use_scratch:
        inter, union, tmp = (scratch(shape, dtype, a.device, slot) for slot in range(3))
    else:
        inter, union, tmp = (torch.empty(shape, dtype=dtype, device=a.device) for _ in range(3))
    torch.minimum(ax1, bx1, out=inter).sub_(torch.maximum(ax0, bx0, out=tmp)).clamp_(min=0.0)
    torch.minimum(ay1, by1, out=union).sub_(torch.maximum(ay0, by0, out=tmp)).clamp_(min=0.0)
    inter.mul_(union)
    area_a = (ax1 - ax0) * (ay1 - ay0)
    area_b = (bx1 - bx0) * (by1 - by0)
    torch.add(area_a, area_b, out=union).sub_(inter)
    return inter, union


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Jaccard overlap of ``xyxy`` boxes ``a[..., N, 4]`` and ``b[..., M, 4]`` -> ``[..., N, M]`` (SSD paper §2.2).

    Leading dimensions broadcast, so ``[B, N, 4] x [M, 4] -> [B, N, M]``. ``iou = inter / (area_a + area_b -
    inter)`` with the intersection clamped at 0 per axis, in the reference's order of operations; a pair whose
    union is not positive (two empty boxes) gets IoU 0 rather than NaN, like the reference.
    """
    _check_boxes(a, "a")
    _check_boxes(b, "b")
    if a.dim() < 2 or b.dim() < 2:
        raise ValueError(f"box_iou needs [..., N, 4] and [..., M, 4], got {tuple(a.shape)} and {tuple(b.shape)}")
    inter, union = pairwise_inter_union(a, b)
    # union <= 0 only when inter == 0 (an overlap needs two positive extents), where the quotient is 0, -0 or
    # NaN: zeroing the non-positive-union lanes reproduces the reference's 0 exactly.
    return inter.div_(union).masked_fill_(union <= 0, 0.0)
