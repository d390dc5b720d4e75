"""Batched prior matching + target encoding for a padded batch (docs/CONTRACT.md "Matching" and "Encoding").

One call handles ``B`` images with up to ``G`` ground-truth boxes each (padded; ``counts[b]`` are real) against
``P`` priors with no Python loop over images or boxes. Rules, per image (SSD paper §2.2 "Matching strategy"):

1. ``iou[g, p]`` between the real gts and the priors (priors converted to xyxy); padded gts never take part.
2. ``best_gt[p] = argmax_g iou`` and 3. ``best_prior[g] = argmax_p iou``: the first index wins a tie
   (``torch.max(dim)`` documents that it returns the first maximal index).
4. Forcing "for g in order: best_gt[best_prior[g]] = g" means the *largest* g that wants a prior gets it; that
   is computed as a ``scatter_reduce(amax)`` of gt indices onto priors, which is order-free and hence
   deterministic on every device (a plain scatter would let the device pick the winner).
5. ``label[p] = gt_label[best_gt[p]]`` if ``best_iou[p] >= iou_threshold`` (forced priors count as IoU 2), else 0;
   ``loc_targets[p] = encode(gt[best_gt[p]], prior[p])`` for positives and 0 for background priors.
"""
from __future__ import annotations

from typing import Sequence

import torch

from reference.matching import check_padded_ground_truth

from .boxes import cxcywh_to_xyxy, pairwise_inter_union
from .backend import BACKENDS, resolve_backend
from .coding import encode_planes

__all__ = ["BACKENDS", "match_batch"]



def _resolve_backend(backend: str, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """Map ``backend`` to the implementation that runs; ``"auto"`` follows :func:`ssd_torch.backend.resolve_backend`."""
    return resolve_backend(backend, device, dtype, what="matching backend")


def _check_inputs(gt_boxes: torch.Tensor, gt_labels: torch.Tensor, counts: torch.Tensor,
                  priors: torch.Tensor) -> None:
    """Shape and dtype checks that need no device synchronisation."""
    if gt_boxes.dim() != 3 or gt_boxes.shape[-1] != 4:
        raise ValueError(f"gt_boxes must have shape [B, G, 4], got {tuple(gt_boxes.shape)}")
    b, g = gt_boxes.shape[:2]
    if tuple(gt_labels.shape) != (b, g):
        raise ValueError(f"gt_labels must have shape [B, G] = {(b, g)}, got {tuple(gt_labels.shape)}")
    if tuple(counts.shape) != (b,):
        raise ValueError(f"counts must have shape [B] = {(b,)}, got {tuple(counts.shape)}")
    if priors.dim() != 2 or priors.shape[1] != 4:
        raise ValueError(f"priors must have shape [P, 4], got {tuple(priors.shape)}")
    if not gt_boxes.is_floating_point() or not priors.is_floating_point():
        raise TypeError(f"gt_boxes and priors must be floating point, got {gt_boxes.dtype} and {priors.dtype}")
    if gt_labels.is_floating_point() or counts.is_floating_point():
        raise TypeError(f"gt_labels and counts must be integer tensors, got {gt_labels.dtype} and {counts.dtype}")


def match_batch(gt_boxes: torch.Tensor, gt_labels: torch.Tensor, counts: torch.Tensor, priors: torch.Tensor,
                iou_threshold: float = 0.5, variances: Sequence[float] = (0.1, 0.2), backend: str = "torch",
                validate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Match a padded batch of gt boxes to priors and encode the regression targets.

    Args:
        gt_boxes: ``Tensor[B, G, 4]`` xyxy normalised; rows ``>= counts[b]`` are padding (any values).
        gt_labels: ``Tensor[B, G]`` int, classes 1..C-1 for real boxes.
        counts: ``Tensor[B]`` int, number of real boxes per image (0 allowed).
        priors: ``Tensor[P, 4]`` cxcywh normalised.
        backend: ``"torch"``, ``"numba"`` (``kernels.interop``) or ``"auto"``.
        validate: docs/CONTRACT.md "Matching" step 6 (``reference.matching.check_padded_ground_truth``: counts
            in [0, G], finite non-degenerate real boxes, labels >= 1; ``ValueError``), once, whichever backend
            runs; it reads the values, a host sync on CUDA. ``False`` checks nothing, the kernels included.

    Returns:
        ``labels[B, P]`` int64 (0 = background) and ``loc_targets[B, P, 4]`` (0 for background priors) in the
        promoted floating dtype of ``gt_boxes`` and ``priors``, on the priors' device.
    """
    _check_inputs(gt_boxes, gt_labels, counts, priors)
    dtype = torch.promote_types(gt_boxes.dtype, priors.dtype)
    device = priors.device
    gt_boxes, priors = gt_boxes.to(device=device, dtype=dtype), priors.to(dtype=dtype)
    gt_labels, counts = gt_labels.to(device=device, dtype=torch.int64), counts.to(device=device, dtype=torch.int64)
    if validate:  # docs/CONTRACT.md "Matching" step 6, the reference's one validator (a host sync on CUDA)
        check_padded_ground_truth(gt_boxes.detach().to("cpu", torch.float64), gt_labels.cpu(), counts.cpu())
    if _resolve_backend(backend, device, dtype) == "numba":
        return _match_numba(gt_boxes, gt_labels, counts, priors, iou_threshold, variances)
    return _match_torch(gt_boxes, gt_labels, counts, priors, iou_threshold, variances)


def _match_numba(gt_boxes: torch.Tensor, gt_labels: torch.Tensor, counts: torch.Tensor, priors: torch.Tensor,
                 iou_threshold: float, variances: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Delegate to the numba kernels, which never validate again: :func:`match_batch` checked the values
    already (``validate=True``) or was told not to (``validate=False``: no host sync on CUDA)."""
    try:  # imported lazily, as in ssd_torch.nms: the torch path never loads numba
        from kernels.interop import ValueChecks, match_batch_numba
    except ImportError as exc:  # also raised when kernels.interop exists but lacks the function
        raise ImportError(f"backend='numba' needs kernels.interop.match_batch_numba, which failed to import: "
                          f"{exc}") from exc
    return match_batch_numba(gt_boxes, gt_labels, counts, priors, iou_threshold, variances,
                             value_checks=ValueChecks.NEVER)


# Padded gt rows are replaced by this box, far outside every normalised prior: its IoU with any prior is exactly
# 0 (area 1, so never 0/0), and since padding sits after the real gts, the first-index tie rule makes a real gt
# win every 0-IoU tie. Cheaper than masking the whole [B, G, P] IoU tensor.
_FAR_BOX = (-10.0, -10.0, -9.0, -9.0)


def _best_gt_per_prior(gt_boxes: torch.Tensor, valid: torch.Tensor,
                       priors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``best_iou[B, P]``, ``best_gt[B, P]`` and ``best_prior[B, G]`` (docs/CONTRACT.md matching steps 1-3).

    ``torch.max(dim)`` documents that it returns the first maximal index, the tie rule of docs/CONTRACT.md.
    """
    far = torch.tensor(_FAR_BOX, dtype=gt_boxes.dtype, device=gt_boxes.device)
    boxes = torch.where(valid[:, :, None], gt_boxes, far)
    inter, union = pairwise_inter_union(boxes, cxcywh_to_xyxy(priors), use_scratch=True)  # [B, G, P]
    iou = inter.div_(union)  # real gts have positive area (validated), so union > 0 everywhere
    best_prior = iou.max(dim=2).indices  # [B, G]
    best_iou = iou.amax(dim=1)  # [B, P]
    # First gt attaining the max: the largest (G - g) among the maxima. max(dim=1)/argmax(dim=1) would do the
    # same but reduce the middle axis several times slower than amax on the CPU.
    g = iou.shape[1]
    rank = torch.arange(g, 0, -1, dtype=iou.dtype, device=iou.device)[None, :, None]  # G - g
    is_max = torch.eq(iou, best_iou[:, None, :], out=union)  # 1.0 / 0.0, written into the free buffer
    best_gt = g - is_max.mul_(rank).amax(dim=1).to(torch.int64)
    return best_iou, best_gt, best_prior


def _match_torch(gt_boxes: torch.Tensor, gt_labels: torch.Tensor, counts: torch.Tensor, priors: torch.Tensor,
                 iou_threshold: float, variances: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The pure-torch implementation of :func:`match_batch` (inputs already checked and on one device)."""
    b, g = gt_boxes.shape[:2]
    p = priors.shape[0]
    if g == 0:  # no gt anywhere: every prior is background
        return (torch.zeros(b, p, dtype=torch.int64, device=priors.device),
                torch.zeros(b, p, 4, dtype=priors.dtype, device=priors.device))
    gt_index = torch.arange(g, device=priors.device)
    valid = gt_index[None, :] < counts[:, None]  # [B, G]
    best_iou, best_gt, best_prior = _best_gt_per_prior(gt_boxes, valid, priors)
    # Forcing: the largest real gt index that wants prior p wins it ("later gt wins"), independent of order.
    forced = torch.full((b, p), -1, dtype=torch.int64, device=priors.device)
    src = torch.where(valid, gt_index[None, :].expand(b, g), torch.full_like(best_prior, -1))
    forced.scatter_reduce_(1, best_prior, src, reduce="amax", include_self=True)
    is_forced = forced >= 0
    best_gt = torch.where(is_forced, forced, best_gt)
    best_iou = best_iou.masked_fill(is_forced, 2.0)  # docs/CONTRACT.md step 4: a forced prior counts as IoU 2
    # An image without gt is all background even for a threshold <= 0 (its best IoU is a padding 0).
    matched = (best_iou >= iou_threshold) & (counts > 0)[:, None]
    labels = torch.where(matched, torch.gather(gt_labels, 1, best_gt), torch.zeros_like(best_gt))
    # Per-coordinate [B, P] planes (gather, encode, mask) and one final stack: [B, P, 4] ops loop over 4 lanes.
    matched = [torch.gather(plane, 1, best_gt) for plane in gt_boxes.unbind(-1)]  # xyxy of each prior's gt
    positive = labels > 0
    zero = torch.zeros((), dtype=priors.dtype, device=priors.device)
    # Background priors may be "matched" to padding (log 0 = -inf): where() discards those lanes exactly.
    targets = [torch.where(positive, t, zero) for t in encode_planes(matched, priors, variances)]
    return labels, torch.stack(targets, dim=-1)
