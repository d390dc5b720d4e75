"""Batched SSD post-processing: decode, ranking keys, per-class candidates, NMS, top detections per image
(docs/CONTRACT.md "NMS and post-processing", "Ranking key", "Peer settings"; ARCHITECTURE.md "Tie-break
rules"): the torch twin of ``reference.nms.postprocess``, for a whole batch with no Python loop over classes.

Pipeline: ``select_candidates`` (shared by every backend) turns ``loc[B, P, 4]``, ``conf[B, P, C]`` into a
``[B, C-1, K]`` layout of score-sorted candidates per (image, class) with valid counts; a backend computes the
greedy-NMS keep mask of that layout (``nms_keep_torch`` here, ``kernels.interop.nms_keep_numba`` for numba);
``gather_detections`` merges the kept candidates of all classes per image. Order and ties, exactly as the
reference: everything ranks by the key ``class_log_scores(conf)`` (the class log-probability in its log1p
form, which tells confident boxes apart where float32 probabilities round to 1); candidates of a class are
``logp > log(score_threshold)`` (strict), the ``top_k`` best with a stable order (equal keys: lower prior index
first); NMS drops a box whose IoU with an already kept box is ``> nms_threshold`` (strict); the per-image merge
is a stable sort by key over (class ascending, keep order), cut at ``max_detections``; scores are
``exp(logp)``. ``top_k`` / ``max_detections`` None: no cap; ``clip_boxes=False``: boxes as decoded.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import numpy as np

import torch

from reference.nms import FLOAT32_LOGP_ATOL, check_limit, score_floor

from .backend import BACKENDS, resolve_backend
from .boxes import scratch
from .coding import decode

__all__ = ["log1p_exportable", "Detections", "Candidates", "BACKENDS", "postprocess", "class_log_scores", "key_floor",
           "select_candidates", "stable_topk", "nms_keep_torch", "gather_detections"]


class Detections(NamedTuple):
    """Detections of one image: ``boxes[D, 4]`` xyxy normalised, ``scores[D]``, ``labels[D]`` int64 (1..C-1)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


class Candidates(NamedTuple):
    """Key-sorted NMS candidates per (image, class c = 1..C-1): ``boxes[B, C-1, K, 4]`` xyxy,
    ``scores[B, C-1, K]`` their probabilities ``exp(logp)`` in the boxes' dtype (0 in padding),
    ``counts[B, C-1]`` (slots ``>= counts`` are padding), ``keys[B, C-1, K]`` float64, the ranking keys ``logp``
    (:func:`class_log_scores`; ``-inf`` in padding) that order the slots. K <= top_k."""

    boxes: torch.Tensor
    scores: torch.Tensor
    counts: torch.Tensor
    keys: torch.Tensor


def _resolve_backend(backend: str, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """Map ``backend`` to the keep-mask implementation; ``"auto"`` follows :func:`ssd_torch.backend.resolve_backend`."""
    return resolve_backend(backend, device, dtype, what="NMS backend")


def stable_topk(x: torch.Tensor, k: int, floor: float = float("-inf")) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest entries of each row of ``x[R, N]`` (no NaN) in a *stable* descending order (equal
    values: lower index first) -> ``(values[R, k], indices[R, k])``: ``sort(stable=True)[:, :k]``, faster.

    ``torch.topk`` is fast but leaves tie order (and, at the k-th value, tie membership) unspecified; so the
    selection is re-sorted stably by index, and rows where the k-th value also occurs outside the selection (a
    boundary tie) are redone with a full stable sort. Both fixes are exact, so any topk tie behaviour is fine.
    Entries ``<= floor`` are padding to the caller: their order and membership are not fixed.
    """
    values, indices = torch.topk(x, k, dim=1, largest=True, sorted=True)
    if k == 0:
        return values, indices
    # Stable order inside the selection: sort by index, then stably by value (descending).
    indices, perm = indices.sort(dim=1)
    values = values.gather(1, perm)
    values, perm = values.sort(dim=1, descending=True, stable=True)
    indices = indices.gather(1, perm)
    kth = values[:, -1:]
    boundary = ((x == kth).sum(dim=1) > (values == kth).sum(dim=1)) & (kth.squeeze(1) > floor)
    if bool(boundary.any()):
        rows = boundary.nonzero().squeeze(1)
        full_v, full_i = x[rows].sort(dim=1, descending=True, stable=True)
        values[rows], indices[rows] = full_v[:, :k], full_i[:, :k]
    return values, indices


def _check_postprocess_args(loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor) -> None:
    """Raise ValueError unless loc ``[B, P, 4]``, conf ``[B, P, C>=2]`` and priors ``[P, 4]`` (the limits are
    checked by ``reference.nms.check_limit``, the one rule)."""
    if conf.dim() != 3 or conf.shape[2] < 2:
        raise ValueError(f"conf must have shape [B, P, C>=2], got {tuple(conf.shape)}")
    b, p = conf.shape[:2]
    if tuple(loc.shape) != (b, p, 4):
        raise ValueError(f"loc must have shape [B={b}, P={p}, 4], got {tuple(loc.shape)}")
    if tuple(priors.shape) != (p, 4):
        raise ValueError(f"priors must have shape [P={p}, 4], got {tuple(priors.shape)}")


def log1p_exportable(s: torch.Tensor) -> torch.Tensor:
    """``log1p(s)`` for ``s >= 0``, to a few float32 ulps, from ops that survive ONNX export.

    ``torch.log1p`` exports as ``Log(Add(1, s))``, which returns 0 for every ``s < 6e-8``: exactly the
    near-certain boxes whose order the key exists for. ``log(u) * s / (u - 1)`` with ``u = 1 + s`` (Goldberg's
    trick) cancels the rounding error of ``u``; where ``u == 1``, ``log1p(s) = s`` to the dtype's precision.
    A few ulps from ``torch.log1p`` in float32 and float64 alike."""
    u = 1.0 + s
    d = u - 1.0
    ratio = torch.where(d == 0, torch.ones_like(s), s / torch.where(d == 0, torch.ones_like(d), d))
    return torch.where(d == 0, s, torch.log(u) * ratio)


def class_log_scores(conf: torch.Tensor) -> torch.Tensor:
    """The ranking key of docs/CONTRACT.md "Ranking key" for logits ``conf[..., C]`` -> ``logp[..., C]``:
    ``(x[c] - m) - log1p(S')``, ``m = max x``, ``S'`` the sum of ``exp(x[j] - m)`` over every class but the
    first argmax. ``exp(logp)`` is the softmax, and the winning class keeps ``-log1p(S') ~ -(1 - p)`` at full
    relative precision where ``p`` rounds to 1 in float32. Pure torch ops (max, argmax, exp, sum, a mask, and
    :func:`log1p_exportable`; no loop): it traces into ONNX as it computes here, so the exported detector
    (``ssd_torch.deploy``) ranks with this very function. The twin of ``reference.nms.log_scores``.
    """
    m = conf.amax(dim=-1, keepdim=True)
    shifted = conf - m
    first = conf.argmax(dim=-1, keepdim=True)  # the first maximal index, as the reference's np.argmax
    winner = torch.arange(conf.shape[-1], device=conf.device) == first
    rest = torch.exp(shifted).masked_fill(winner, 0.0).sum(dim=-1, keepdim=True)
    return shifted - log1p_exportable(rest)


def key_floor(score_threshold: float, dtype: torch.dtype) -> float:
    """The candidate bound in ``dtype``: the largest ``dtype`` number ``<= log(score_threshold)``, so that
    ``logp > key_floor(t, dtype)`` on ``dtype`` keys decides exactly as the real ``logp > log(t)`` would
    (docs/CONTRACT.md "Ranking key"; ``-inf`` for t = 0)."""
    floor = score_floor(score_threshold)
    if dtype == torch.float64 or not math.isfinite(floor):
        return floor
    np_dtype = {torch.float32: np.float32, torch.float16: np.float16}.get(dtype, np.float32)
    low = np_dtype(floor)
    if float(low) > floor:
        low = np.nextafter(low, np_dtype(-np.inf))
    return float(low)


def _topk_dense(keys: torch.Tensor, passing: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable per-(image, class) top-k from ``keys[B, P, C]`` / ``passing[B, P, C-1]`` with one ``topk``
    over every prior -> ``[B*(C-1), k]`` keys (-inf in non-candidate slots) and prior indices; the fast choice
    when most priors are candidates."""
    b, p, c = keys.shape
    rows = keys[:, :, 1:].transpose(1, 2).reshape(b * (c - 1), p)  # own copy: masked in place below
    mask = passing.transpose(1, 2).reshape(b * (c - 1), p)
    # A candidate's key is > the floor >= -inf, so -inf puts every non-candidate (NaN included) behind it.
    return stable_topk(rows.masked_fill_(~mask, float("-inf")), k)


def _topk_compact(keys: torch.Tensor, passing: torch.Tensor, top_k: Optional[int],
                  k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same selection as :func:`_topk_dense` from the candidate list (``nonzero``) alone: a stable sort by
    key descending, then a stable sort by (image, class) row, puts each row's candidates in (key desc, prior
    asc) order; their rank inside the row is their slot. Work is O(candidates): the fast choice for a trained
    detector (tens of candidates per class out of 8732 priors)."""
    b, _, c = keys.shape
    img, prior, cls = passing.nonzero(as_tuple=True)  # ascending (image, prior, class)
    vals = keys[img, prior, cls + 1]
    rows = img * (c - 1) + cls
    order = vals.argsort(descending=True, stable=True)  # ties keep (image, prior, class) order
    order = order[rows[order].argsort(stable=True)]
    rows, prior, vals = rows[order], prior[order], vals[order]
    per_row = torch.bincount(rows, minlength=b * (c - 1))
    rank = torch.arange(rows.numel(), device=rows.device) - (per_row.cumsum(0) - per_row)[rows]
    keep = rank < (k if top_k is None else top_k)
    values = torch.full((b * (c - 1), k), float("-inf"), dtype=keys.dtype, device=keys.device)
    index = torch.zeros((b * (c - 1), k), dtype=torch.int64, device=keys.device)
    values[rows[keep], rank[keep]] = vals[keep]
    index[rows[keep], rank[keep]] = prior[keep]
    return values, index


def ranking_keys(conf: torch.Tensor, floor: float) -> torch.Tensor:
    """The float64 ranking keys ``[B, P, C]`` of ``conf[B, P, C]`` logits where they can matter: exact
    (:func:`class_log_scores` in float64) at every prior with a class that may pass ``floor``, ``-inf``
    elsewhere (such a prior has no candidate either way).

    Why float64: float32 keys tie where ``exp`` underflows (1 - p < 2^-126, logit gaps > 87, which a confident
    model reaches; docs/CONTRACT.md "Ranking key"); float64 ones only past gaps of 708. Why not everywhere: the
    float64 pass over every (prior, class) is most of the post-processing time, and with a high threshold few
    priors have a candidate. The prefilter needs no ``exp``: a key is ``(x[c] - m) - log1p(S') <= x[c] - m``, so
    a prior whose best object-class logit gap ``max_c x[c] - m`` stays below the floor (by more than its float32
    rounding) cannot have a candidate: it only ever skips work, never a candidate."""
    if floor == -math.inf or conf.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return class_log_scores(conf.to(torch.float64))
    x = conf.to(torch.float32)
    top, best_object = x.amax(dim=-1), x[..., 1:].amax(dim=-1)  # [B, P]; max is exact in any precision
    slack = 2.0 ** -20 * (best_object.abs() + top.abs()) + FLOAT32_LOGP_ATOL  # > the subtraction's rounding
    maybe = best_object - top + slack > floor  # [B, P]
    if bool(maybe.all()):
        return class_log_scores(conf.to(torch.float64))
    keys = torch.full(conf.shape, -math.inf, dtype=torch.float64, device=conf.device)
    keys[maybe] = class_log_scores(conf[maybe].to(torch.float64))
    return keys


def select_candidates(loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor,
                      variances: Sequence[float] = (0.1, 0.2), score_threshold: float = 0.01,
                      top_k: Optional[int] = 400, strategy: str = "auto", *,
                      clip_boxes: bool = True) -> Candidates:
    """Decode + ranking keys + per-class strict threshold + stable top-k, for all images and classes at once.

    loc ``[B, P, 4]`` offsets, conf ``[B, P, C]`` logits, priors ``[P, 4]`` cxcywh. Boxes are decoded, clamped
    to [0, 1] with ``clip_boxes`` and gathered per (image, class), in at least float32; the keys
    (``Candidates.keys``) are float64.
    K = min(top_k, the largest count) (``top_k`` None: no cap). ``strategy`` (``"auto"``, ``"dense"``,
    ``"compact"``) only picks how the identical selection is computed: auto uses the candidate list when there
    are fewer candidates than output slots.
    """
    if strategy not in ("auto", "dense", "compact"):
        raise ValueError(f"unknown candidate strategy {strategy!r}")
    top_k = check_limit("top_k", top_k)
    dtype = torch.promote_types(conf.dtype, torch.float32)
    floor = key_floor(score_threshold, torch.float64)
    keys = ranking_keys(conf, floor)
    boxes = decode(loc.to(dtype), priors.to(device=loc.device, dtype=dtype), variances)
    boxes = boxes.clamp(0.0, 1.0) if clip_boxes else boxes
    b, p, c = conf.shape
    passing = keys[:, :, 1:] > floor  # [B, P, C-1]; strict; False for NaN
    per_row = passing.sum(dim=1)  # [B, C-1]
    counts = per_row if top_k is None else per_row.clamp(max=top_k)
    k = min(p, int(counts.max())) if counts.numel() else 0
    compact = strategy == "compact" or (strategy == "auto" and int(per_row.sum()) <= counts.numel() * k)
    values, index = _topk_compact(keys, passing, top_k, k) if compact else _topk_dense(keys, passing, k)
    index = index.view(b, c - 1, k)
    cand_boxes = torch.gather(boxes[:, None].expand(b, c - 1, p, 4), 2, index[..., None].expand(b, c - 1, k, 4))
    keys = values.view(b, c - 1, k)
    return Candidates(boxes=cand_boxes, scores=torch.exp(keys).to(dtype), counts=counts, keys=keys)


def _iou_block(coords: tuple[torch.Tensor, ...], rows: slice, cols: slice) -> torch.Tensor:
    """IoU of boxes ``i`` in ``rows`` with boxes ``j`` in ``cols`` of every group -> ``Tensor[R, len(rows),
    len(cols)]`` (a view into a reused ``scratch`` buffer), with the reference's arithmetic
    ``inter / (area_i + area_j - inter)``.

    ``coords = (x1, y1, x2, y2, area)``, each ``[R, K]``. Two empty boxes give 0/0 = NaN instead of the
    reference's 0; NaN compares False with any threshold, so the NMS decision is the same.
    """
    x1, y1, x2, y2, area = coords
    shape = (x1.shape[0], rows.stop - rows.start, cols.stop - cols.start)
    inter, tmp, tmp2 = (scratch(shape, x1.dtype, x1.device, slot) for slot in range(3))

    def side(lo: torch.Tensor, hi: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        torch.minimum(hi[:, rows, None], hi[:, None, cols], out=out)
        torch.maximum(lo[:, rows, None], lo[:, None, cols], out=tmp2)
        return out.sub_(tmp2).clamp_(min=0.0)

    side(x1, x2, inter).mul_(side(y1, y2, tmp))
    union = torch.add(area[:, rows, None], area[:, None, cols], out=tmp).sub_(inter)
    return inter.div_(union)


def _resolve_block(above: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """Greedy NMS inside one block: ``keep_j = candidate_j and no kept i < j with above[i, j]``.

    ``above[R, W, W]`` bool (i, j) pairs of the block, ``candidate[R, W]`` boxes not suppressed by earlier
    blocks. Iterating ``keep <- candidate & ~any_i(keep_i & above_ij, i < j)`` from ``keep = candidate`` fixes
    one more position per pass (position j only reads positions < j), so it reaches the unique fixed point,
    which is the greedy answer, after at most W passes; in practice after a handful (the longest suppression
    chain). The any-over-i is a batched vector-matrix product of 0/1 floats (exact small integers).
    """
    upper = above.triu(1).to(torch.float32)
    keep = candidate
    while True:
        hits = torch.bmm(keep.to(torch.float32)[:, None, :], upper).squeeze(1)
        new = candidate & (hits == 0)
        if torch.equal(new, keep):
            return keep
        keep = new


def nms_keep_torch(boxes: torch.Tensor, counts: torch.Tensor, iou_threshold: float,
                   block: int = 16) -> torch.Tensor:
    """Greedy NMS of every (image, class) group at once -> ``keep[B, C, K]`` bool.

    boxes ``[B, C, K, 4]`` xyxy, already sorted by score (stable) inside each group; ``counts[B, C]`` valid
    slots (padding is never kept and never suppresses). A box is dropped when its IoU with an already kept box
    is ``> iou_threshold`` (strict). The K slots are walked in blocks of ``block``: the block's IoUs with itself
    and every later slot are computed for the groups that still have slots there (so only the upper triangle of
    the IoU matrix is ever built), the block is resolved exactly (:func:`_resolve_block`), and its kept boxes
    suppress later slots.
    """
    shape = boxes.shape[:-1]
    k = shape[-1]
    flat = boxes.reshape(math.prod(shape[:-1]), k, 4)  # explicit size: -1 is ambiguous when K = 0
    counts = counts.reshape(-1).to(flat.device)
    suppressed = torch.arange(k, device=boxes.device)[None, :] >= counts[:, None]
    keep = torch.zeros_like(suppressed)
    if k == 0 or flat.shape[0] == 0:
        return keep.view(shape)
    order = counts.argsort(descending=True)  # groups with slots left at block s are a prefix of this order
    flat, sorted_counts = flat[order], counts[order]
    x1, y1, x2, y2 = (flat[..., i].contiguous() for i in range(4))
    coords_all = (x1, y1, x2, y2, (x2 - x1) * (y2 - y1))
    sup, kp = suppressed[order], keep[order]
    for s in range(0, k, block):
        e = min(s + block, k)
        r = int((sorted_counts > s).sum())  # only groups with a valid slot in this block do any work
        iou = _iou_block(tuple(c[:r] for c in coords_all), slice(s, e), slice(s, k))  # [r, W, K - s]
        kept = _resolve_block(iou[:, :, : e - s] > iou_threshold, ~sup[:r, s:e])
        kp[:r, s:e] = kept
        if e < k:
            # Rows of dropped boxes are zeroed so only kept boxes suppress; NaN (0/0) only occurs in columns of
            # empty boxes, whose IoU with anything is 0 or NaN, so a NaN max there never hides a suppression.
            later = iou[:, :, e - s:].masked_fill_(~kept[:, :, None], 0.0)
            sup[:r, e:] |= later.amax(dim=1) > iou_threshold
    keep[order] = kp
    return keep.view(shape)


def _nms_keep_numba(boxes: torch.Tensor, counts: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Delegate the keep mask to the numba kernels (imported lazily: numba is optional for the torch path).
    The CUDA kernel holds at most ``kernels.nms.MAX_K`` candidates per (image, class); more (``top_k=None``)
    fall back to :func:`nms_keep_torch` on the same device, which gives the identical mask."""
    try:
        from kernels.interop import nms_keep_numba
        from kernels.nms import MAX_K
    except ImportError as exc:  # also raised when kernels.interop exists but lacks the function
        raise ImportError(f"backend='numba' needs kernels.interop.nms_keep_numba, which failed to import: "
                          f"{exc}") from exc
    if boxes.device.type == "cuda" and boxes.shape[2] > MAX_K:
        return nms_keep_torch(boxes, counts, iou_threshold)
    return nms_keep_numba(boxes, counts, iou_threshold)


def gather_detections(cand: Candidates, keep: torch.Tensor, max_detections: Optional[int]) -> list[Detections]:
    """Merge the kept candidates of all classes per image: a stable sort by key over (class ascending, keep
    order) cut at ``max_detections`` (None: no cap; ARCHITECTURE.md tie-break rules) -> one ``Detections`` per
    image, scores ``exp(logp)``."""
    b, c1, k = cand.keys.shape
    flat_keys = cand.keys.masked_fill(~keep, float("-inf")).reshape(b, c1 * k)
    n_kept = keep.reshape(b, -1).sum(dim=1)
    if max_detections is not None:
        n_kept = n_kept.clamp(max=max_detections)
    d = min(c1 * k, int(n_kept.max())) if b else 0
    keys, order = stable_topk(flat_keys, d)
    scores = torch.exp(keys).to(cand.boxes.dtype)
    labels = torch.div(order, k, rounding_mode="floor") + 1 if k else order
    boxes = torch.gather(cand.boxes.reshape(b, c1 * k, 4), 1, order[..., None].expand(b, d, 4))
    return [Detections(boxes[i, :n], scores[i, :n], labels[i, :n]) for i, n in enumerate(n_kept.tolist())]


def postprocess(loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor,
                variances: Sequence[float] = (0.1, 0.2), score_threshold: float = 0.01,
                top_k: Optional[int] = 400, nms_threshold: float = 0.45, max_detections: Optional[int] = 200,
                backend: str = "torch", *, clip_boxes: bool = True) -> list[Detections]:
    """Detections of a batch from loc ``[B, P, 4]`` offsets, conf ``[B, P, C]`` logits, priors ``[P, 4]`` cxcywh.

    Returns one ``Detections(boxes[D, 4] xyxy normalised (in [0, 1] with clip_boxes, as decoded without),
    scores[D] = exp(logp), labels[D] int64 in 1..C-1)`` per image, sorted by the ranking key descending (ties:
    lower class, then lower prior index), D <= max_detections. ``top_k`` / ``max_detections``: ints >= 1, or
    None for no cap (docs/CONTRACT.md "Peer settings"). ``backend`` picks the NMS keep-mask step: ``"torch"``,
    ``"numba"`` (``kernels.interop``) or ``"auto"``. NumPy arrays are accepted for ``loc``, ``conf`` and
    ``priors`` (e.g. onnxruntime's outputs).
    """
    loc, conf, priors = (torch.as_tensor(t) for t in (loc, conf, priors))
    _check_postprocess_args(loc, conf, priors)
    max_detections = check_limit("max_detections", max_detections)
    cand = select_candidates(loc, conf, priors, variances, score_threshold, top_k, clip_boxes=clip_boxes)
    which = _resolve_backend(backend, conf.device, cand.boxes.dtype)
    if which == "numba":
        keep = _nms_keep_numba(cand.boxes, cand.counts, nms_threshold)
    else:
        keep = nms_keep_torch(cand.boxes, cand.counts, nms_threshold)
    return gather_detections(cand, keep, max_detections)
