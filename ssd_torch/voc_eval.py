"""Fast VOC07 evaluator: the rules of ``reference.voc_eval`` (the devkit's ``VOCevaldet.m``), vectorised in NumPy.

Same signature and result as :func:`reference.voc_eval.evaluate_voc` — the same AP floats, bit for bit — but
without a Python loop over detections (timings against the reference loop: ``benchmarks/results/voc_eval.json``,
from ``python -m benchmarks.bench_voc_eval``). The rules (docs/CONTRACT.md "VOC evaluation") and how they are
vectorised:

1. Each detection takes the gt box *of its class in its image* with the highest IoU (pixels, +1 widths, overlap
   only when ``iw > 0 and ih > 0``; first gt wins a tie). This does not depend on which boxes are already
   taken (the devkit never falls back to the second best), so it is computed for all detections at once:
   detections and gt are keyed by ``(image, class)``, every detection is paired with the gt boxes of its key
   (``np.repeat``), and a segmented max picks the best gt per detection.
2. Per class, detections are visited by score (descending, stable). A detection with IoU >= threshold whose
   gt is difficult is ignored; a non-difficult gt is a TP for the *first* detection (in that order) that picks
   it and an FP for every later one; IoU below threshold or no gt is an FP. "First in sorted order per gt" is
   a ``np.unique(..., return_index=True)`` over the sorted picks.
3. Cumulative TP/FP, recall, precision and the AP follow the reference's own operations (its ``voc_ap`` for the
   11-point AP; the all-point envelope as a reversed running max, which gives the same floats).

Boxes are pixel ``xyxy`` as in the VOC XML (1-based, inclusive), hence the devkit's +1 in widths.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from reference.voc_eval import VocResult, pixel_boxes, summarize_tp_fp, voc_ap

__all__ = ["evaluate_voc", "match_detections"]


def _as_array(x: Any, dtype: Any) -> np.ndarray:
    """A NumPy array of ``dtype`` from a NumPy array, a list or a (CPU or CUDA) torch tensor."""
    if hasattr(x, "detach"):  # torch tensor: without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _flatten_ground_truth(
    ground_truth: Mapping[Any, tuple], image_index: dict[Any, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate ``{image_id: (boxes[G,4] pixels, labels[G], difficult[G])}`` into flat arrays.

    Returns ``(image[M] int64, boxes[M,4] float64, labels[M] int64, difficult[M] bool)`` in dict order, gt order
    inside an image kept (it decides IoU ties). Fills ``image_index`` (image id -> row) as a side effect.
    """
    parts_img, parts_box, parts_lab, parts_diff = [], [], [], []
    for image_id, entry in ground_truth.items():
        if len(entry) != 3:
            raise ValueError(f"ground_truth[{image_id!r}] must be (boxes, labels, difficult), got {len(entry)} items")
        boxes = pixel_boxes(_as_array(entry[0], np.float64), f"ground truth of image {image_id!r}")
        labels = _as_array(entry[1], np.int64).reshape(-1)
        difficult = _as_array(entry[2], bool).reshape(-1)
        if not (len(boxes) == len(labels) == len(difficult)):
            raise ValueError(f"ground_truth[{image_id!r}]: {len(boxes)} boxes, {len(labels)} labels and "
                             f"{len(difficult)} difficult flags must have the same length")
        image_index[image_id] = len(image_index)
        parts_img.append(np.full(len(boxes), image_index[image_id], dtype=np.int64))
        parts_box.append(boxes)
        parts_lab.append(labels)
        parts_diff.append(difficult)
    return _concat(parts_img, np.int64), _concat_boxes(parts_box), _concat(parts_lab, np.int64), \
        _concat(parts_diff, bool)


def _flatten_detections(
    detections: Mapping[Any, tuple], image_index: dict[Any, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate ``{image_id: (boxes[D,4] pixels, scores[D], labels[D])}`` into flat arrays.

    Returns ``(image[N] int64, boxes[N,4] float64, scores[N] float64, labels[N] int64)`` in dict order then
    detection order — the order that decides score ties (stable sort).
    """
    parts_img, parts_box, parts_score, parts_lab = [], [], [], []
    for image_id, entry in detections.items():
        if len(entry) != 3:
            raise ValueError(f"detections[{image_id!r}] must be (boxes, scores, labels), got {len(entry)} items")
        if image_id not in image_index:
            raise ValueError(f"detections for image {image_id!r}, which has no ground-truth entry "
                             f"(every scored image needs one, possibly empty)")
        boxes = pixel_boxes(_as_array(entry[0], np.float64), f"detections of image {image_id!r}")
        scores = _as_array(entry[1], np.float64).reshape(-1)
        labels = _as_array(entry[2], np.int64).reshape(-1)
        if not (len(boxes) == len(scores) == len(labels)):
            raise ValueError(f"detections[{image_id!r}]: {len(boxes)} boxes, {len(scores)} scores and "
                             f"{len(labels)} labels must have the same length")
        parts_img.append(np.full(len(boxes), image_index[image_id], dtype=np.int64))
        parts_box.append(boxes)
        parts_score.append(scores)
        parts_lab.append(labels)
    return _concat(parts_img, np.int64), _concat_boxes(parts_box), _concat(parts_score, np.float64), \
        _concat(parts_lab, np.int64)


def _concat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)


def _concat_boxes(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, 4), dtype=np.float64)


def _pair_iou(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Devkit IoU of row-aligned pairs ``det[K,4]`` / ``gt[K,4]`` (pixels, +1 widths); 0 unless iw > 0 and ih > 0.

    The operations and their order are the reference's (``reference.voc_eval._pixel_iou``), so that an IoU
    sitting exactly at the threshold rounds the same way: ``iw*ih / ((bw*bh + gw*gh) - iw*ih)``.
    """
    iw = np.minimum(det[:, 2], gt[:, 2]) - np.maximum(det[:, 0], gt[:, 0]) + 1.0
    ih = np.minimum(det[:, 3], gt[:, 3]) - np.maximum(det[:, 1], gt[:, 1]) + 1.0
    inter = iw * ih
    union = ((det[:, 2] - det[:, 0] + 1.0) * (det[:, 3] - det[:, 1] + 1.0)
             + (gt[:, 2] - gt[:, 0] + 1.0) * (gt[:, 3] - gt[:, 1] + 1.0) - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((iw > 0) & (ih > 0), inter / np.where(union > 0, union, 1.0), 0.0)


def _best_gt(
    det_key: np.ndarray, det_boxes: np.ndarray, gt_key: np.ndarray, gt_boxes: np.ndarray, num_keys: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each detection, the gt of the same ``(image, class)`` key (in ``0..num_keys-1``) with the highest IoU.

    Returns ``(jmax[N] int64, ovmax[N] float64)``: the flat gt index and its IoU (0 when nothing overlaps: then
    the first gt, as ``np.argmax``); ``(-1, -inf)`` when the key has no gt at all, so such a detection can never
    claim. Ties go to the first gt in the image's order (the devkit's strict ``ov > ovmax``).
    """
    n = len(det_key)
    order = np.argsort(gt_key, kind="stable")  # stable: gt order inside an (image, class) is kept
    per_key = np.bincount(gt_key, minlength=num_keys)
    start = (np.cumsum(per_key) - per_key)[det_key]
    count = per_key[det_key]
    pair_det = np.repeat(np.arange(n), count)
    first_pair = np.cumsum(count) - count
    pair_gt = order[start[pair_det] + (np.arange(len(pair_det)) - first_pair[pair_det])]
    iou = _pair_iou(det_boxes[pair_det], gt_boxes[pair_gt])
    ovmax = np.full(n, -np.inf)
    has = count > 0
    if len(pair_det):
        ovmax[has] = np.maximum.reduceat(iou, first_pair[has])
    # first pair (in gt order) reaching the maximum; pairs of a detection are contiguous, in gt order
    hit = iou == ovmax[pair_det]
    hit_det, hit_gt = pair_det[hit], pair_gt[hit]
    first = np.ones(len(hit_det), dtype=bool)
    first[1:] = hit_det[1:] != hit_det[:-1]
    jmax = np.full(n, -1, dtype=np.int64)
    jmax[hit_det[first]] = hit_gt[first]
    return jmax, ovmax


def match_detections(
    detections: Mapping[Any, tuple],
    ground_truth: Mapping[Any, tuple],
    num_classes: int,
    iou_threshold: float = 0.5,
) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], dict[int, int]]:
    """Per class c in 1..C-1: the TP and FP flags of its detections in score order, and ``npos[c]``.

    Returns ``({c: (tp[N_c] float64, fp[N_c] float64)}, {c: npos_c})``; a detection matched to a difficult gt
    has ``tp = fp = 0`` (ignored). Inputs as in :func:`evaluate_voc`.
    """
    image_index: dict[Any, int] = {}
    gt_img, gt_boxes, gt_lab, gt_diff = _flatten_ground_truth(ground_truth, image_index)
    det_img, det_boxes, det_score, det_lab = _flatten_detections(detections, image_index)
    _check_labels("ground-truth", gt_lab, num_classes)
    _check_labels("detection", det_lab, num_classes)
    if np.isnan(det_score).any():
        raise ValueError("detection scores contain NaN")
    # class-major, score-descending, stable on the concatenation order (docs/CONTRACT.md: "sort by score (stable)")
    by_score = np.argsort(-det_score, kind="stable")
    # labels fit in int16 (checked above): NumPy's stable sort is then a linear-time radix sort
    small = det_lab.astype(np.int16) if num_classes <= np.iinfo(np.int16).max else det_lab
    order = by_score[np.argsort(small[by_score], kind="stable")]
    det_img, det_boxes, det_lab = det_img[order], det_boxes[order], det_lab[order]
    jmax, ovmax = _best_gt(det_img * num_classes + det_lab, det_boxes, gt_img * num_classes + gt_lab, gt_boxes,
                           len(image_index) * num_classes)
    claims = ovmax >= iou_threshold
    ignored = np.zeros_like(claims)
    ignored[claims] = gt_diff[jmax[claims]]  # a claim always has a gt (jmax >= 0)
    claims &= ~ignored
    tp = np.zeros(len(order))
    claim_pos = np.flatnonzero(claims)
    _, first = np.unique(jmax[claim_pos], return_index=True)  # the first claim of each gt, in sorted order
    tp[claim_pos[first]] = 1.0
    fp = (1.0 - tp) * ~ignored
    bounds = np.searchsorted(det_lab, np.arange(num_classes + 1), side="left")
    flags = {c: (tp[bounds[c]:bounds[c + 1]], fp[bounds[c]:bounds[c + 1]]) for c in range(1, num_classes)}
    npos_all = np.bincount(gt_lab[~gt_diff], minlength=num_classes)
    return flags, {c: int(npos_all[c]) for c in range(1, num_classes)}


def _check_labels(what: str, labels: np.ndarray, num_classes: int) -> None:
    bad = labels[(labels < 1) | (labels >= num_classes)]
    if len(bad):
        raise ValueError(f"{what} labels must be in 1..{num_classes - 1} (0 is background), got {int(bad[0])}")


def evaluate_voc(
    detections: Mapping[Any, tuple],
    ground_truth: Mapping[Any, tuple],
    num_classes: int,
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
    class_names: Sequence[str] | None = None,
) -> VocResult:
    """VOC AP per class and mAP (docs/CONTRACT.md "VOC evaluation"); equal, float for float, to the reference.

    detections: ``{image_id: (boxes[D,4] pixels xyxy, scores[D], labels[D])}`` (NumPy arrays or tensors).
    ground_truth: ``{image_id: (boxes[G,4] pixels xyxy as in the XML, labels[G], difficult[G] bool)}`` for
    every image of the split. Equal scores keep the order of ``detections`` (dict order, then index).
    A class without non-difficult gt gets AP = NaN and is left out of the mAP; one with gt but no detection 0.
    ``class_names`` (index 0 = background) only labels ``VocResult.summary``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (background + 1), got {num_classes!r}")
    flags, npos = match_detections(detections, ground_truth, int(num_classes), iou_threshold)
    # the reference's summary (cumsum, eps-guarded precision, recall = tp / npos), with the vectorised envelope
    return summarize_tp_fp({c: flags[c] for c in range(1, int(num_classes))}, npos, use_07_metric, class_names,
                           ap_fn=_ap)


def _ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """``reference.voc_ap`` with the all-point envelope as a reversed running max instead of a Python loop.

    ``max`` is exact, so the envelope holds the same floats, and the final ``np.sum`` runs on the same array:
    the AP is bit-identical (tested). The 11-point AP is the reference's own function (11 vectorised masks).
    """
    if use_07_metric:
        return voc_ap(recall, precision, True)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.maximum.accumulate(np.concatenate([[0.0], precision, [0.0]])[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))
