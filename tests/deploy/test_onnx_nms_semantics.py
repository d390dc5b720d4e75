"""Where ONNX NonMaxSuppression (onnxruntime's CPU kernel) differs from our NMS contract, case by case, and that
the exported graph's NMS step (``RankNMS``: our TopK first, ranks as scores) follows our contract in each."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="the 'onnx' package (optional extra) is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime (optional extra) is not installed")

from onnx import TensorProto, helper  # noqa: E402

from ssd_torch.deploy.graph_postprocess import RankNMS  # noqa: E402
from ssd_torch.nms import nms_keep_torch  # noqa: E402


def onnx_nms(boxes: list, scores: list, max_out: int, iou: float, score_threshold: float | None = None,
             center_point_box: int = 0) -> list[int]:
    """Raw ONNX NonMaxSuppression on one batch, one class -> selected box indices in output order."""
    names = ["boxes", "scores", "max_out", "iou"] + (["thr"] if score_threshold is not None else [])
    inits = [helper.make_tensor("max_out", TensorProto.INT64, [1], [max_out]),
             helper.make_tensor("iou", TensorProto.FLOAT, [1], [iou])]
    if score_threshold is not None:
        inits.append(helper.make_tensor("thr", TensorProto.FLOAT, [1], [score_threshold]))
    node = helper.make_node("NonMaxSuppression", names, ["sel"], center_point_box=center_point_box)
    graph = helper.make_graph([node], "nms", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                                              for n in ("boxes", "scores")],
                              [helper.make_tensor_value_info("sel", TensorProto.INT64, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {"boxes": np.asarray(boxes, np.float32)[None], "scores": np.asarray(scores, np.float32)[None, None]}
    return session.run(None, feed)[0][:, 2].tolist()


def ours(boxes: list, iou: float) -> list[int]:
    """Our greedy NMS on boxes already in rank order (``nms_keep_torch``) -> kept indices."""
    b = torch.tensor(boxes, dtype=torch.float32)[None, None]
    keep = nms_keep_torch(b, torch.tensor([[len(boxes)]]), iou)[0, 0]
    return keep.nonzero().flatten().tolist()


def rank_nms_onnx(boxes: list, valid: int, iou: float) -> list[int]:
    """``RankNMS.select`` exported and run by onnxruntime: the graph's NMS step on slots in rank order."""

    class Step(torch.nn.Module):
        def forward(self, b: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            return RankNMS.select(b, r, iou)

    k = len(boxes)
    ranks = torch.where(torch.arange(k) < valid, torch.arange(k, 0, -1).float(), torch.zeros(k))[None, None]
    b = torch.tensor(boxes, dtype=torch.float32)[None]
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Step(), (b, ranks), f, dynamo=False, opset_version=17, input_names=["b", "r"])
    sel = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"]).run(
        None, {"b": b.numpy(), "r": ranks.numpy()})[0]
    assert sel[:, 2].tolist() == RankNMS.select(b, ranks, iou)[:, 2].tolist()  # PyTorch's twin agrees
    return sel[:, 2].tolist()


SQUARE, HALF, FAR = [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.5, 1.0], [2.0, 2.0, 3.0, 3.0]  # IoU(SQUARE, HALF) = 0.5


def test_iou_equal_to_threshold_is_kept_by_both() -> None:
    """IoU exactly 0.5 at threshold 0.5: both are strict (``iou > t`` drops), so both keep the box."""
    assert onnx_nms([SQUARE, HALF], [0.9, 0.8], 10, 0.5) == [0, 1] == ours([SQUARE, HALF], 0.5)
    assert onnx_nms([SQUARE, HALF], [0.9, 0.8], 10, 0.49) == [0] == ours([SQUARE, HALF], 0.49)
    assert rank_nms_onnx([SQUARE, HALF], 2, 0.5) == [0, 1] and rank_nms_onnx([SQUARE, HALF], 2, 0.49) == [0]


def test_max_output_caps_kept_boxes_not_candidates() -> None:
    """ONNX's max_output_boxes_per_class counts KEPT boxes: with 2, it keeps SQUARE and FAR after HALF is
    suppressed. Our top_k counts CANDIDATES: top_k 2 considers SQUARE and HALF only and keeps SQUARE. The graph
    applies top_k with TopK before the NMS and sets the cap to the slot count (never reached early)."""
    boxes, scores = [SQUARE, HALF, FAR], [0.9, 0.8, 0.7]
    assert onnx_nms(boxes, scores, 2, 0.45) == [0, 2]
    assert ours(boxes[:2], 0.45) == [0]  # top_k = 2: the first two candidates
    assert rank_nms_onnx(boxes[:2], 2, 0.45) == [0]


def test_score_threshold_is_strict_and_only_when_given() -> None:
    """ONNX drops ``score <= score_threshold`` when the input is given, and nothing without it (scores of 0
    are candidates). The graph thresholds before its TopK (``logp > log(t)``, strict like our contract) and
    gives the NMS ranks >= 1 for candidates, 0 for empty slots, with threshold 0.5."""
    boxes = [SQUARE, FAR]
    assert onnx_nms(boxes, [0.5, 0.25], 10, 0.45, score_threshold=0.25) == [0]
    assert onnx_nms(boxes, [0.5, 0.0], 10, 0.45) == [0, 1]
    assert rank_nms_onnx(boxes, 1, 0.45) == [0]  # the empty slot never comes out


def test_equal_scores_in_the_spec_and_in_onnxruntime() -> None:
    """The ONNX spec leaves the order of equal scores open. onnxruntime's CPU kernel (BoxInfoPtr::operator<:
    equal score -> lower index first) agrees with our rule today; older versions popped a score-only
    ``std::priority_queue`` (heap order). The graph never relies on either: its NMS scores are distinct ranks,
    so the order is the TopK's (ties: lower prior), shown here by ranks that contradict the box indices."""
    boxes = [HALF, SQUARE, FAR]  # equal scores: lower index (HALF) wins the overlap
    assert onnx_nms(boxes, [0.7, 0.7, 0.7], 10, 0.45) == [0, 2] == ours(boxes, 0.45)
    # ranks decide, whatever the indices: slot 1 ranked first keeps SQUARE over HALF
    swapped = [SQUARE, HALF, FAR]
    assert rank_nms_onnx(swapped, 3, 0.45) == [0, 2]


def test_box_format_xyxy_is_a_valid_corner_pair() -> None:
    """center_point_box = 0 reads ``[y1, x1, y2, x2]`` as ANY diagonal corners: our xyxy boxes swap x and y,
    which IoU does not see; center_point_box = 1 (cxcywh) would read them wrongly."""
    wide, tall = [0.0, 0.0, 0.6, 0.2], [0.0, 0.0, 0.2, 0.6]  # IoU 1/5 with each other
    other = [0.0, 0.0, 0.6, 0.25]  # IoU(wide, other) = 0.8
    xyxy = [wide, other, tall]
    yxyx = [[b[1], b[0], b[3], b[2]] for b in xyxy]
    assert onnx_nms(xyxy, [0.9, 0.8, 0.7], 10, 0.5) == onnx_nms(yxyx, [0.9, 0.8, 0.7], 10, 0.5) == [0, 2]
    assert ours(xyxy, 0.5) == [0, 2]
    small, big = [0.4, 0.4, 0.5, 0.5], [0.4, 0.4, 0.9, 0.9]  # IoU 0.04; read as cxcywh: 0.31
    assert onnx_nms([small, big], [0.9, 0.8], 10, 0.3) == [0, 1] == ours([small, big], 0.3)
    assert onnx_nms([small, big], [0.9, 0.8], 10, 0.3, center_point_box=1) == [0]
