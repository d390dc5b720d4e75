"""COCO evaluation with pycocotools' ``COCOeval`` (bbox): AP@[.5:.95], AP50, AP75, AP small/medium/large and AR.

The numbers are pycocotools' own (the reference implementation everybody reports; nothing is re-implemented
here): this module only builds its inputs and reads its outputs.

- :func:`coco_results` maps detections (``{image_id: (boxes[D, 4] VOC pixels, scores[D], labels[D])}``, the
  output of ``ssd_torch.evaluation.evaluate.run_inference``) back to the file's ids: the standard results list
  ``[{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}]`` that other tools accept
  (boxes through ``ssd_torch.data.coco.voc_pixels_to_coco``, the inverse of the reader's pixel map).
- :func:`coco_ground_truth` is the dataset's kept images and annotations with the file's ids, boxes, areas and
  ``iscrowd`` flags (images skipped as bad data are left out on both sides).
- :func:`run_cocoeval` runs ``COCOeval`` -> :class:`CocoResult` (the 12 stats, per-class AP, pycocotools'
  printed summary). A stat is ``-1`` where pycocotools has no ground truth for it (e.g. no small objects).
- :func:`evaluate_coco_model` is the periodic evaluation for the training loop, like
  ``ssd_torch.evaluation.evaluate.evaluate_model`` for VOC: ``{"mAP": AP@[.5:.95], "AP": ..., "AP50": ...,
  "AP/<class>": ..., "voc_mAP": ..., "result": CocoResult}``.

The dataset is a ``ssd_torch.data.coco.CocoDataset`` or anything with its ``annotation(i)``, ``coco_record(i)``,
``class_names`` and ``category_ids``. Ground-truth annotations reach pycocotools with ids ``1..M`` rather than
the file's: ``COCOeval`` records a matched gt by its id and reads id 0 as "unmatched", so a file whose
annotation ids start at 0 would silently lose a true positive; the ids have no other role in the metrics.
Evaluation time for a 5,000-image file: ``benchmarks/results/coco_cpu.json``.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Mapping

import numpy as np

from ssd_torch.data.coco import voc_pixels_to_coco

__all__ = ["COCO_STAT_NAMES", "CocoResult", "coco_results", "coco_ground_truth", "run_cocoeval", "evaluate_coco",
           "write_results_json", "coco_metrics", "coco_model_metrics", "evaluate_coco_model"]

#: ``COCOeval.stats`` in order (maxDets 100 unless the name says otherwise; AR1/AR10/AR100 = maxDets 1/10/100).
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
                   "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


@dataclass(frozen=True)
class CocoResult:
    """``stats``: :data:`COCO_STAT_NAMES` -> value; ``per_class``: class name -> AP@[.5:.95] (area all, 100
    detections; NaN for a class without ground truth); ``summary``: the table pycocotools prints."""

    stats: dict[str, float]
    per_class: dict[str, float] = field(default_factory=dict)
    summary: str = ""
    num_detections: int = 0


def _dataset_index(dataset: Any) -> dict[Hashable, Any]:
    """``{annotation(i).image_id: coco_record(i)}`` over the dataset."""
    return {dataset.annotation(i).image_id: dataset.coco_record(i) for i in range(len(dataset))}


def coco_results(dataset: Any, detections: Mapping[Hashable, tuple]) -> list[dict]:
    """The standard COCO results list of ``detections`` (VOC pixel boxes keyed by ``annotation(i).image_id``).

    Labels map to ``dataset.category_ids[label - 1]``; a label whose class the file lacks has no category id
    and its detections are left out (pycocotools would not score them either). Raises ValueError for a
    detection on an image that is not in the dataset.
    """
    records = _dataset_index(dataset)
    unknown = [k for k in detections if k not in records]
    if unknown:
        raise ValueError(f"detections for {len(unknown)} image ids not in the dataset, e.g. {unknown[:3]}")
    category = np.array([-1 if c is None else c for c in (None, *dataset.category_ids)], dtype=np.int64)
    out: list[dict] = []
    for key, (boxes, scores, labels) in detections.items():
        image_id = records[key].image_id
        xywh = voc_pixels_to_coco(np.asarray(boxes, dtype=np.float64)).tolist()
        cats = category[np.asarray(labels, dtype=np.int64).reshape(-1)].tolist()
        out += [{"image_id": image_id, "category_id": c, "bbox": b, "score": float(s)}
                for b, s, c in zip(xywh, np.asarray(scores, dtype=np.float64).tolist(), cats) if c >= 0]
    return out


def coco_ground_truth(dataset: Any) -> dict:
    """The dataset's images and annotations as a COCO dict (file ids, boxes, areas, iscrowd; categories of the
    classes the file has); annotation ids renumbered ``1..M`` (see the module docstring)."""
    categories = [{"id": c, "name": n} for c, n in zip(dataset.category_ids, dataset.class_names) if c is not None]
    images, annotations = [], []
    for i in range(len(dataset)):
        r = dataset.coco_record(i)
        images.append({"id": r.image_id, "file_name": r.file_name, "width": r.width, "height": r.height})
        for cat, box, area, crowd in zip(r.category_ids.tolist(), r.bboxes.tolist(), r.areas.tolist(),
                                         r.iscrowd.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": r.image_id, "category_id": cat,
                                "bbox": box, "area": area, "iscrowd": int(crowd)})
    return {"images": images, "annotations": annotations, "categories": categories}


def _empty_results(gt: Any) -> Any:
    """A results object without detections (``loadRes`` refuses an empty list)."""
    from pycocotools.coco import COCO

    dt = COCO()
    dt.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]),
                  "annotations": []}
    dt.createIndex()
    return dt


def run_cocoeval(ground_truth: dict, results: list[dict]) -> CocoResult:
    """pycocotools ``COCOeval(iouType="bbox")`` of ``results`` against ``ground_truth`` (COCO dicts) over every
    image of ``ground_truth``. ``results`` are not modified (``loadRes`` annotates its input: copies go in)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # pycocotools prints its progress and the table
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        dt = gt.loadRes([dict(r) for r in results]) if results else _empty_results(gt)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        table = io.StringIO()
        with contextlib.redirect_stdout(table):
            evaluator.summarize()
    names = {c["id"]: c["name"] for c in ground_truth["categories"]}
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]: area "all" = 0, maxDets 100 = -1
    per_class = {}
    for k, cat in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]
        per_class[names[cat]] = float(np.mean(p[p > -1])) if np.any(p > -1) else float("nan")
    return CocoResult({n: float(v) for n, v in zip(COCO_STAT_NAMES, evaluator.stats)}, per_class,
                      table.getvalue(), len(results))


def evaluate_coco(dataset: Any, detections: Mapping[Hashable, tuple]) -> CocoResult:
    """:func:`run_cocoeval` of ``detections`` (VOC pixels, as ``run_inference`` returns) on ``dataset``."""
    return run_cocoeval(coco_ground_truth(dataset), coco_results(dataset, detections))


def write_results_json(path: Path, results: list[dict]) -> Path:
    """Write a results list as JSON, atomically (``ssd_torch.files.atomic_write_text``)."""
    from ssd_torch.files import atomic_write_text

    return atomic_write_text(path, json.dumps(results, separators=(",", ":")) + "\n")


def _voc_to_coco_box(box: np.ndarray) -> list[float]:
    return voc_pixels_to_coco(box)[0].tolist()


def coco_metrics(detections: Mapping[Hashable, tuple], ground_truth: Mapping[Hashable, tuple], num_classes: int,
                 sizes: Mapping[Hashable, tuple[int, int]]) -> dict[str, float]:
    """COCO-style AP/AR of VOC data (``ssd-eval --coco`` on a VOC split): VOC-format detections and ground
    truth ``{image_id: (boxes[G, 4] VOC pixels, labels[G], difficult[G])}``, ``sizes`` ``{image_id: (W, H)}``.

    Difficult boxes become ``iscrowd`` (a detection on them is neither TP nor FP, close to the VOC rule); the
    area of a box is ``w * h``. Categories are the labels ``1..num_classes-1``.
    """
    index = {image_id: k + 1 for k, image_id in enumerate(ground_truth)}
    images = [{"id": index[i], "width": int(sizes[i][0]), "height": int(sizes[i][1])} for i in ground_truth]
    annotations = []
    for image_id, (boxes, labels, difficult) in ground_truth.items():
        for box, label, hard in zip(np.asarray(boxes).reshape(-1, 4), labels, difficult):
            xywh = _voc_to_coco_box(box)
            annotations.append({"id": len(annotations) + 1, "image_id": index[image_id], "category_id": int(label),
                                "bbox": xywh, "area": xywh[2] * xywh[3], "iscrowd": int(bool(hard))})
    results = [{"image_id": index[image_id], "category_id": int(label), "bbox": _voc_to_coco_box(box),
                "score": float(score)}
               for image_id, (boxes, scores, labels) in detections.items()
               for box, score, label in zip(np.asarray(boxes).reshape(-1, 4), scores, labels)]
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": c, "name": str(c)} for c in range(1, num_classes)]}
    return run_cocoeval(gt, results).stats


def coco_model_metrics(dataset: Any, detections: Mapping[Hashable, tuple],
                       use_07_metric: bool = True) -> dict[str, Any]:
    """The metrics dict of :func:`evaluate_coco_model` from detections already computed."""
    from ssd_torch.evaluation.evaluate import evaluate_detections

    result = evaluate_coco(dataset, detections)
    voc = evaluate_detections(dataset, detections, use_07_metric=use_07_metric)
    from ssd_torch.evaluation.headline import COCO

    metrics: dict[str, Any] = {"mAP": result.stats["AP"], "metric": COCO, **result.stats, "voc_mAP": float(voc.mAP)}
    metrics.update({f"AP/{name}": ap for name, ap in result.per_class.items()})
    metrics.update(result=result, voc_result=voc)
    return metrics


def evaluate_coco_model(predictor: Any, dataset: Any, *, batch_size: int = 32, use_07_metric: bool = True,
                        num_workers: int = 0) -> dict[str, Any]:
    """``run_inference`` of a ``Predictor`` + pycocotools on a COCO dataset -> ``{"mAP": AP@[.5:.95], "metric":
    "coco", "AP", "AP50", ... (every :data:`COCO_STAT_NAMES`), "AP/<class>": AP@[.5:.95] of the class,
    "voc_mAP": VOC07 mAP of the same detections (``use_07_metric=False``: the all-point AP), "result":
    CocoResult, "voc_result": VocResult}``: the shape ``Trainer``'s ``eval_fn`` returns, with "mAP" the metric
    ``best.pt`` is kept by."""
    from ssd_torch.evaluation.evaluate import run_inference

    dets = run_inference(predictor, dataset, batch_size, num_workers=num_workers)
    return coco_model_metrics(dataset, dets, use_07_metric)
