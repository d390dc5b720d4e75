"""Non-maximum suppression and SSD post-processing (docs/CONTRACT.md "NMS and post-processing"; ARCHITECTURE.md
"Tie-break rules").

``nms``: greedy, in stable score-descending order (lower index first on ties); a box is dropped when its IoU
with an already kept box is strictly greater than the threshold.
``postprocess``: softmax, decode, clamp to [0, 1]; per class c >= 1: score > threshold (strict), the ``top_k``
best (stable), NMS; then all classes (class ascending, NMS keep order inside a class) sorted by score with a
stable sort and cut at ``max_detections``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .boxes import box_iou
from .coding import decode

__all__ = ["nms", "softmax", "postprocess"]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS of ``boxes[N, 4]`` (xyxy) with ``scores[N]`` -> ``keep[K]`` int64 indices into the input,
    in kept order (score descending, stable)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != (boxes.shape[0],):
        raise ValueError(f"nms needs boxes [N, 4] and scores [N], got {boxes.shape} and {scores.shape}")
    order = np.argsort(-scores, kind="stable")
    iou = box_iou(boxes, boxes)
    keep: list[int] = []
    for i in order:  # greedy: a box survives unless a better, already kept box overlaps it by > threshold
        if not np.any(iou[i, keep] > iou_threshold):
            keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Stable softmax along ``axis``: ``exp(x - max) / sum(exp(x - max))``."""
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _class_candidates(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, top_k: int,
                      nms_threshold: float) -> np.ndarray:
    """Prior indices kept for one class, in NMS keep order: score > threshold, ``top_k`` best (stable), NMS."""
    cand = np.flatnonzero(scores > score_threshold)  # strict, ascending prior index
    cand = cand[np.argsort(-scores[cand], kind="stable")][:top_k]
    return cand[nms(boxes[cand], scores[cand], nms_threshold)]


def postprocess(loc: np.ndarray, conf: np.ndarray, priors: np.ndarray,
                variances: Sequence[float] = (0.1, 0.2), score_threshold: float = 0.01, top_k: int = 400,
                nms_threshold: float = 0.45,
                max_detections: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detections of one image from loc ``[P, 4]`` offsets, conf ``[P, C]`` logits and priors ``[P, 4]`` cxcywh.

    Returns ``boxes[D, 4]`` xyxy normalised in [0, 1] (float64), ``scores[D]`` (float64) and ``labels[D]``
    (int64 in 1..C-1), sorted by score descending (ties: lower class, then lower prior index); D <= max_detections.
    """
    loc = np.asarray(loc, dtype=np.float64)
    conf = np.asarray(conf, dtype=np.float64)
    if conf.ndim != 2 or conf.shape[1] < 2 or loc.shape != (conf.shape[0], 4):
        raise ValueError(f"postprocess needs loc [P, 4] and conf [P, C>=2], got {loc.shape} and {conf.shape}")
    probs = softmax(conf, axis=1)
    boxes = np.clip(decode(loc, priors, variances), 0.0, 1.0)
    idx_parts, label_parts = [], []
    for c in range(1, conf.shape[1]):  # class ascending; 0 is background
        kept = _class_candidates(boxes, probs[:, c], score_threshold, top_k, nms_threshold)
        idx_parts.append(kept)
        label_parts.append(np.full(kept.shape, c, dtype=np.int64))
    idx = np.concatenate(idx_parts)
    labels = np.concatenate(label_parts)
    scores = probs[idx, labels]
    order = np.argsort(-scores, kind="stable")[:max_detections]
    return boxes[idx[order]].reshape(-1, 4), scores[order], labels[order]
