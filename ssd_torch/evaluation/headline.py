"""The headline metric of a periodic evaluation: the ``"mAP"`` of an evaluation dict and of ``eval.csv``, and
the one place that says which metric it is.

``evaluate_model`` (VOC data) and ``evaluate_coco_model`` (COCO data) both return their headline under
``"mAP"`` (``best.pt`` is kept by it) and its key under ``"metric"``; ``eval.csv`` has both columns, and
``ssd-report`` and the run's ``curves.png`` label the number with :func:`headline_label`.
"""
from __future__ import annotations

from typing import Mapping, Optional

__all__ = ["VOC07", "VOC_AREA", "COCO", "HEADLINES", "headline_label", "headline_of_run"]

VOC07 = "voc07"
VOC_AREA = "voc_area"
COCO = "coco"
#: metric key -> what its "mAP" is
HEADLINES: dict[str, str] = {VOC07: "VOC07 mAP@0.5 (11-point)", VOC_AREA: "VOC mAP@0.5 (all-point)",
                             COCO: "COCO AP@[.5:.95]"}


def headline_label(key: Optional[str]) -> str:
    """The label of a metric key (an unknown or missing key reads ``"mAP"``)."""
    return HEADLINES.get(key or "", key or "mAP")


def headline_of_run(eval_rows: list[Mapping[str, str]]) -> Optional[str]:
    """The metric key of a run's latest evaluation: the ``metric`` column of the last ``eval.csv`` row, else
    ``voc07`` (a run folder written before that column existed, when ssd-train evaluated VOC07 only); None
    without an evaluation."""
    if not eval_rows:
        return None
    return eval_rows[-1].get("metric") or VOC07
