"""MultiBox loss with hard negative mining (docs/CONTRACT.md "Loss"; SSD paper §2.2 "Training objective", "Hard
negative mining").

Per image: match the gt to the priors and encode the offsets (``match_and_encode``), then
``ce[p] = logsumexp(conf[p]) - conf[p, label[p]]``; positives are ``label > 0`` (``n_i`` of them); hard
negatives are the ``min(k_i, #negatives_i)`` background priors with the largest ``ce``, where
``k_i = floor(neg_pos_ratio * n_i)`` when ``n_i > 0`` and ``k_i = min_negatives`` otherwise (default 0, the paper:
an image without positives contributes nothing). ``loc = sum_pos sum_4 smooth_l1(pred - target)`` (beta = 1),
``conf = sum_{pos ∪ hard neg} ce``, both divided by ``max(N, 1)`` with ``N = sum_i n_i``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .coding import encode
from .matching import match

__all__ = ["match_and_encode", "logsumexp", "smooth_l1", "num_hard_negatives", "check_min_negatives",
           "multibox_loss"]


def match_and_encode(gt_boxes: np.ndarray, gt_labels: np.ndarray, priors: np.ndarray,
                     iou_threshold: float = 0.5,
                     variances: Sequence[float] = (0.1, 0.2)) -> tuple[np.ndarray, np.ndarray]:
    """Training targets of one image: ``labels[P]`` int64 and ``loc_targets[P, 4]`` float64.

    gt_boxes ``[G, 4]`` xyxy normalised, gt_labels ``[G]``, priors ``[P, 4]`` cxcywh. ``loc_targets`` are the
    ``encode``d offsets of each positive prior's matched gt and exactly **0 for background priors** (also when
    G = 0), so every layer agrees on them although the loss never reads them.
    """
    labels, matched_gt = match(gt_boxes, gt_labels, priors, iou_threshold)
    priors = np.asarray(priors, dtype=np.float64)
    loc_targets = np.zeros((priors.shape[0], 4), dtype=np.float64)
    pos = labels > 0
    if np.any(pos):
        gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
        loc_targets[pos] = encode(gt[matched_gt[pos]], priors[pos], variances)
    return labels, loc_targets


def logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Stable ``log(sum(exp(x)))`` along ``axis``: ``m + log(sum(exp(x - m)))`` with ``m = max(x)``."""
    m = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def smooth_l1(d: np.ndarray) -> np.ndarray:
    """Huber / smooth L1 with beta = 1 (Fast R-CNN eq. 3): ``0.5 d^2`` if ``|d| < 1`` else ``|d| - 0.5``."""
    a = np.abs(d)
    return np.where(a < 1.0, 0.5 * d * d, a - 0.5)


def num_hard_negatives(n_pos: int, n_neg: int, neg_pos_ratio: float, min_negatives: int = 0) -> int:
    """``min(k_i, n_neg)`` with ``k_i = floor(neg_pos_ratio * n_pos)`` if ``n_pos > 0`` else ``min_negatives``
    (docs/CONTRACT.md "Loss")."""
    wanted = int(neg_pos_ratio * n_pos) if n_pos > 0 else min_negatives
    return min(wanted, n_neg)


def _image_loss(loc: np.ndarray, conf: np.ndarray, labels: np.ndarray, loc_targets: np.ndarray,
                neg_pos_ratio: float, min_negatives: int) -> tuple[float, float, int]:
    """Unnormalised (loc sum, conf sum, n_i) of one image; loc ``[P, 4]``, conf ``[P, C]``."""
    pos = labels > 0
    n_pos = int(pos.sum())
    ce = logsumexp(conf, axis=1) - conf[np.arange(len(labels)), labels]
    loc_sum = float(smooth_l1(loc[pos] - loc_targets[pos]).sum())
    neg_ce = ce[labels == 0]
    num_neg = num_hard_negatives(n_pos, neg_ce.size, neg_pos_ratio, min_negatives)
    # The sum of the top-k does not depend on how ties are broken, so a plain sort is the whole rule.
    hard_neg_sum = float(np.sort(neg_ce)[::-1][:num_neg].sum())
    return loc_sum, float(ce[pos].sum()) + hard_neg_sum, n_pos


def multibox_loss(loc: np.ndarray, conf: np.ndarray, gt_boxes: list, gt_labels: list, priors: np.ndarray,
                  iou_threshold: float = 0.5, neg_pos_ratio: float = 3,
                  variances: Sequence[float] = (0.1, 0.2), min_negatives: int = 0) -> tuple[float, float, int]:
    """The SSD loss of a batch -> ``(loc_loss, conf_loss, num_pos)`` as Python ``float, float, int``.

    loc ``[B, P, 4]`` predicted offsets; conf ``[B, P, C]`` logits; gt_boxes a list of B arrays ``[G_i, 4]``
    (xyxy normalised), gt_labels a list of B arrays ``[G_i]`` (1..C-1); priors ``[P, 4]`` cxcywh.
    ``min_negatives``: hard negatives of an image without positives (0: none, the paper). Both losses are sums
    divided by ``max(N, 1)``.
    """
    loc = np.asarray(loc, dtype=np.float64)
    conf = np.asarray(conf, dtype=np.float64)
    priors = np.asarray(priors, dtype=np.float64)
    _check_batch(loc, conf, gt_boxes, gt_labels, priors)
    check_min_negatives(min_negatives)
    loc_total, conf_total, num_pos = 0.0, 0.0, 0
    for b in range(loc.shape[0]):
        labels, loc_targets = match_and_encode(gt_boxes[b], gt_labels[b], priors, iou_threshold, variances)
        if labels.max(initial=0) >= conf.shape[2]:
            raise ValueError(f"image {b}: gt label {labels.max()} >= number of classes {conf.shape[2]}")
        l_sum, c_sum, n = _image_loss(loc[b], conf[b], labels, loc_targets, neg_pos_ratio, min_negatives)
        loc_total, conf_total, num_pos = loc_total + l_sum, conf_total + c_sum, num_pos + n
    denom = max(num_pos, 1)
    return loc_total / denom, conf_total / denom, num_pos


def check_min_negatives(min_negatives: int) -> None:
    """``min_negatives`` must be an integer >= 0 (a count of priors); the one check every layer calls."""
    if isinstance(min_negatives, bool) or not isinstance(min_negatives, (int, np.integer)) or min_negatives < 0:
        raise ValueError(f"min_negatives must be an integer >= 0, got {min_negatives!r}")


def _check_batch(loc: np.ndarray, conf: np.ndarray, gt_boxes: list, gt_labels: list, priors: np.ndarray) -> None:
    """Shape checks for ``multibox_loss``: a clear ValueError naming the argument."""
    if priors.ndim != 2 or priors.shape[1] != 4:
        raise ValueError(f"priors must have shape [P, 4], got {priors.shape}")
    batch, num_priors = loc.shape[0] if loc.ndim else 0, priors.shape[0]
    if loc.shape != (batch, num_priors, 4):
        raise ValueError(f"loc must have shape [B, P={num_priors}, 4], got {loc.shape}")
    if conf.ndim != 3 or conf.shape[:2] != (batch, num_priors) or conf.shape[2] < 2:
        raise ValueError(f"conf must have shape [B={batch}, P={num_priors}, C>=2], got {conf.shape}")
    if len(gt_boxes) != batch or len(gt_labels) != batch:
        raise ValueError(f"gt_boxes and gt_labels need one entry per image (B={batch}), "
                         f"got {len(gt_boxes)} and {len(gt_labels)}")
