"""reference.nms: the strict threshold at exactly 0.45, greedy properties, post-processing order and cuts."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ref_strategies import xyxy_boxes
from reference.boxes import box_iou, cxcywh_to_xyxy, xyxy_to_cxcywh
from reference.nms import nms, postprocess, softmax

WIDE = [0.0, 0.0, 20 / 32, 1.0]  # full-height strips: IoU(WIDE, [0, 0, b, 1]) = b / (20/32) for b <= 20/32


def narrow(b: float) -> list[float]:
    return [0.0, 0.0, b, 1.0]


@pytest.mark.parametrize("b, kept", [
    (9 / 32, True),  # IoU = 9/20 = 0.45 exactly (the same double as the literal 0.45): not > 0.45 -> kept
    ((9 + 2e-8) / 32, False),  # IoU = 0.45 + 1e-9 -> dropped
    ((9 - 2e-8) / 32, True),  # IoU = 0.45 - 1e-9 -> kept
])
def test_threshold_is_strict(b: float, kept: bool) -> None:
    boxes = np.array([WIDE, narrow(b)])
    iou = box_iou(boxes[:1], boxes[1:])[0, 0]
    assert (iou == 0.45) == (b == 9 / 32) and (iou > 0.45) == (not kept)
    assert abs(iou - 0.45) <= 1.1e-9
    expected = [0, 1] if kept else [0]
    np.testing.assert_array_equal(nms(boxes, np.array([0.9, 0.8]), 0.45), expected)
    # the narrow box first: the same pair decision, the order of keep follows the scores
    np.testing.assert_array_equal(nms(boxes, np.array([0.8, 0.9]), 0.45), [1, 0] if kept else [1])


def test_greedy_chain_and_ties() -> None:
    # a overlaps b, b overlaps c, a and c are disjoint: greedy keeps a and c (b is suppressed by a first)
    boxes = np.array([[0.0, 0, 0.4, 1], [0.2, 0, 0.6, 1], [0.4, 0, 0.8, 1]])
    np.testing.assert_array_equal(nms(boxes, np.array([0.9, 0.8, 0.7]), 0.3), [0, 2])
    # equal scores: the lower index is ranked first and wins
    np.testing.assert_array_equal(nms(boxes[[0, 0, 0]], np.array([0.5, 0.5, 0.5]), 0.45), [0])
    np.testing.assert_array_equal(nms(boxes, np.array([0.5, 0.5, 0.5]), 0.3), [0, 2])
    keep = nms(np.zeros((0, 4)), np.zeros(0), 0.45)
    assert keep.shape == (0,) and keep.dtype == np.int64
    with pytest.raises(ValueError, match="scores"):
        nms(boxes, np.zeros(2), 0.45)


@given(xyxy_boxes(min_n=0, max_n=25, min_size=0.05), st.data(),
       st.sampled_from([0.0, 0.3, 0.45, 0.5, 0.7, 1.0]))
def test_nms_properties(boxes: np.ndarray, data: st.DataObject, threshold: float) -> None:
    n = len(boxes)
    # scores from a small set so that ties happen often
    scores = np.array(data.draw(st.lists(st.sampled_from([0.1, 0.2, 0.5, 0.9]), min_size=n, max_size=n)))
    keep = nms(boxes, scores, threshold)
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(-scores, kind="stable")] = np.arange(n)
    assert np.all(np.diff(rank[keep]) > 0)  # kept order = stable score order
    iou = box_iou(boxes, boxes)
    kept_iou = iou[np.ix_(keep, keep)]
    assert np.all(kept_iou[~np.eye(len(keep), dtype=bool)] <= threshold)
    for d in sorted(set(range(n)) - set(keep.tolist())):
        above = keep[rank[keep] < rank[d]]
        assert np.any(iou[d, above] > threshold), f"box {d} dropped with no better kept box over threshold"


# Post-processing: four disjoint priors, zero offsets (decoded boxes = priors), C = 3.
PP_BOXES = np.array([[0.0, 0, 0.25, 1], [0.25, 0, 0.5, 1], [0.5, 0, 0.75, 1], [0.75, 0, 1.0, 1]])
PP_PRIORS = xyxy_to_cxcywh(PP_BOXES)
PP_CONF = np.array([
    [0.0, 0.0, 0.0],  # scores 1/3, 1/3: a three-way tie
    [0.0, 0.0, 0.0],  # the same
    [0.0, 0.0, 2.0],  # class 2: e²/(2+e²) = 0.787, class 1: 1/(2+e²) = 0.1065
    [10.0, 0.0, 0.0],  # background: 4.5e-5 < 0.01 -> no candidate
])


def test_postprocess_order_by_hand() -> None:
    boxes, scores, labels = postprocess(np.zeros((4, 4)), PP_CONF, PP_PRIORS)
    # gathered: class 1 [p0, p1, p2], class 2 [p2, p0, p1]; a stable sort by score keeps, among the 1/3 ties,
    # lower class first, then lower prior index
    np.testing.assert_array_equal(labels, [2, 1, 1, 2, 2, 1])
    np.testing.assert_allclose(boxes, PP_BOXES[[2, 0, 1, 0, 1, 2]], atol=1e-15)
    e2 = math.exp(2)
    np.testing.assert_allclose(scores, [e2 / (2 + e2), 1 / 3, 1 / 3, 1 / 3, 1 / 3, 1 / (2 + e2)], rtol=1e-12)
    assert labels.dtype == np.int64 and boxes.dtype == scores.dtype == np.float64


def test_postprocess_cuts() -> None:
    _, _, labels = postprocess(np.zeros((4, 4)), PP_CONF, PP_PRIORS, max_detections=3)
    np.testing.assert_array_equal(labels, [2, 1, 1])
    boxes, _, labels = postprocess(np.zeros((4, 4)), PP_CONF, PP_PRIORS, top_k=1)
    np.testing.assert_array_equal(labels, [2, 1])
    np.testing.assert_allclose(boxes, PP_BOXES[[2, 0]], atol=1e-15)


def test_postprocess_score_threshold_is_strict() -> None:
    conf = np.zeros((1, 2))  # softmax = (1/2, 1/2) exactly
    assert softmax(conf)[0, 1] == 0.5
    out = postprocess(np.zeros((1, 4)), conf, PP_PRIORS[:1], score_threshold=0.5)
    assert out[0].shape == (0, 4) and out[1].shape == (0,) and out[2].shape == (0,) and out[2].dtype == np.int64
    out = postprocess(np.zeros((1, 4)), conf, PP_PRIORS[:1], score_threshold=0.5 - 1e-12)
    np.testing.assert_array_equal(out[2], [1])


def test_postprocess_nms_per_class_and_clamp() -> None:
    # two identical priors: within a class the weaker copy is suppressed; other classes are independent
    priors = np.array([[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]])
    conf = np.array([[0.0, 1.0, 3.0], [0.0, 2.0, 0.0]])
    boxes, scores, labels = postprocess(np.zeros((2, 4)), conf, priors)
    np.testing.assert_array_equal(labels, [2, 1])
    np.testing.assert_allclose(scores, [softmax(conf[0])[2], softmax(conf[1])[1]])
    # a decoded box beyond the image is clamped to [0, 1]
    loc = np.array([[0.0, 0.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0]])  # w = 0.5·e¹ > 1
    boxes, _, _ = postprocess(loc, conf, priors)
    np.testing.assert_array_equal(boxes[0], [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(boxes[1], cxcywh_to_xyxy(priors[0]))


def test_postprocess_bad_shapes() -> None:
    with pytest.raises(ValueError, match="conf"):
        postprocess(np.zeros((4, 4)), np.zeros((3, 3)), PP_PRIORS)
