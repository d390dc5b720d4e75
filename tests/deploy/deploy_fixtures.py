"""Shared by the deploy tests: the reference post-processing (``ssd_torch.nms.postprocess``) and detector files
whose network outputs can be read back."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ssd_torch import nms


def reference_detections(loc: Any, conf: Any, priors: Any, variances: Any = (0.1, 0.2),
                         **settings: Any) -> list[tuple[nms.Detections, torch.Tensor]]:
    """``ssd_torch.nms.postprocess`` (the contract's ranking key) with ``settings`` (PostprocessConfig fields);
    each image comes with its detections' scores as the order key of :func:`assert_same_detections` (scores
    that round to 1 compare as one group: their order is the key's, which postprocess does not return)."""
    return [(d, d.scores) for d in nms.postprocess(loc, conf, priors, variances=variances, **settings)]


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
