"""PASCAL VOC detection evaluation with the devkit's rules (docs/CONTRACT.md "VOC evaluation"; ``VOCevaldet.m`` and
``VOCap.m`` of the VOC2012 devkit).

Per class, over all images: detections sorted by score (stable); each detection takes the gt box of its class
in its image with the highest IoU (pixel coordinates, +1 widths, overlap only if iw > 0 and ih > 0), difficult
and taken boxes included. IoU >= threshold: difficult -> ignored, else not taken -> TP, taken -> FP (no
fall-back to the second best). Below the threshold or no gt -> FP. ``npos`` counts non-difficult gt only.
ARCHITECTURE.md: a class with npos = 0 gets AP = NaN and is left out of the mAP.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Hashable, Mapping, Sequence

import numpy as np

__all__ = ["VocResult", "voc_ap", "evaluate_voc", "pixel_boxes", "RECALL_POINTS_11"]

#: The 11 recall thresholds {0.0, 0.1, ..., 1.0}, each the double nearest to i/10. Neither np.arange(0, 1.1, 0.1)
#: nor np.linspace(0, 1, 11) gives these (both produce 0.30000000000000004, which misses a recall of exactly 0.3).
RECALL_POINTS_11: tuple[float, ...] = tuple(i / 10 for i in range(11))


@dataclass(frozen=True)
class VocResult:
    """Per-class AP and npos (keys: labels 1..C-1), the mAP over classes with npos > 0, and per-class
    recall / precision curves (detections in score order; recall is NaN where npos = 0)."""

    ap: dict[int, float]
    mAP: float
    npos: dict[int, int]
    recall: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    precision: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    class_names: tuple[str, ...] | None = field(default=None, compare=False)

    def summary(self) -> str:
        """One line per class (name if ``class_names`` was given) and the mAP."""
        lines = []
        for c, ap in self.ap.items():
            name = self.class_names[c] if self.class_names is not None else str(c)
            lines.append(f"{name:>14s}: AP {ap:.4f}  (npos {self.npos[c]})")
        lines.append(f"{'mAP':>14s}: {self.mAP:.4f}")
        return "\n".join(lines)


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """Average precision of one class from its cumulative ``recall[N]`` and ``precision[N]``.

    ``use_07_metric``: the VOC2007 11-point AP, mean over ``r in RECALL_POINTS_11`` of
    ``max(precision[recall >= r])`` (0 where no recall reaches r). Otherwise the all-point area (VOC2010+
    ``VOCap.m``): precision made monotone from the right (the envelope), summed over recall steps.
    """
    rec = np.asarray(recall, dtype=np.float64).ravel()
    prec = np.asarray(precision, dtype=np.float64).ravel()
    if rec.shape != prec.shape:
        raise ValueError(f"recall and precision must have the same length, got {rec.shape} and {prec.shape}")
    if use_07_metric:
        total = 0.0
        for r in RECALL_POINTS_11:
            reached = prec[rec >= r]
            total += float(reached.max()) if reached.size else 0.0
        return total / 11.0
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    for i in range(mpre.size - 2, -1, -1):  # the envelope: best precision at this recall or beyond
        mpre[i] = max(mpre[i], mpre[i + 1])
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _pixel_iou(box: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """Devkit overlap of one pixel box ``[4]`` with ``gts[G, 4]`` (1-based inclusive, hence the +1); 0 unless
    iw > 0 and ih > 0 (without the guard two negative extents would multiply to a positive area)."""
    iw = np.minimum(box[2], gts[:, 2]) - np.maximum(box[0], gts[:, 0]) + 1.0
    ih = np.minimum(box[3], gts[:, 3]) - np.maximum(box[1], gts[:, 1]) + 1.0
    inter = iw * ih
    union = ((box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
             + (gts[:, 2] - gts[:, 0] + 1.0) * (gts[:, 3] - gts[:, 1] + 1.0) - inter)
    return np.where((iw > 0) & (ih > 0), inter / np.where(union > 0, union, 1.0), 0.0)


def _class_tp_fp(dets: list[tuple[Hashable, float, np.ndarray]], gts: dict[Hashable, tuple[np.ndarray, np.ndarray]],
                 iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """TP / FP flags (float arrays) of one class's detections, in stable score-descending order."""
    order = sorted(range(len(dets)), key=lambda i: -dets[i][1])  # Python's sort is stable
    taken = {img: np.zeros(len(boxes), dtype=bool) for img, (boxes, _) in gts.items()}
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    for rank, i in enumerate(order):
        img, _, box = dets[i]
        boxes, difficult = gts.get(img, (np.zeros((0, 4)), np.zeros(0, dtype=bool)))
        if len(boxes) == 0:
            fp[rank] = 1.0
            continue
        ov = _pixel_iou(box, boxes)
        j = int(np.argmax(ov))  # first index on ties, like the devkit's strict "ov > ovmax"
        if ov[j] >= iou_threshold:
            if difficult[j]:
                continue  # ignored: neither TP nor FP
            if not taken[img][j]:
                tp[rank], taken[img][j] = 1.0, True
            else:
                fp[rank] = 1.0  # a duplicate; no fall-back to the second-best gt
        else:
            fp[rank] = 1.0
    return tp, fp


def evaluate_voc(detections: Mapping[Hashable, tuple], ground_truth: Mapping[Hashable, tuple], num_classes: int,
                 iou_threshold: float = 0.5, use_07_metric: bool = True,
                 class_names: Sequence[str] | None = None) -> VocResult:
    """Per-class AP and mAP over a split.

    detections: ``{image_id: (boxes[D, 4] pixels, scores[D], labels[D])}``; ground_truth:
    ``{image_id: (boxes[G, 4] pixels, labels[G], difficult[G] bool)}`` for every image of the split. Pixel boxes
    are as in the VOC XML (1-based, inclusive). Labels 1..num_classes-1. Equal scores keep the order of
    ``detections`` (dict order, then index inside the image). ``class_names`` (index 0 = background) only
    labels ``VocResult.summary``.
    """
    gt_by_class, npos = _collect_ground_truth(ground_truth, num_classes)
    dets_by_class = _collect_detections(detections, ground_truth, num_classes)
    tp_fp = {c: _class_tp_fp(dets_by_class[c], gt_by_class[c], iou_threshold) for c in range(1, num_classes)}
    return summarize_tp_fp(tp_fp, npos, use_07_metric, class_names)


def summarize_tp_fp(tp_fp: Mapping[int, tuple[np.ndarray, np.ndarray]], npos: Mapping[int, int],
                    use_07_metric: bool = True, class_names: Sequence[str] | None = None,
                    ap_fn: Callable[[np.ndarray, np.ndarray, bool], float] | None = None) -> VocResult:
    """Per-class precision/recall/AP and the mAP from each class's TP/FP flags in score order.

    ``tp_fp[c] = (tp[D_c], fp[D_c])`` float 0/1 flags (an ignored difficult detection has both 0); ``npos[c]``
    counts non-difficult gt. ``ap_fn`` defaults to :func:`voc_ap` (a fast evaluator may pass an equal one).
    """
    ap_fn = voc_ap if ap_fn is None else ap_fn
    ap, recall, precision = {}, {}, {}
    for c, (tp, fp) in tp_fp.items():
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        # 0/0 guard: an ignored (difficult) first detection leaves tp + fp = 0
        precision[c] = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        if npos[c] == 0:
            recall[c], ap[c] = np.full_like(tp, np.nan), math.nan
        else:
            recall[c] = tp / npos[c]
            ap[c] = ap_fn(recall[c], precision[c], use_07_metric)
    valid = [v for v in ap.values() if not math.isnan(v)]
    mean_ap = float(np.mean(valid)) if valid else math.nan
    names = tuple(class_names) if class_names is not None else None
    return VocResult(ap=ap, mAP=mean_ap, npos=dict(npos), recall=recall, precision=precision, class_names=names)


def _collect_ground_truth(ground_truth: Mapping[Hashable, tuple], num_classes: int
                          ) -> tuple[dict[int, dict], dict[int, int]]:
    """``{class: {image: (boxes[G_c, 4], difficult[G_c])}}`` and ``npos[class]`` (non-difficult only)."""
    by_class: dict[int, dict] = {c: {} for c in range(1, num_classes)}
    npos = {c: 0 for c in range(1, num_classes)}
    for img, (boxes, labels, difficult) in ground_truth.items():
        boxes = pixel_boxes(boxes, f"ground truth of image {img!r}")
        labels = _labels(labels, len(boxes), num_classes, f"ground truth of image {img!r}")
        difficult = np.asarray(difficult, dtype=bool).reshape(-1)
        if difficult.shape != labels.shape:
            raise ValueError(f"ground truth of image {img!r}: difficult must have shape {labels.shape}")
        for c in range(1, num_classes):
            sel = labels == c
            by_class[c][img] = (boxes[sel], difficult[sel])
            npos[c] += int(np.sum(sel & ~difficult))
    return by_class, npos


def _collect_detections(detections: Mapping[Hashable, tuple], ground_truth: Mapping[Hashable, tuple],
                        num_classes: int) -> dict[int, list]:
    """``{class: [(image_id, score, box[4]), ...]}`` in dict order, then index inside the image."""
    by_class: dict[int, list] = {c: [] for c in range(1, num_classes)}
    for img, (boxes, scores, labels) in detections.items():
        if img not in ground_truth:
            raise ValueError(f"detections for image {img!r}, which has no ground-truth entry")
        boxes = pixel_boxes(boxes, f"detections of image {img!r}")
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        labels = _labels(labels, len(boxes), num_classes, f"detections of image {img!r}")
        if scores.shape != labels.shape:
            raise ValueError(f"detections of image {img!r}: scores must have shape {labels.shape}")
        for d in range(len(boxes)):
            by_class[int(labels[d])].append((img, float(scores[d]), boxes[d]))
    return by_class


def pixel_boxes(boxes: np.ndarray, where: str) -> np.ndarray:
    """``boxes`` as a float64 ``[N, 4]`` array of pixel xyxy boxes (an empty input becomes ``[0, 4]``);
    ValueError naming ``where`` (e.g. ``"detections of image 'a'"``) for any other shape. The one shape check
    of both VOC evaluators."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{where}: boxes must have shape [N, 4], got {arr.shape}")
    return arr


def _labels(labels: np.ndarray, n: int, num_classes: int, where: str) -> np.ndarray:
    arr = np.asarray(labels).reshape(-1).astype(np.int64)
    if arr.shape != (n,):
        raise ValueError(f"{where}: labels must have shape ({n},), got {arr.shape}")
    if n and (arr.min() < 1 or arr.max() >= num_classes):
        raise ValueError(f"{where}: labels must be in 1..{num_classes - 1}, got {arr.tolist()}")
    return arr
