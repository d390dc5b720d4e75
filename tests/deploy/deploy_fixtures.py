"""Shared by the deploy tests: the new ranking's post-processing transcribed from its definition (until
``ssd_torch.nms.postprocess`` ranks by it), and detector files whose network outputs can be read back."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ssd_torch import nms
from ssd_torch.coding import decode


def transcribed_log_scores(conf: torch.Tensor) -> torch.Tensor:
    """The ranking key as helper A's contract states it (torch.log1p; not the export's implementation)."""
    m = conf.max(dim=-1, keepdim=True).values
    first = conf.argmax(dim=-1, keepdim=True)
    e = (conf - m).exp().scatter(-1, first, 0.0)
    return (conf - m) - torch.log1p(e.sum(dim=-1, keepdim=True))


def reference_detections(loc: Any, conf: Any, priors: Any, variances: Any = (0.1, 0.2), *,
                         score_threshold: float = 0.01, top_k: int = 400, nms_threshold: float = 0.45,
                         max_detections: int = 200) -> list[tuple[nms.Detections, torch.Tensor]]:
    """``ssd_torch.nms.postprocess`` once it ranks by log-probabilities; until then (no
    ``nms.class_log_scores``) the same pipeline with the new key: candidates ``logp > log(t)``, the ``top_k`` best
    per class (stable: lower prior first), ``nms_keep_torch``, ``gather_detections`` on logp, scores exp(logp).
    AFTER HELPER A'S MERGE this returns ``nms.postprocess(...)`` by itself. Each image comes with its ranking
    key per detection (logp; the score where postprocess gives only that), for :func:`assert_same_detections`."""
    kw = dict(score_threshold=score_threshold, top_k=top_k, nms_threshold=nms_threshold,
              max_detections=max_detections)
    if hasattr(nms, "class_log_scores"):
        return [(d, d.scores) for d in nms.postprocess(loc, conf, priors, variances=variances, **kw)]
    loc, conf, priors = (torch.as_tensor(t).float() for t in (loc, conf, priors))
    b, p, c = conf.shape
    key = transcribed_log_scores(conf)[:, :, 1:].transpose(1, 2).reshape(b * (c - 1), p)
    passing = key > (math.log(score_threshold) if score_threshold > 0 else -math.inf)
    k = min(top_k, p)
    values, index = key.masked_fill(~passing, -math.inf).sort(dim=1, descending=True, stable=True)
    values, index = values[:, :k], index[:, :k]
    boxes = decode(loc, priors, variances).clamp(0.0, 1.0)
    picked = torch.gather(boxes, 1, index.reshape(b, (c - 1) * k, 1).expand(-1, -1, 4)).reshape(b, c - 1, k, 4)
    counts = passing.sum(dim=1).clamp(max=top_k).reshape(b, c - 1)
    cand = nms.Candidates(picked, values.reshape(b, c - 1, k), counts)
    keep = nms.nms_keep_torch(cand.boxes, counts, nms_threshold)
    return [(nms.Detections(d.boxes, d.scores.exp(), d.labels), d.scores)
            for d in nms.gather_detections(cand, keep, max_detections)]


def run_with_network_outputs(onnx_path: Any, images: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """``(detector outputs, loc, conf)`` of one onnxruntime run of a detector file: ``loc``/``conf`` (the joined
    network's outputs, kept under their names) are exposed as extra outputs, so the reference is computed on the
    very numbers that fed the graph's post-processing."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    for name in ("loc", "conf"):
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    *dets, loc, conf = session.run(None, {"images": images})
    return dets, loc, conf


def near_tie_groups(key: np.ndarray, rel: float = 1e-6) -> list[slice]:
    """Runs of consecutive detections whose ranking keys differ by at most ``rel`` (relative): their order is
    not fixed across runtimes. onnxruntime's Exp and Log differ from PyTorch's by an ulp in a few % of values,
    so keys within a few ulps may swap (docs/CONTRACT.md "Exported detector")."""
    groups, start = [], 0
    for i in range(1, len(key) + 1):
        if i == len(key) or abs(key[i] - key[i - 1]) > rel * max(abs(key[i]), abs(key[i - 1])):
            groups.append(slice(start, i))
            start = i
    return groups


def _rows(labels: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    rows = np.concatenate([labels[:, None].astype(np.float64), boxes.astype(np.float64)], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


def assert_same_detections(dets: list[np.ndarray], want: list[tuple[nms.Detections, torch.Tensor]],
                           max_detections: int, exact_order: bool = False) -> None:
    """The exported layout against the reference: counts equal; labels and boxes equal in order (boxes to
    1e-6: the decode runs in two runtimes) except inside a run of near-tied keys, where they must be the same
    set (``exact_order``: no such exception, for exact ties, which both runtimes compute identically); scores
    within 1e-5; rows past ``num_detections`` zero."""
    num, boxes, scores, labels = dets
    assert num.dtype == np.int64 and labels.dtype == np.int64 and boxes.dtype == scores.dtype == np.float32
    assert boxes.shape == (len(want), max_detections, 4) and scores.shape == labels.shape == boxes.shape[:2]
    for i, (w, key) in enumerate(want):
        n = len(w.scores)
        assert num[i] == n
        np.testing.assert_allclose(scores[i, :n], w.scores.numpy(), rtol=0, atol=1e-5)
        groups = [slice(j, j + 1) for j in range(n)] if exact_order else near_tie_groups(key.double().numpy())
        for g in groups:
            np.testing.assert_allclose(_rows(labels[i, g], boxes[i, g]), _rows(w.labels[g].numpy(),
                                       w.boxes[g].numpy()), rtol=0, atol=1e-6)
        assert not boxes[i, n:].any() and not scores[i, n:].any() and not labels[i, n:].any()
