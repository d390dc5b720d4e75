"""MultiBox loss with batched hard-negative mining (docs/CONTRACT.md "Loss"; SSD paper §2.2 "Training objective" and
"Hard negative mining"): the torch twin of ``reference.loss.multibox_loss``.

``ce[b, p] = logsumexp(conf[b, p]) - conf[b, p, label[b, p]]``; positives are ``label > 0`` (``n_i`` per image,
``N = sum n_i``); the hard negatives of image i are the ``min(k_i, #negatives_i)`` background priors with the
largest ``ce``, ``k_i = floor(neg_pos_ratio * n_i)`` if ``n_i > 0`` else ``min_negatives`` (default 0, the paper).
``loc = sum_pos smooth_l1(pred - target)`` (beta = 1), ``conf = sum_{pos ∪ hard neg} ce``; both are returned
divided by ``max(N, 1)``.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from reference.loss import check_min_negatives

from .matching import match_batch

__all__ = ["LossParts", "multibox_loss_from_targets", "MultiBoxLoss", "hard_negative_mask", "hard_negative_sum"]


class LossParts(NamedTuple):
    """The two loss terms (0-dim tensors, already divided by ``max(N, 1)``) and ``num_pos = N`` (0-dim int64)."""

    loc: torch.Tensor
    conf: torch.Tensor
    num_pos: torch.Tensor


def _check_targets(loc: torch.Tensor, conf: torch.Tensor, labels: torch.Tensor, loc_targets: torch.Tensor) -> None:
    """Raise ValueError unless loc ``[B, P, 4]``, conf ``[B, P, C]``, labels ``[B, P]``, loc_targets ``[B, P, 4]``."""
    if loc.dim() != 3 or loc.shape[-1] != 4:
        raise ValueError(f"loc must have shape [B, P, 4], got {tuple(loc.shape)}")
    b, p = loc.shape[:2]
    if conf.dim() != 3 or tuple(conf.shape[:2]) != (b, p) or conf.shape[2] < 2:
        raise ValueError(f"conf must have shape [B={b}, P={p}, C>=2], got {tuple(conf.shape)}")
    if tuple(labels.shape) != (b, p) or labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor [B={b}, P={p}], got {labels.dtype} {tuple(labels.shape)}")
    if tuple(loc_targets.shape) != (b, p, 4):
        raise ValueError(f"loc_targets must have shape [B={b}, P={p}, 4], got {tuple(loc_targets.shape)}")


def hard_negative_mask(ce: torch.Tensor, positive: torch.Tensor, neg_pos_ratio: float,
                       min_negatives: int = 0) -> torch.Tensor:
    """``Tensor[B, P]`` bool: the ``min(k_i, #neg_i)`` background priors of each row with the largest ``ce``
    (SSD paper §2.2; ``k_i`` as in :func:`_num_hard_negatives`), for all rows at once.

    Each row is sorted by ``ce`` descending with positives pushed to the end (``-inf``); rank ``r`` is kept
    when ``r < k_i``. Since ``k_i <= #neg_i``, no positive is ever ranked inside the kept prefix. Ties among
    negatives may be broken either way: the loss only reads the sum over the kept set, which ties do not change.
    """
    k = _num_hard_negatives(positive, neg_pos_ratio, min_negatives)
    scores = ce.detach().masked_fill(positive, float("-inf"))
    order = scores.argsort(dim=1, descending=True)
    ranks = torch.arange(ce.shape[1], device=ce.device)[None, :]
    return torch.zeros_like(positive).scatter_(1, order, ranks < k[:, None])


def _num_hard_negatives(positive: torch.Tensor, neg_pos_ratio: float, min_negatives: int = 0) -> torch.Tensor:
    """``min(k_i, #negatives_i)`` per row of ``positive[B, P]`` -> ``[B]`` int64, with ``k_i = floor(neg_pos_ratio
    * n_i)`` if ``n_i > 0`` else ``min_negatives`` (docs/CONTRACT.md "Loss"; ``reference.loss.num_hard_negatives``)."""
    num_pos = positive.sum(dim=1)
    num_neg = positive.shape[1] - num_pos
    if float(neg_pos_ratio).is_integer():  # the usual 3: exact integer arithmetic, no float64 on the device
        wanted = num_pos * int(neg_pos_ratio)
    else:
        wanted = torch.floor(num_pos.to(torch.float64) * float(neg_pos_ratio)).to(torch.int64)
    if min_negatives:  # skipped at 0, so the paper's default runs exactly the operations it always ran
        wanted = torch.where(num_pos > 0, wanted, torch.full_like(wanted, int(min_negatives)))
    return torch.minimum(wanted, num_neg)


def hard_negative_sum(ce: torch.Tensor, positive: torch.Tensor, neg_pos_ratio: float,
                      use_topk: bool = True, min_negatives: int = 0) -> torch.Tensor:
    """``sum_i`` of the ``k_i`` largest background ``ce[i, p]`` (SSD paper §2.2 hard negative mining) -> 0-dim.

    ``use_topk``: one ``topk`` of width ``max_i k_i`` (needs that maximum on the host: a sync on CUDA, free on
    the CPU, and ~6x cheaper there than a full sort); otherwise the sync-free full-sort
    :func:`hard_negative_mask`. A top-k sum does not depend on how ties are broken, so both are exact.
    """
    if not use_topk:
        mask = hard_negative_mask(ce, positive, neg_pos_ratio, min_negatives)
        return torch.where(mask, ce, torch.zeros_like(ce)).sum()
    k = _num_hard_negatives(positive, neg_pos_ratio, min_negatives)
    k_max = int(k.max()) if k.numel() else 0
    values = ce.masked_fill(positive, float("-inf")).topk(k_max, dim=1).values  # [B, k_max], descending
    keep = torch.arange(k_max, device=ce.device)[None, :] < k[:, None]
    return torch.where(keep, values, torch.zeros_like(values)).sum()  # where, not *: the -inf lanes stay out


def multibox_loss_from_targets(loc: torch.Tensor, conf: torch.Tensor, labels: torch.Tensor,
                               loc_targets: torch.Tensor, neg_pos_ratio: float = 3,
                               min_negatives: int = 0) -> LossParts:
    """The SSD loss of a batch from matched targets (``ssd_torch.matching.match_batch``).

    loc ``[B, P, 4]`` predicted offsets, conf ``[B, P, C]`` logits, labels ``[B, P]`` int (0 = background),
    loc_targets ``[B, P, 4]`` encoded offsets (read only where ``labels > 0``). ``min_negatives``: hard negatives
    kept in an image without positives (0, the paper: such an image contributes nothing). The sums run in at
    least float32 (half-precision inputs are upcast). A batch with no positive gives exact zeros that still
    carry a gradient (with ``min_negatives > 0``: the mined negatives' ce, divided by 1).
    """
    _check_targets(loc, conf, labels, loc_targets)
    check_min_negatives(min_negatives)
    dtype = torch.promote_types(loc.dtype, torch.float32)
    loc, conf = loc.to(dtype), conf.to(dtype)
    labels = labels.to(device=conf.device, dtype=torch.int64)
    positive = labels > 0
    num_pos = positive.sum()
    ce = F.cross_entropy(conf.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
    # where() instead of boolean indexing: no data-dependent shapes, hence no device sync.
    conf_sum = torch.where(positive, ce, torch.zeros_like(ce)).sum()
    conf_sum = conf_sum + hard_negative_sum(ce, positive, neg_pos_ratio, use_topk=ce.device.type == "cpu",
                                            min_negatives=min_negatives)
    l1 = F.smooth_l1_loss(loc, loc_targets.to(dtype), reduction="none", beta=1.0).sum(dim=-1)
    loc_sum = torch.where(positive, l1, torch.zeros_like(l1)).sum()
    denom = num_pos.clamp(min=1).to(dtype)
    return LossParts(loc=loc_sum / denom, conf=conf_sum / denom, num_pos=num_pos)


class MultiBoxLoss(nn.Module):
    """Match + encode a padded gt batch (``match_batch``) and compute :func:`multibox_loss_from_targets`.

    ``priors`` ``Tensor[P, 4]`` cxcywh is a non-persistent buffer (it follows ``.to(device)`` but stays out of
    ``state_dict``). ``validate`` is passed to ``match_batch`` (value checks that sync on CUDA).
    ``min_negatives``: see :func:`multibox_loss_from_targets`.
    """

    priors: torch.Tensor

    def __init__(self, priors: torch.Tensor, iou_threshold: float = 0.5, neg_pos_ratio: float = 3,
                 variances: Sequence[float] = (0.1, 0.2), backend: str = "torch", validate: bool = True,
                 min_negatives: int = 0) -> None:
        super().__init__()
        if priors.dim() != 2 or priors.shape[1] != 4:
            raise ValueError(f"priors must have shape [P, 4], got {tuple(priors.shape)}")
        if neg_pos_ratio < 0:
            raise ValueError(f"neg_pos_ratio must be >= 0, got {neg_pos_ratio}")
        check_min_negatives(min_negatives)
        self.register_buffer("priors", priors.detach().clone(), persistent=False)
        self.iou_threshold = float(iou_threshold)
        self.neg_pos_ratio = neg_pos_ratio
        self.min_negatives = int(min_negatives)
        self.variances = (float(variances[0]), float(variances[1]))
        self.backend = backend
        self.validate = validate

    def forward(self, loc: torch.Tensor, conf: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                counts: torch.Tensor) -> LossParts:
        """loc ``[B, P, 4]``, conf ``[B, P, C]``; gt_boxes ``[B, G, 4]`` xyxy, gt_labels ``[B, G]``, counts ``[B]``."""
        with torch.no_grad():
            labels, loc_targets = match_batch(gt_boxes, gt_labels, counts, self.priors, self.iou_threshold,
                                              self.variances, backend=self.backend, validate=self.validate)
        if self.validate and bool((labels >= conf.shape[-1]).any()):
            raise ValueError(f"a gt label is >= the number of classes {conf.shape[-1]}")
        return multibox_loss_from_targets(loc, conf, labels, loc_targets, self.neg_pos_ratio, self.min_negatives)

    def extra_repr(self) -> str:
        return (f"num_priors={self.priors.shape[0]}, iou_threshold={self.iou_threshold}, "
                f"neg_pos_ratio={self.neg_pos_ratio}, min_negatives={self.min_negatives}, "
                f"variances={self.variances}, backend={self.backend!r}")
