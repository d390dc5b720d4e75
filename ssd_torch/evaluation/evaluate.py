"""Inference over a dataset and VOC scoring (docs/CONTRACT.md "NMS and post-processing", "VOC evaluation").

``run_inference`` runs a ``Predictor`` (the one inference path) over a ``VOCDataset``-like dataset
(``ds[i] -> (image[3,300,300], target)``,
``ds.annotation(i) -> Annotation(image_id, width, height, ...)``) into the evaluator's detection dict, with
boxes converted from xyxy normalised to VOC pixels (1-based, inclusive: ``x_min_px = x * W + 1``,
``x_max_px = x * W``, the inverse of docs/CONTRACT.md "Pixel boxes"). ``evaluate_detections`` scores them with
``ssd_torch.voc_eval.evaluate_voc`` (the fast twin) when it exists, else ``reference.voc_eval.evaluate_voc``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Hashable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ssd_torch.labels import categories_of
from ssd_torch.data.voc import normalized_to_pixel

if TYPE_CHECKING:
    from ssd_torch.modeling.predictor import Predictor

__all__ = ["run_inference", "evaluate_detections", "ground_truth_of", "normalized_to_voc_pixels",
           "format_ap_table", "evaluate_model"]

#: ``{image_id: (boxes[D,4] VOC pixels, scores[D], labels[D])}``; not ``ssd_torch.nms.Detections`` (one image).
DetectionsByImage = dict[Hashable, tuple[np.ndarray, np.ndarray, np.ndarray]]


class _Indexed(Dataset):
    """``i -> (i, image)``: keeps the dataset index next to the image through the DataLoader."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[int, Tensor]:
        return i, self.base[i][0]


def _collate(items: list[tuple[int, Tensor]]) -> tuple[list[int], Tensor]:
    return [i for i, _ in items], torch.stack([img for _, img in items])


def normalized_to_voc_pixels(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """xyxy normalised ``[D, 4]`` -> VOC pixel boxes ``[D, 4]`` (float64, 1-based inclusive corners): the data
    layer's :func:`ssd_torch.data.voc.normalized_to_pixel`, kept under this name for the evaluation callers."""
    return normalized_to_pixel(np.asarray(boxes).reshape(-1, 4), width, height)


def run_inference(predictor: "Predictor", dataset: Any, batch_size: int = 32, *, num_workers: int = 0,
                  progress: bool = False) -> DetectionsByImage:
    """Detections of ``predictor`` (``ssd_torch.modeling.predictor.Predictor``: the model, its variances and
    post-processing settings) on every image of ``dataset``, whose images went through the predictor's
    transform: ``{image_id: (boxes[D,4] VOC pixels, scores[D], labels[D])}`` (labels 1..C-1)."""
    from tqdm.auto import tqdm

    loader = DataLoader(_Indexed(dataset), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_collate)
    out: DetectionsByImage = {}
    for indices, images in tqdm(loader, disable=not progress, desc="inference", unit="batch"):
        for i, det in zip(indices, predictor(images)):
            ann = dataset.annotation(i)
            out[ann.image_id] = (normalized_to_voc_pixels(det.boxes.cpu().numpy(), ann.width, ann.height),
                                 det.scores.float().cpu().numpy().astype(np.float64),
                                 det.labels.cpu().numpy().astype(np.int64))
    return out


def ground_truth_of(dataset: Any) -> dict[Hashable, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{image_id: (boxes[G,4] VOC pixels, labels[G], difficult[G] bool)}`` from ``dataset.annotation(i)``."""
    gt = {}
    for i in range(len(dataset)):
        ann = dataset.annotation(i)
        gt[ann.image_id] = (np.asarray(ann.boxes, dtype=np.float64).reshape(-1, 4),
                            np.asarray(ann.labels, dtype=np.int64), np.asarray(ann.difficult, dtype=bool))
    return gt


def _evaluator() -> Any:
    try:
        from ssd_torch.voc_eval import evaluate_voc
    except ImportError:
        from reference.voc_eval import evaluate_voc
    return evaluate_voc


def evaluate_detections(dataset: Any, detections: DetectionsByImage, use_07_metric: bool = True,
                        num_classes: int | None = None, iou_threshold: float = 0.5) -> Any:
    """Score ``detections`` against ``dataset``'s annotations (difficult boxes ignored, VOC rules) -> VocResult.

    num_classes: C including background; default ``len(dataset.class_names) + 1``. Images of the dataset
    without any detection count (their ground truth adds to npos).
    """
    if num_classes is None:
        num_classes = len(dataset.class_names) + 1
    gt = ground_truth_of(dataset)
    unknown = [k for k in detections if k not in gt]
    if unknown:
        raise ValueError(f"detections for {len(unknown)} image ids not in the dataset, e.g. {unknown[:3]}")
    return _evaluator()(detections, gt, num_classes, iou_threshold=iou_threshold, use_07_metric=use_07_metric)


def format_ap_table(result: Any, class_names: list[str] | tuple[str, ...]) -> str:
    """A per-class AP table; ``class_names`` indexed by label (index 0 = background), NaN AP shown as n/a."""
    lines = [f"{'class':>16s}  {'AP':>7s}  {'npos':>5s}"]
    for c in sorted(result.ap):
        ap = result.ap[c]
        name = class_names[c] if c < len(class_names) else str(c)
        lines.append(f"{name:>16s}  {('%.4f' % ap) if np.isfinite(ap) else 'n/a':>7s}  {result.npos.get(c, 0):>5d}")
    lines.append(f"{'mAP':>16s}  {result.mAP:7.4f}")
    return "\n".join(lines)


def evaluate_model(predictor: "Predictor", dataset: Any, *, batch_size: int = 32, use_07_metric: bool = True,
                   num_workers: int = 0) -> dict[str, Any]:
    """``run_inference`` + ``evaluate_detections`` -> ``{"mAP": float, "metric": "voc07" (or "voc_area"),
    "AP/<class>": float, "result": VocResult}`` (the shape ``Trainer``'s ``eval_fn`` returns; ``metric`` names
    the headline, ``ssd_torch.evaluation.headline``; per-class entries and objects stay out of the CSV)."""
    from ssd_torch.evaluation.headline import VOC07, VOC_AREA

    dets = run_inference(predictor, dataset, batch_size, num_workers=num_workers)
    result = evaluate_detections(dataset, dets, use_07_metric=use_07_metric)
    names = categories_of(dataset.class_names)
    metrics: dict[str, Any] = {"mAP": float(result.mAP), "metric": VOC07 if use_07_metric else VOC_AREA,
                               "result": result}
    for c, ap in result.ap.items():
        metrics[f"AP/{names[c] if c < len(names) else c}"] = float(ap)
    return metrics
