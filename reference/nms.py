"""Non-maximum suppression and SSD post-processing (docs/CONTRACT.md "NMS and post-processing", "Ranking key",
"Peer settings"; ARCHITECTURE.md "Tie-break rules").

``nms``: greedy, in stable key-descending order (lower index first on ties); a box is dropped when its IoU
with an already kept box is strictly greater than the threshold.
``log_scores``: the ranking key ``logp[c] = (x[c] - m) - log1p(S')``, the class log-probability that keeps its
resolution near p = 1 (docs/CONTRACT.md "Ranking key").
``postprocess``: keys, decode, clamp to [0, 1] (``clip_boxes``); per class c >= 1: ``logp > log(threshold)``
(strict), the ``top_k`` best (stable), NMS; then all classes (class ascending, NMS keep order inside a class)
sorted by key with a stable sort and cut at ``max_detections``; scores are ``exp(logp)``.
``float32_ambiguous_detections``: the reference's detections with the float32 near-ties the contract exempts.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import numpy as np

from .boxes import box_iou
from .coding import decode
from .matching import float32_iou_tolerance

__all__ = ["nms", "softmax", "log_scores", "score_floor", "check_limit", "postprocess", "FLOAT32_LOGP_RTOL",
           "FLOAT32_LOGP_ATOL", "KEY_RTOL", "KEY_ATOL", "near_tied", "ExpectedDetections",
           "float32_ambiguous_detections"]

#: How far a float32 ranking key (``ssd_torch.nms.class_log_scores`` on float32 logits, e.g. in an ONNX graph)
#: may sit from the float64 one: relative, 128 float32 ulps (the rounding of ``d = x - m`` moves ``exp(d)`` by up
#: to ``|d| / 2`` ulps relative, and ``d`` reaches -87 before ``exp`` underflows; measured up to 66 ulps), plus
#: absolute, float32's smallest normal: below it ``exp`` underflows (``1 - p < 2^-126`` gives ``logp = 0``).
FLOAT32_LOGP_RTOL = 2.0 ** -17
FLOAT32_LOGP_ATOL = 2.0 ** -126
#: The fast paths compute the key in float64 from the float32 logits (docs/CONTRACT.md "Ranking key"): their
#: keys differ from this module's by the rounding of another float64 library (measured: <= 3 ulps, C <= 81;
#: bound 64 ulps) plus float64's smallest normal (``exp`` underflows past logit gaps of 708).
KEY_RTOL = 2.0 ** -46
KEY_ATOL = 2.0 ** -1021
#: Decoded float32 box corners carry a few roundings (``cx + t v0 w``, ``w exp(.)``, ``cx -/+ w / 2``) and start
#: from float32 priors: a few times ``reference.matching.FLOAT32_COORD_TOL`` per corner at magnitude 1.
DECODED_COORD_ROUNDINGS = 4.0


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS of ``boxes[N, 4]`` (xyxy) with ranking keys ``scores[N]`` (any monotone score: probabilities
    or ``log_scores``) -> ``keep[K]`` int64 indices into the input, in kept order (key descending, stable)."""
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


def log_scores(conf: np.ndarray) -> np.ndarray:
    """The ranking key of docs/CONTRACT.md "Ranking key" for logits ``conf[..., C]`` -> ``logp[..., C]`` float64:
    ``(x[c] - m) - log1p(S')`` with ``m = max x``, ``S' = sum over j != first argmax of exp(x[j] - m)``.

    ``exp(logp)`` is the softmax; unlike ``log(softmax)`` the winning class keeps ``-log1p(S') ~ -(1 - p)`` at
    full relative precision where ``p`` rounds to 1.
    """
    x = np.asarray(conf, dtype=np.float64)
    m = np.max(x, axis=-1, keepdims=True)
    shifted = x - m
    winner = np.arange(x.shape[-1]) == np.argmax(x, axis=-1)[..., None]  # the first argmax only
    rest = np.sum(np.where(winner, 0.0, np.exp(shifted)), axis=-1, keepdims=True)
    return shifted - np.log1p(rest)


def score_floor(score_threshold: float) -> float:
    """``log(score_threshold)``, the strict lower bound of a candidate's key (``-inf`` for 0: every finite key
    passes); ValueError unless the threshold is in [0, 1]."""
    t = float(score_threshold)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold!r}")
    return math.log(t) if t > 0.0 else -math.inf


def check_limit(name: str, value: object) -> Optional[int]:
    """``top_k`` / ``max_detections``: an int >= 1, or None for no cap (docs/CONTRACT.md "Peer settings");
    ValueError naming the argument otherwise. The one check of the reference and the torch layer."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1 or None (no cap), got {value!r}")
    return int(value)


def _class_candidates(boxes: np.ndarray, keys: np.ndarray, floor: float, top_k: Optional[int],
                      nms_threshold: float) -> np.ndarray:
    """Prior indices kept for one class, in NMS keep order: key > floor, ``top_k`` best (stable), NMS."""
    cand = np.flatnonzero(keys > floor)  # strict, ascending prior index
    cand = cand[np.argsort(-keys[cand], kind="stable")][:top_k]
    return cand[nms(boxes[cand], keys[cand], nms_threshold)]


def _inputs(loc: np.ndarray, conf: np.ndarray, priors: np.ndarray, variances: Sequence[float],
            clip_boxes: bool) -> tuple[np.ndarray, np.ndarray]:
    """Checked float64 ``boxes[P, 4]`` (decoded xyxy, clamped to [0, 1] with ``clip_boxes``) and keys ``[P, C]``."""
    loc = np.asarray(loc, dtype=np.float64)
    conf = np.asarray(conf, dtype=np.float64)
    if conf.ndim != 2 or conf.shape[1] < 2 or loc.shape != (conf.shape[0], 4):
        raise ValueError(f"postprocess needs loc [P, 4] and conf [P, C>=2], got {loc.shape} and {conf.shape}")
    boxes = decode(loc, priors, variances)
    return (np.clip(boxes, 0.0, 1.0) if clip_boxes else boxes), log_scores(conf)


def _kept_per_class(boxes: np.ndarray, keys: np.ndarray, floor: float, top_k: Optional[int],
                    nms_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Prior indices and labels of every class's NMS survivors, class ascending, keep order inside a class."""
    idx_parts, label_parts = [], []
    for c in range(1, keys.shape[1]):  # class ascending; 0 is background
        kept = _class_candidates(boxes, keys[:, c], floor, top_k, nms_threshold)
        idx_parts.append(kept)
        label_parts.append(np.full(kept.shape, c, dtype=np.int64))
    return np.concatenate(idx_parts), np.concatenate(label_parts)


def postprocess(loc: np.ndarray, conf: np.ndarray, priors: np.ndarray,
                variances: Sequence[float] = (0.1, 0.2), score_threshold: float = 0.01,
                top_k: Optional[int] = 400, nms_threshold: float = 0.45, max_detections: Optional[int] = 200, *,
                clip_boxes: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detections of one image from loc ``[P, 4]`` offsets, conf ``[P, C]`` logits and priors ``[P, 4]`` cxcywh.

    Returns ``boxes[D, 4]`` xyxy normalised (in [0, 1] with ``clip_boxes``; as decoded without), ``scores[D]``
    (``exp(logp)``, float64) and ``labels[D]`` (int64 in 1..C-1), sorted by key descending (ties: lower class,
    then lower prior index); ``D <= max_detections``. ``top_k`` / ``max_detections``: None = no cap.
    """
    top_k, max_detections = check_limit("top_k", top_k), check_limit("max_detections", max_detections)
    boxes, keys = _inputs(loc, conf, priors, variances, clip_boxes)
    idx, labels = _kept_per_class(boxes, keys, score_floor(score_threshold), top_k, nms_threshold)
    logp = keys[idx, labels]
    order = np.argsort(-logp, kind="stable")[:max_detections]
    return boxes[idx[order]].reshape(-1, 4), np.exp(logp[order]), labels[order]


# ---------------------------------------------------------------------------------------------- float32 near-ties
def near_tied(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether float64 keys ``a`` and ``b`` (broadcast) may compare equal, or the other way, in a fast path:
    ``|a - b| <= 2 (KEY_RTOL max(|a|, |b|) + KEY_ATOL)`` (each side may be off by the bound; docs/CONTRACT.md
    "Ranking key"). Infinite keys (``score_floor(0)``) tie with nothing. Equal keys count as near-tied here;
    the NMS analysis leaves them out (equal logit rows give equal float32 keys and the same stable order)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bound = 2.0 * (KEY_RTOL * np.maximum(np.abs(a), np.abs(b)) + KEY_ATOL)
        return np.abs(a - b) <= bound


class ExpectedDetections(NamedTuple):
    """What a float32 implementation must output for one image (docs/CONTRACT.md "Ranking key").

    ``boxes[D, 4]``, ``scores[D]``, ``labels[D]``, ``keys[D]``: the reference's detections in order;
    ``exempt[D]``: those a float32 path may leave out (their fate hangs on a float32 near-tie);
    ``extra_boxes[E, 4]``, ``extra_scores[E]``, ``extra_labels[E]``, ``extra_keys[E]``: candidates the
    reference does not output but a float32 path may (same reason).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    keys: np.ndarray
    exempt: np.ndarray
    extra_boxes: np.ndarray
    extra_scores: np.ndarray
    extra_labels: np.ndarray
    extra_keys: np.ndarray


def _open_members(keys: np.ndarray, floor: float, top_k: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
    """For one class: the candidates worth following (key order, stable) and whether their membership is open
    (near-tied with the threshold, or with the ``top_k`` cut)."""
    near_floor = near_tied(keys, floor) if math.isfinite(floor) else np.zeros(keys.shape, bool)
    pot = np.flatnonzero((keys > floor) | near_floor)
    pot = pot[np.argsort(-keys[pot], kind="stable")]
    open_ = near_floor[pot]
    n_in = int(np.sum(keys[pot] > floor))
    if top_k is not None and n_in > top_k:
        ins = pot[keys[pot] > floor]
        cut = near_tied(keys[pot], keys[ins[top_k - 1]]) | near_tied(keys[pot], keys[ins[top_k]])
        open_ |= cut
        follow = (np.arange(len(pot)) < top_k) | open_
        pot, open_ = pot[follow], open_[follow]
    return pot, open_


def _nms_states(boxes: np.ndarray, keys: np.ndarray, open_: np.ndarray, t: float) -> np.ndarray:
    """Greedy NMS over candidates in key order with three states: 1 kept for sure, 0 dropped for sure, -1 open.

    A candidate is dropped for sure when a surely kept candidate ranked surely before it (not near-tied)
    overlaps it by more than ``t`` plus the IoU tolerance; otherwise it is open when its membership is open,
    or when a kept or open candidate possibly before it (ranked before, or near-tied either way) may overlap it
    by more than ``t``; otherwise it is kept for sure.
    """
    n = len(keys)
    iou = box_iou(boxes, boxes)
    scale = DECODED_COORD_ROUNDINGS * max(1.0, float(np.max(np.abs(boxes), initial=0.0)))
    tol = scale * float32_iou_tolerance(boxes, boxes)
    # equal float64 keys come from equal logit rows, which give equal float32 keys: the same stable order
    tie = near_tied(keys[:, None], keys[None, :]) & (keys[:, None] != keys[None, :])
    surely_over, maybe_over = iou > t + tol, iou > t - tol
    state = np.ones(n, dtype=np.int64)
    before = np.tri(n, k=-1, dtype=bool).T  # before[i, j]: i ranked before j
    for j in range(n):
        sure_before = before[:, j] & ~tie[:, j]
        if np.any((state == 1) & sure_before & surely_over[:, j]):
            state[j] = 0
            continue
        rivals = (before[:, j] & (state != 0)) | tie[:, j]  # later near-tied ones: their state is not known yet
        state[j] = -1 if (open_[j] or np.any(rivals & maybe_over[:, j])) else 1
    return state


def _class_fates(boxes: np.ndarray, keys: np.ndarray, floor: float, top_k: Optional[int],
                 nms_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prior indices of one class's candidates whose fate is followed, and their float32 NMS states
    (:func:`_nms_states`), with the reference's own keep flags (``_class_candidates``)."""
    pot, open_ = _open_members(keys, floor, top_k)
    state = _nms_states(boxes[pot], keys[pot], open_, nms_threshold)
    kept = np.zeros(len(pot), dtype=bool)
    kept[np.isin(pot, _class_candidates(boxes, keys, floor, top_k, nms_threshold))] = True
    return pot, state, kept


def _cut_window(keys: np.ndarray, open_keys: np.ndarray, max_detections: Optional[int]) -> np.ndarray:
    """``[N]`` bool over the merged, key-sorted survivors ``keys``: the positions whose membership in the
    ``max_detections`` cut is open. Each open candidate (``open_keys``: open survivors and open extras) that may
    rank above the cut can move it by one place; keys near-tied with the cut's are open themselves."""
    n = len(keys)
    window = np.zeros(n, dtype=bool)
    if max_detections is None or n <= max_detections - len(open_keys):
        return window
    cut = keys[min(max_detections, n) - 1]
    n_open = int(np.sum((open_keys >= cut) | near_tied(open_keys, cut)))
    pos = np.arange(n)
    window |= (pos >= max_detections - n_open) & (pos < max_detections + n_open)
    for edge in (max_detections - 1, max_detections):
        if edge < n:
            window |= near_tied(keys, keys[edge])
    return window


def float32_ambiguous_detections(loc: np.ndarray, conf: np.ndarray, priors: np.ndarray,
                                 variances: Sequence[float] = (0.1, 0.2), score_threshold: float = 0.01,
                                 top_k: Optional[int] = 400, nms_threshold: float = 0.45,
                                 max_detections: Optional[int] = 200, *,
                                 clip_boxes: bool = True) -> ExpectedDetections:
    """The reference's detections of one image (as :func:`postprocess`, same arguments) with what a float32
    implementation may legitimately decide otherwise (docs/CONTRACT.md "Ranking key"): keys near-tied with
    the threshold, the ``top_k`` cut, each other (overlapping, in NMS) or the ``max_detections`` cut, IoUs
    within float32 rounding of the NMS threshold, and every later overlapping candidate of the class whose fate
    hangs on an open one. The one definition used by the tests and ``ssd_torch.parity``.
    """
    top_k, max_detections = check_limit("top_k", top_k), check_limit("max_detections", max_detections)
    boxes, keys = _inputs(loc, conf, priors, variances, clip_boxes)
    floor = score_floor(score_threshold)
    idx_parts, label_parts, open_parts = [], [], []
    extra_idx, extra_lab = [], []
    for c in range(1, keys.shape[1]):
        pot, state, kept = _class_fates(boxes, keys[:, c], floor, top_k, nms_threshold)
        order = np.argsort(-keys[pot[kept], c], kind="stable")  # keep order = key order (stable) already
        idx_parts.append(pot[kept][order])
        label_parts.append(np.full(int(kept.sum()), c, dtype=np.int64))
        open_parts.append((state[kept] == -1)[order])
        extra = ~kept & (state == -1)
        extra_idx.append(pot[extra])
        extra_lab.append(np.full(int(extra.sum()), c, dtype=np.int64))
    idx, labels, open_ = np.concatenate(idx_parts), np.concatenate(label_parts), np.concatenate(open_parts)
    ex_idx, ex_lab = np.concatenate(extra_idx), np.concatenate(extra_lab)
    logp = keys[idx, labels]
    order = np.argsort(-logp, kind="stable")
    idx, labels, open_, logp = idx[order], labels[order], open_[order], logp[order]
    window = _cut_window(logp, np.concatenate([logp[open_], keys[ex_idx, ex_lab]]), max_detections)
    exempt = open_ | window
    d = len(idx) if max_detections is None else min(max_detections, len(idx))
    ex_idx = np.concatenate([ex_idx, idx[d:][exempt[d:]]])
    ex_lab = np.concatenate([ex_lab, labels[d:][exempt[d:]]])
    ex_keys = keys[ex_idx, ex_lab]
    return ExpectedDetections(boxes[idx[:d]].reshape(-1, 4), np.exp(logp[:d]), labels[:d], logp[:d], exempt[:d],
                              boxes[ex_idx].reshape(-1, 4), np.exp(ex_keys), ex_lab, ex_keys)
