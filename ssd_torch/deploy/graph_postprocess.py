"""Post-processing as an exportable graph: decode, per-class threshold and top-k, ONNX NonMaxSuppression, the
per-image best ``max_detections`` in the fixed-size layout of docs/CONTRACT.md "Exported detector".

Why the graph matches ``ssd_torch.nms.postprocess`` although ONNX NonMaxSuppression is not our NMS (onnxruntime's
CPU kernel, ``core/providers/cpu/object_detection/non_max_suppression.cc`` and ``non_max_suppression_helper.h``):

* ties: the ONNX spec leaves the order of equal scores open. onnxruntime's CPU kernel today breaks them by
  lower index (``BoxInfoPtr::operator<``), as we do, but older versions popped a score-only
  ``std::priority_queue`` (heap order), and other runtimes are free to differ. We never give it a tie: its
  scores are the candidates' *ranks* (``k - slot``, distinct small integers) after our own tie-exact TopK
  (ONNX TopK: equal values, lower index first).
* ``max_output_boxes_per_class`` caps the boxes it *keeps*, ours (``top_k``) the candidates it *considers*: the
  TopK above selects the ``top_k`` candidates first, and the cap is the slot count (never reached early).
* ``score_threshold`` is strict (``score > t``) and only applied when given: our threshold is applied before the
  TopK (non-candidates sink to -inf); the NMS sees rank 0 for empty slots and threshold 0.5.
* IoU: ``inter / (area_a + area_b - inter) > iou_threshold`` (strict), 0 for disjoint or empty boxes,
  float32 - the same decision as ours. With ``center_point_box = 0`` boxes are any two diagonal corners
  ``[y1, x1, y2, x2]``: our ``[x1, y1, x2, y2]`` swaps the roles of x and y, which IoU does not see.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ssd_torch.coding import decode
from ssd_torch.modeling.categories import fold_unused_classes
from ssd_torch.nms import class_log_scores, nms_keep_torch

__all__ = ["OUTPUT_NAMES", "RankNMS", "DetectorPostprocess"]

#: the outputs of the exported detector, in this order (docs/CONTRACT.md "Exported detector")
OUTPUT_NAMES = ("num_detections", "boxes", "scores", "labels")


class RankNMS(torch.autograd.Function):
    """Greedy NMS of each row of ``boxes[R, K, 4]`` (xyxy, slots sorted best first, the first ``counts[r]`` valid,
    given as ``ranks[R, 1, K]`` = K - slot, 0 when empty) -> ``selected[N, 3]`` int64 ``(row, 0, slot)``, rows
    ascending and slots in keep order. PyTorch runs ``ssd_torch.nms.nms_keep_torch``; the export emits ONNX
    NonMaxSuppression (see the module docstring for why the two agree)."""

    @staticmethod
    def forward(ctx: Any, boxes: torch.Tensor, ranks: torch.Tensor, max_out: torch.Tensor, iou: torch.Tensor,
                floor: torch.Tensor) -> torch.Tensor:
        counts = (ranks[:, 0] > floor).sum(dim=1)
        keep = nms_keep_torch(boxes[:, None], counts[:, None], float(iou))[:, 0]
        row, slot = keep.nonzero(as_tuple=True)
        return torch.stack([row, torch.zeros_like(row), slot], dim=1)

    @staticmethod
    def symbolic(g: Any, boxes: Any, ranks: Any, max_out: Any, iou: Any, floor: Any) -> Any:
        return g.op("NonMaxSuppression", boxes, ranks, max_out, iou, floor, center_point_box_i=0)

    @classmethod
    def select(cls, boxes: torch.Tensor, ranks: torch.Tensor, iou_threshold: float) -> torch.Tensor:
        """``selected[N, 3]`` of the class docstring. The cap ``max_output_boxes_per_class`` is the slot count
        K: it never cuts a row short (our ``top_k`` is applied before, by TopK); the score floor 0.5 drops the
        empty slots (rank 0)."""
        max_out = torch.tensor([boxes.shape[1]], dtype=torch.int64)
        iou = torch.tensor([iou_threshold], dtype=torch.float32)
        return cls.apply(boxes, ranks, max_out, iou, torch.tensor([0.5], dtype=torch.float32))


class DetectorPostprocess(torch.nn.Module):
    """``(loc[B, P, 4], conf[B, P, C])`` -> ``(num_detections[B] int64, boxes[B, K, 4] xyxy in [0, 1],
    scores[B, K], labels[B, K] int64)``, K = ``max_detections``, rows past ``num_detections`` zero.

    Ranking key :func:`ssd_torch.nms.class_log_scores` (the one key of every path, in float64); candidates
    ``logp > log(score_threshold)``; the ``top_k`` best per class (ties: lower prior); greedy NMS (IoU >
    ``nms_threshold`` drops); merge by ``logp`` descending, ties by class then keep order; reported score
    ``exp(logp)``."""

    def __init__(self, priors: torch.Tensor, variances: Sequence[float], *, score_threshold: float,
                 top_k: int | None, nms_threshold: float, max_detections: int, clip_boxes: bool = True,
                 unused_labels: Sequence[int] = ()) -> None:
        super().__init__()
        self.register_buffer("priors", priors.to(torch.float32))
        self.variances = (float(variances[0]), float(variances[1]))
        self.log_threshold = math.log(score_threshold) if score_threshold > 0 else -math.inf
        self.top_k, self.nms_threshold, self.max_detections = top_k, nms_threshold, max_detections
        self.clip_boxes, self.unused_labels = clip_boxes, tuple(int(k) for k in unused_labels)

    def candidates(self, loc: torch.Tensor, conf: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(logp[B*(C-1), k], boxes[B*(C-1), k, 4], valid[B*(C-1), k])``: the best ``k = min(top_k, P)``
        candidates of each (image, class), best first; invalid slots have logp -inf."""
        p, c = conf.shape[1], conf.shape[2]
        k = p if self.top_k is None else min(self.top_k, p)
        conf = fold_unused_classes(conf, self.unused_labels)  # outputs without a category are never predicted
        # float64 keys from the float32 logits, as ssd_torch.nms: in float32, exp(x[j] - m) underflows for logit
        # gaps > ~87 and near-certain boxes would tie (docs/CONTRACT.md "Ranking key")
        logp = class_log_scores(conf.to(torch.float64))[:, :, 1:].transpose(1, 2)  # [B, C-1, P]
        key = torch.where(logp > self.log_threshold, logp, torch.full_like(logp, -math.inf))
        values, index = key.topk(k, dim=2)  # ONNX TopK: ties by lower index (the contract's rule)
        boxes = decode(loc.to(torch.float32), self.priors, self.variances)
        if self.clip_boxes:  # docs/CONTRACT.md "Peer settings": ssd.pytorch and lufficc/SSD clip nothing
            boxes = boxes.clamp(0.0, 1.0)
        flat = index.reshape(index.shape[0], (c - 1) * k)
        picked = torch.gather(boxes, 1, flat[:, :, None].expand(-1, -1, 4))
        return values.reshape(-1, k), picked.reshape(-1, k, 4), values.reshape(-1, k) > -math.inf

    def forward(self, loc: torch.Tensor, conf: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c1 = conf.shape[2] - 1
        logp, boxes, valid = self.candidates(loc, conf)
        k = logp.shape[1]
        ranks = torch.where(valid, torch.arange(k, 0, -1, dtype=torch.float32),
                            torch.zeros(logp.shape, dtype=torch.float32))
        selected = RankNMS.select(boxes, ranks[:, None], self.nms_threshold)
        keep = torch.zeros_like(logp)
        keep[selected[:, 0], selected[:, 2]] = 1.0
        merged = torch.where(keep > 0, logp, torch.full_like(logp, -math.inf)).reshape(-1, c1 * k)
        d = min(self.max_detections, c1 * k)
        best, order = merged.topk(d, dim=1)  # ties: lower (class, slot) first
        return self._layout(best, order, boxes.reshape(-1, c1 * k, 4), k)

    def _layout(self, best: torch.Tensor, order: torch.Tensor, boxes: torch.Tensor,
                k: int) -> tuple[torch.Tensor, ...]:
        """The fixed-size outputs: rows past ``num_detections`` zero, padded to ``max_detections`` columns."""
        real = best > -math.inf
        pad = self.max_detections - best.shape[1]
        scores = torch.where(real, best.exp(), torch.zeros_like(best)).to(torch.float32)
        labels = torch.where(real, torch.div(order, k, rounding_mode="floor") + 1, torch.zeros_like(order))
        picked = torch.gather(boxes, 1, order[:, :, None].expand(-1, -1, 4)) * real[:, :, None].to(torch.float32)
        if pad:
            scores = torch.nn.functional.pad(scores, (0, pad))
            labels = torch.nn.functional.pad(labels, (0, pad))
            picked = torch.nn.functional.pad(picked, (0, 0, 0, pad))
        return real.sum(dim=1), picked, scores, labels
