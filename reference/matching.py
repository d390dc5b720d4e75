"""Ground-truth ↔ prior matching for one image (docs/CONTRACT.md "Matching"; SSD paper §2.2 "Matching strategy").

A literal transcription of docs/CONTRACT.md steps 1-6, with a Python loop for the forcing step: this is the oracle,
readability wins over speed. Also the home of two matching rules that every layer applies:
:func:`check_padded_ground_truth` (step 6 on a padded batch: the one ground-truth validator of ``ssd_torch`` and
``kernels``) and :func:`float32_ambiguous_priors` (which priors a float32 path may legitimately decide either way:
the one near-tie rule of the tests and ``ssd_torch.parity``).
"""
from __future__ import annotations

import numpy as np

from .boxes import box_area, box_iou, cxcywh_to_xyxy

__all__ = ["match", "validate_ground_truth", "check_padded_ground_truth", "float32_ambiguous_priors",
           "float32_iou_tolerance", "FLOAT32_COORD_TOL"]


def validate_ground_truth(gt_boxes: np.ndarray, gt_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check ``gt_boxes[G, 4]`` (xyxy) and ``gt_labels[G]`` (ints >= 1); return them as float64 / int64.

    The shapes and integer labels here; docs/CONTRACT.md step 6 (a non-finite coordinate, a width or height
    <= 0, or a label below 1 is an input error) is :func:`check_padded_ground_truth`'s, on a batch of one image.
    """
    boxes = np.asarray(gt_boxes, dtype=np.float64)
    if boxes.size == 0 and boxes.ndim <= 2:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"gt_boxes must have shape [G, 4], got {boxes.shape}")
    raw_labels = np.asarray(gt_labels)
    if raw_labels.shape != (boxes.shape[0],):
        raise ValueError(f"gt_labels must have shape [G] = ({boxes.shape[0]},), got {raw_labels.shape}")
    labels = raw_labels.astype(np.int64)
    if not np.array_equal(labels, raw_labels):
        raise ValueError(f"gt_labels must be integers, got {raw_labels!r}")
    error = _ground_truth_error(boxes[None], labels[None], np.ones((1, len(boxes)), dtype=bool), batched=False)
    if error:
        raise ValueError(error)
    return boxes, labels


def check_padded_ground_truth(gt_boxes: np.ndarray, gt_labels: np.ndarray, counts: np.ndarray) -> None:
    """docs/CONTRACT.md "Matching" step 6 on a padded batch: the one ground-truth validator of every layer.

    ``gt_boxes[B, G, 4]`` xyxy, ``gt_labels[B, G]`` and ``counts[B]`` (NumPy arrays or CPU tensors); rows
    ``g >= counts[b]`` are padding and never checked. Raises ValueError naming the first problem: a count
    outside ``[0, G]``, or a real gt with a non-finite coordinate, a width or height <= 0, or a label below 1.
    ``ssd_torch.matching.match_batch`` and ``kernels.interop.match_batch_numba`` call it on CPU copies of their
    tensors (the reference is the layer both already import, and the rule is the reference's);
    :func:`validate_ground_truth` is its one-image case.
    """
    boxes = np.asarray(gt_boxes, dtype=np.float64)
    labels, counts = np.asarray(gt_labels), np.asarray(counts)
    num_gt = boxes.shape[1]
    outside = (counts < 0) | (counts > num_gt)
    if outside.any():
        b = int(np.flatnonzero(outside)[0])
        raise ValueError(f"counts[{b}] = {int(counts[b])} is outside [0, {num_gt}] (the padded batch holds "
                         f"{num_gt} gt rows per image)")
    error = _ground_truth_error(boxes, labels, np.arange(num_gt)[None, :] < counts[:, None], batched=True)
    if error:
        raise ValueError(error)


def _ground_truth_error(boxes: np.ndarray, labels: np.ndarray, valid: np.ndarray, batched: bool) -> str | None:
    """The message for the first valid gt (row-major over ``[B, G]``) that breaks step 6, else None."""
    finite = np.isfinite(boxes).all(axis=-1)
    with np.errstate(invalid="ignore"):  # inf - inf on a non-finite box, which is reported as such
        sized = (boxes[..., 2:] - boxes[..., :2] > 0).all(axis=-1)
    bad = valid & ~(finite & sized & (labels >= 1))
    if not bad.any():
        return None
    b, g = (int(i) for i in np.argwhere(bad)[0])
    where = f"{g} of image {b}" if batched else f"{g}"
    box = boxes[b, g]
    if not finite[b, g]:
        return f"gt box {where} has a non-finite coordinate: {box.tolist()}"
    if not sized[b, g]:
        return (f"gt box {where} is degenerate (width {box[2] - box[0]:g}, height {box[3] - box[1]:g}): "
                f"{box.tolist()}")
    return f"gt label {where} is {int(labels[b, g])}; object labels are 1..C-1 (0 is background)"


def match(gt_boxes: np.ndarray, gt_labels: np.ndarray, priors: np.ndarray,
          iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Assign each prior a class label and a gt index.

    gt_boxes: ``[G, 4]`` xyxy normalised (G may be 0); gt_labels: ``[G]`` ints in 1..C-1;
    priors: ``[P, 4]`` cxcywh normalised.
    Returns ``labels[P]`` int64 (0 = background) and ``matched_gt[P]`` int64, the gt index of each prior after
    forcing (for background priors too: it is the gt whose offsets the prior would regress); -1 everywhere
    when G = 0.
    """
    gt_boxes, gt_labels = validate_ground_truth(gt_boxes, gt_labels)
    priors = np.asarray(priors, dtype=np.float64)
    if priors.ndim != 2 or priors.shape[1] != 4 or priors.shape[0] == 0:
        raise ValueError(f"priors must have shape [P, 4] with P >= 1, got {priors.shape}")
    num_priors = priors.shape[0]
    num_gt = gt_boxes.shape[0]
    if num_gt == 0:  # step 5: G = 0 -> every prior is background
        return np.zeros(num_priors, dtype=np.int64), np.full(num_priors, -1, dtype=np.int64)

    iou = box_iou(gt_boxes, cxcywh_to_xyxy(priors))  # step 1: [G, P]
    best_gt = np.argmax(iou, axis=0).astype(np.int64)  # step 2: np.argmax returns the first index on ties
    best_iou = iou[best_gt, np.arange(num_priors)]
    best_prior = np.argmax(iou, axis=1)  # step 3: first index on ties
    for g in range(num_gt):  # step 4: in order, so a later gt wins a prior two gts both want
        best_gt[best_prior[g]] = g
        best_iou[best_prior[g]] = 2.0
    labels = np.where(best_iou >= iou_threshold, gt_labels[best_gt], 0).astype(np.int64)  # step 5
    return labels, best_gt


#: How far a float32 path's box coordinates may sit from the reference's, in normalised units: one float32 ulp
#: at 1.0 (2^-23). The float32 paths derive prior corners from cxcywh (``cx - w / 2`` rounds to half an ulp) and
#: may start from priors that are themselves float32 roundings of the reference's; the rest of the IoU arithmetic
#: rounds relative to its own operands and stays inside the first-order bound below (the torch layer's float32
#: IoUs stay within it on random SSD300 batches: tests/torch_core/test_torch_matching.py).
FLOAT32_COORD_TOL = 2.0 ** -23


def float32_iou_tolerance(gt_xyxy: np.ndarray, priors_xyxy: np.ndarray) -> np.ndarray:
    """``[G, P]``: how far a float32 IoU may sit from the float64 one, to first order, when every corner of the
    gt ``[G, 4]`` and prior ``[P, 4]`` boxes (xyxy) may be off by :data:`FLOAT32_COORD_TOL` = e.

    With intersection sides ``w, h`` (clamped at 0), half-perimeters ``s_g, s_p`` and ``union``:
    ``|d inter| <= (w + 2e)(h + 2e) - w h`` (0 unless both sides come within 2e of overlapping: boxes that nearly
    touch may overlap in float32) and ``|d union| <= 2e (s_g + s_p) + |d inter|``, so
    ``|d iou| <= (|d inter| + iou |d union|) / union``.
    """
    e = FLOAT32_COORD_TOL
    g, p = gt_xyxy[:, None, :], priors_xyxy[None, :, :]
    sides = np.minimum(g[..., 2:], p[..., 2:]) - np.maximum(g[..., :2], p[..., :2])  # [G, P, 2], < 0: apart
    inter = np.prod(np.clip(sides, 0.0, None), axis=-1)
    union = box_area(gt_xyxy)[:, None] + box_area(priors_xyxy)[None, :] - inter
    half_perimeters = (g[..., 2:] - g[..., :2]).sum(-1) + (p[..., 2:] - p[..., :2]).sum(-1)
    d_inter = np.prod(np.clip(sides + 2 * e, 0.0, None), axis=-1) - inter  # 0 for boxes clearly apart
    d_union = 2 * e * half_perimeters + d_inter
    union = np.maximum(union, np.finfo(np.float64).tiny)
    return (d_inter + inter / union * d_union) / union


def float32_ambiguous_priors(gt_boxes: np.ndarray, priors: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """``[P]`` bool: the priors whose match a float32 implementation may legitimately decide either way.

    gt_boxes ``[G, 4]`` xyxy and priors ``[P, 4]`` cxcywh, as for :func:`match`. docs/CONTRACT.md "Matching"
    compares IoUs in steps 2, 3 and 5; two IoUs tie "within float32 rounding" when their difference is at most
    the sum of their :func:`float32_iou_tolerance`. A prior is ambiguous when
      * step 5: its best IoU ties with the threshold;
      * step 2: it may be positive and its best IoU ties with that of a gt with a *different* box (identical
        boxes have bit-identical IoUs in every precision, so the first index wins everywhere);
      * steps 3-4: it ties with the best IoU of a gt whose best prior is not unique up to rounding (ties
        between priors with identical boxes excepted): forcing may land on any of them.
    The effects of each such decision stay on the flagged priors, so every other prior must match the
    reference exactly. The one definition used by the torch and kernel tests and by ``ssd_torch.parity``.
    """
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    priors = np.asarray(priors, dtype=np.float64)
    flags = np.zeros(len(priors), dtype=bool)
    if len(gt) == 0:
        return flags
    priors_xyxy = cxcywh_to_xyxy(priors)
    iou, tol = box_iou(gt, priors_xyxy), float32_iou_tolerance(gt, priors_xyxy)
    columns = np.arange(len(priors))
    best_gt = iou.argmax(axis=0)
    best, best_tol = iou[best_gt, columns], tol[best_gt, columns]
    flags |= np.abs(best - iou_threshold) <= best_tol  # step 5
    other_box = ~np.all(gt[:, None, :] == gt[best_gt][None, :, :], axis=-1)  # [G, P]
    rival = other_box & (best - iou <= best_tol + tol)
    flags |= rival.any(axis=0) & (best + best_tol >= iou_threshold)  # step 2
    rows = np.arange(len(gt))
    best_prior = iou.argmax(axis=1)
    top, top_tol = iou[rows, best_prior][:, None], tol[rows, best_prior][:, None]
    near = top - iou <= top_tol + tol  # [G, P]
    other_prior = ~np.all(priors[None, :, :] == priors[best_prior][:, None, :], axis=-1)
    torn = (near & other_prior).any(axis=1)  # step 3: best prior not unique
    flags |= (near & torn[:, None]).any(axis=0)  # step 4: forcing may land on any of them
    return flags
