"""Batched SSD post-processing: decode, softmax, per-class candidates, NMS, top detections per image
(docs/CONTRACT.md "NMS and post-processing"; ARCHITECTURE.md "Tie-break rules"): the torch twin of
``reference.nms.postprocess``, for a whole batch with no Python loop over classes.

Pipeline: ``select_candidates`` (shared by every backend) turns ``loc[B, P, 4]``, ``conf[B, P, C]`` into a
``[B, C-1, K]`` layout of score-sorted candidates per (image, class) with valid counts; a backend computes the
greedy-NMS keep mask of that layout (``nms_keep_torch`` here, ``kernels.interop.nms_keep_numba`` for numba);
``gather_detections`` merges the kept candidates of all classes per image. Order and ties, exactly as the
reference: candidates of a class are ``score > score_threshold`` (strict), the ``top_k`` best with a stable
order (equal scores: lower prior index first); NMS drops a box whose IoU with an already kept box is
``> nms_threshold`` (strict); the per-image merge is a stable sort by score over (class ascending, keep order),
cut at ``max_detections``.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

from .backend import BACKENDS, resolve_backend
from .boxes import scratch
from .coding import decode

__all__ = ["Detections", "Candidates", "BACKENDS", "postprocess", "select_candidates", "stable_topk",
           "nms_keep_torch", "gather_detections"]



class Detections(NamedTuple):
    """Detections of one image: ``boxes[D, 4]`` xyxy normalised, ``scores[D]``, ``labels[D]`` int64 (1..C-1)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


class Candidates(NamedTuple):
    """Score-sorted NMS candidates per (image, class c = 1..C-1): ``boxes[B, C-1, K, 4]`` xyxy,
    ``scores[B, C-1, K]``, ``counts[B, C-1]`` (slots ``>= counts`` are padding). K <= top_k."""

    boxes: torch.Tensor
    scores: torch.Tensor
    counts: torch.Tensor


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


def _check_postprocess_args(loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor, top_k: int,
                            max_detections: int) -> None:
    """Raise ValueError unless loc ``[B, P, 4]``, conf ``[B, P, C>=2]``, priors ``[P, 4]`` and sane limits."""
    if conf.dim() != 3 or conf.shape[2] < 2:
        raise ValueError(f"conf must have shape [B, P, C>=2], got {tuple(conf.shape)}")
    b, p = conf.shape[:2]
    if tuple(loc.shape) != (b, p, 4):
        raise ValueError(f"loc must have shape [B={b}, P={p}, 4], got {tuple(loc.shape)}")
    if tuple(priors.shape) != (p, 4):
        raise ValueError(f"priors must have shape [P={p}, 4], got {tuple(priors.shape)}")
    if top_k < 1 or max_detections < 0:
        raise ValueError(f"top_k must be >= 1 and max_detections >= 0, got {top_k} and {max_detections}")


def _topk_dense(probs: torch.Tensor, passing: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable per-(image, class) top-k from ``probs[B, P, C]`` / ``passing[B, P, C-1]`` with one ``topk``
    over every prior -> ``[B*(C-1), k]`` values (-1 in non-candidate slots) and prior indices; the fast choice
    when most priors are candidates."""
    b, p, c = probs.shape
    scores = probs[:, :, 1:].transpose(1, 2).reshape(b * (c - 1), p)  # own copy: masked in place below
    mask = passing.transpose(1, 2).reshape(b * (c - 1), p)
    # Scores are >= 0, so -1 puts every non-candidate (NaN included) behind every candidate.
    return stable_topk(scores.masked_fill_(~mask, -1.0), k, floor=-1.0)


def _topk_compact(probs: torch.Tensor, passing: torch.Tensor, top_k: int,
                  k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same selection as :func:`_topk_dense` from the candidate list (``nonzero``) alone: a stable sort by
    score descending, then a stable sort by (image, class) row, puts each row's candidates in (score desc, prior
    asc) order; their rank inside the row is their slot. Work is O(candidates): the fast choice for a trained
    detector (tens of candidates per class out of 8732 priors)."""
    b, _, c = probs.shape
    img, prior, cls = passing.nonzero(as_tuple=True)  # ascending (image, prior, class)
    vals = probs[img, prior, cls + 1]
    rows = img * (c - 1) + cls
    order = vals.argsort(descending=True, stable=True)  # ties keep (image, prior, class) order
    order = order[rows[order].argsort(stable=True)]
    rows, prior, vals = rows[order], prior[order], vals[order]
    per_row = torch.bincount(rows, minlength=b * (c - 1))
    rank = torch.arange(rows.numel(), device=rows.device) - (per_row.cumsum(0) - per_row)[rows]
    keep = rank < top_k
    values = torch.full((b * (c - 1), k), -1.0, dtype=probs.dtype, device=probs.device)
    index = torch.zeros((b * (c - 1), k), dtype=torch.int64, device=probs.device)
    values[rows[keep], rank[keep]] = vals[keep]
    index[rows[keep], rank[keep]] = prior[keep]
    return values, index


def select_candidates(loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor,
                      variances: Sequence[float] = (0.1, 0.2), score_threshold: float = 0.01,
                      top_k: int = 400, strategy: str = "auto") -> Candidates:
    """Decode + softmax + per-class strict threshold + stable top-k, for all images and classes at once.

    loc ``[B, P, 4]`` offsets, conf ``[B, P, C]`` logits, priors ``[P, 4]`` cxcywh. Boxes are decoded, clamped
    to [0, 1] and gathered per (image, class). Computed in at least float32. K = min(top_k, the largest count).
    ``strategy`` (``"auto"``, ``"dense"``, ``"compact"``) only picks how the identical selection is computed:
    auto uses the candidate list when there are fewer candidates than output slots.
    """
    if strategy not in ("auto", "dense", "compact"):
        raise ValueError(f"unknown candidate strategy {strategy!r}")
    dtype = torch.promote_types(conf.dtype, torch.float32)
    probs = F.softmax(conf.to(dtype), dim=-1)
    boxes = decode(loc.to(dtype), priors.to(device=loc.device, dtype=dtype), variances).clamp(0.0, 1.0)
    b, p, c = conf.shape
    passing = probs[:, :, 1:] > score_threshold  # [B, P, C-1]; strict (ARCHITECTURE.md); False for NaN
    per_row = passing.sum(dim=1)  # [B, C-1]
    counts = per_row.clamp(max=top_k)
    k = min(top_k, p, int(counts.max())) if counts.numel() else 0
    compact = strategy == "compact" or (strategy == "auto" and int(per_row.sum()) <= counts.numel() * k)
    values, index = _topk_compact(probs, passing, top_k, k) if compact else _topk_dense(probs, passing, k)
    index = index.view(b, c - 1, k)
    cand_boxes = torch.gather(boxes[:, None].expand(b, c - 1, p, 4), 2, index[..., None].expand(b, c - 1, k, 4))
    return Candidates(boxes=cand_boxes, scores=values.view(b, c - 1, k), counts=counts)


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
    """Delegate the keep mask to the numba kernels (imported lazily: numba is optional for the torch path)."""
    try:
        from kernels.interop import nms_keep_numba
    except ImportError as exc:  # also raised when kernels.interop exists but lacks the function
        raise ImportError(f"backend='numba' needs kernels.interop.nms_keep_numba, which failed to import: "
                          f"{exc}") from exc
    return nms_keep_numba(boxes, counts, iou_threshold)


def gather_detections(cand: Candidates, keep: torch.Tensor, max_detections: int) -> list[Detections]:
    """Merge the kept candidates of all classes per image: a stable sort by score over (class ascending, keep
    order) cut at ``max_detections`` (ARCHITECTURE.md tie-break rules) -> one ``Detections`` per image."""
    b, c1, k = cand.scores.shape
    flat_scores = cand.scores.masked_fill(~keep, float("-inf")).reshape(b, c1 * k)
    n_kept = keep.reshape(b, -1).sum(dim=1).clamp(max=max_detections)
    d = min(max_detections, c1 * k, int(n_kept.max())) if b else 0
    scores, order = stable_topk(flat_scores, d)
    labels = torch.div(order, k, rounding_mode="floor") + 1 if k else order
    boxes = torch.gather(cand.boxes.reshape(b, c1 * k, 4), 1, order[..., None].expand(b, d, 4))
    return [Detections(boxes[i, :n], scores[i, :n], labels[i, :n]) for i, n in enumerate(n_kept.tolist())]


def postprocess(loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor,
                variances: Sequence[float] = (0.1, 0.2), score_threshold: float = 0.01, top_k: int = 400,
                nms_threshold: float = 0.45, max_detections: int = 200,
                backend: str = "torch") -> list[Detections]:
    """Detections of a batch from loc ``[B, P, 4]`` offsets, conf ``[B, P, C]`` logits, priors ``[P, 4]`` cxcywh.

    Returns one ``Detections(boxes[D, 4] xyxy normalised in [0, 1], scores[D], labels[D] int64 in 1..C-1)`` per
    image, sorted by score descending (ties: lower class, then lower prior index), D <= max_detections.
    ``backend`` picks the NMS keep-mask step: ``"torch"``, ``"numba"`` (``kernels.interop``) or ``"auto"``.
    NumPy arrays are accepted for ``loc``, ``conf`` and ``priors`` (e.g. onnxruntime's outputs).
    """
    loc, conf, priors = (torch.as_tensor(t) for t in (loc, conf, priors))
    _check_postprocess_args(loc, conf, priors, top_k, max_detections)
    cand = select_candidates(loc, conf, priors, variances, score_threshold, top_k)
    which = _resolve_backend(backend, conf.device, cand.boxes.dtype)
    if which == "numba":
        keep = _nms_keep_numba(cand.boxes, cand.counts, nms_threshold)
    else:
        keep = nms_keep_torch(cand.boxes, cand.counts, nms_threshold)
    return gather_detections(cand, keep, max_detections)
