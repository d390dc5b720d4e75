"""reference.nms: the strict threshold at exactly 0.45, greedy properties, the ranking key (hand-computed),
post-processing order and cuts, the peer settings against transcriptions of lufficc/SSD and ssd.pytorch, and the
float32 near-tie analysis."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ref_strategies import xyxy_boxes

from reference.boxes import box_iou, cxcywh_to_xyxy, xyxy_to_cxcywh
from reference.nms import (FLOAT32_LOGP_RTOL, KEY_RTOL, check_limit, float32_ambiguous_detections, log_scores,
                           near_tied, nms, postprocess, score_floor, softmax)

WIDE = [0.0, 0.0, 20 / 32, 1.0]  # full-height strips: IoU(WIDE, [0, 0, b, 1]) = b / (20/32) for b <= 20/32

if TYPE_CHECKING:  # the peer transcriptions run on torch, imported where they run
    import torch


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


def test_postprocess_bad_shapes_and_limits() -> None:
    with pytest.raises(ValueError, match="conf"):
        postprocess(np.zeros((4, 4)), np.zeros((3, 3)), PP_PRIORS)
    for name, bad in [("top_k", 0), ("top_k", 2.0), ("max_detections", 0), ("max_detections", True),
                      ("max_detections", -1)]:
        with pytest.raises(ValueError, match=f"{name} must be an int >= 1 or None"):
            postprocess(np.zeros((4, 4)), PP_CONF, PP_PRIORS, **{name: bad})
    with pytest.raises(ValueError, match="score_threshold must be in"):
        postprocess(np.zeros((4, 4)), PP_CONF, PP_PRIORS, score_threshold=-0.1)
    assert check_limit("top_k", None) is None and check_limit("top_k", np.int64(3)) == 3


# ---------------------------------------------------------------------------------------------- ranking key
def test_log_scores_by_hand() -> None:
    x = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    want = np.array([
        # m = 2, j* = 2, S' = e^-2 + e^-1
        np.array([-2.0, -1.0, 0.0]) - math.log1p(math.exp(-2) + math.exp(-1)),
        # a tied max: j* = 0 (the first), S' = exp(0) + exp(-1)
        np.array([0.0, 0.0, -1.0]) - math.log1p(1 + math.exp(-1)),
        [-math.log(3)] * 3,
    ])
    np.testing.assert_allclose(log_scores(x), want, rtol=1e-15, atol=0)
    np.testing.assert_allclose(np.exp(log_scores(x)), softmax(x, axis=1), rtol=1e-15)
    assert log_scores(x[None]).shape == (1, 3, 3)


def test_log_scores_keep_their_resolution_where_p_rounds_to_one() -> None:
    # softmax([0, 40]) = 1 - 4.2e-18 is exactly 1.0 in float64; the key keeps -log1p(e^-40) = -4.248e-18
    x = np.array([[0.0, 40.0], [0.0, 41.0], [0.0, 40.0]])
    assert np.all(softmax(x, axis=1)[:, 1] == 1.0)
    keys = log_scores(x)[:, 1]
    np.testing.assert_allclose(keys, [-math.exp(-40), -math.exp(-41), -math.exp(-40)], rtol=1e-15)
    # four disjoint priors: the order follows the key, ties (priors 0 and 2) the lower prior index
    _, scores, labels = postprocess(np.zeros((3, 4)), x, PP_PRIORS[:3])
    boxes, _, _ = postprocess(np.zeros((3, 4)), x, PP_PRIORS[:3])
    np.testing.assert_allclose(boxes, PP_BOXES[[1, 0, 2]], atol=1e-15)
    assert np.all(scores == 1.0) and labels.tolist() == [1, 1, 1]
    # NMS between two identical boxes keeps the more confident one although both scores read 1.0
    same = np.array([[0.5, 0.5, 0.5, 0.5]] * 2)
    boxes, _, _ = postprocess(np.array([[0.0, 0, 0, 0], [0.0, 0, -1, 0]]), x[:2], same)  # prior 1 narrower
    half = 0.25 * math.exp(-0.2)  # IoU = 2 half / 0.5 = 0.82 > 0.45: one survives, prior 1 (logit 41)
    np.testing.assert_allclose(boxes, [[0.5 - half, 0.25, 0.5 + half, 0.75]], rtol=1e-15)


def test_score_floor() -> None:
    assert score_floor(0.0) == -math.inf and score_floor(0.01) == math.log(0.01) and score_floor(1.0) == 0.0
    # threshold 0: every finite key passes, even p ~ e^-800 (softmax underflows to 0 there)
    x = np.array([[800.0, 0.0]])
    assert softmax(x, axis=1)[0, 1] == 0.0
    _, scores, labels = postprocess(np.zeros((1, 4)), x, PP_PRIORS[:1], score_threshold=0.0)
    assert labels.tolist() == [1] and scores[0] == 0.0


def test_near_tied() -> None:
    # the fast paths' keys are float64: within 2 * 2^-46 relative (+ 2 * 2^-1021) they may swap, not beyond
    assert near_tied(-1.0, -1.0 - 2 ** -46) and not near_tied(-1.0, -1.0 - 2 ** -44)
    assert near_tied(0.0, -2.0 ** -1021) and not near_tied(0.0, -1e-300)
    assert not near_tied(-math.inf, -math.inf)
    # the float32 bound (keys computed in float32, e.g. in an ONNX graph) is far wider
    assert FLOAT32_LOGP_RTOL > 1e6 * KEY_RTOL


def test_float32_ambiguous_detections_is_postprocess_plus_flags() -> None:
    rng = np.random.default_rng(2)
    priors = np.column_stack([rng.uniform(0.2, 0.8, (200, 2)), rng.uniform(0.05, 0.4, (200, 2))])
    loc, conf = rng.normal(scale=0.5, size=(200, 4)), rng.normal(scale=2.0, size=(200, 4))
    conf[7] = conf[3]  # an exact tie: equal logits, same box -> not a near-tie (ordered alike everywhere)
    loc[7] = loc[3]
    conf[5] = [0.0, 14.0, 0.0, 0.0]  # the top class-1 candidate ...
    conf[11] = conf[5] * (1 + 2 ** -50)  # ... near-tied with another (keys -2.5e-6, 1e-21 apart) ...
    loc[11], priors[11] = loc[5] + 1e-3, priors[5]  # ... whose box overlaps it heavily: NMS may keep either
    for kw in ({}, {"top_k": 5, "max_detections": 10}, {"score_threshold": 0.0, "clip_boxes": False}):
        want = postprocess(loc, conf, priors, **kw)
        got = float32_ambiguous_detections(loc, conf, priors, **kw)
        np.testing.assert_array_equal(got.boxes, want[0])
        np.testing.assert_array_equal(got.scores, want[1])
        np.testing.assert_array_equal(got.labels, want[2])
        np.testing.assert_array_equal(np.exp(got.keys), want[1])  # (log(score) would lose the keys near 0)
    got = float32_ambiguous_detections(loc, conf, priors)
    box5, box11 = (postprocess(loc[[i]], conf[[i]], priors[[i]])[0][0] for i in (5, 11))
    # prior 11 (the larger logit) comes first and suppresses 5; a fast path may decide it the other way
    assert got.labels[0] == 1 and np.array_equal(got.boxes[0], box11) and got.exempt[0]
    assert any(np.array_equal(b, box5) for b in got.extra_boxes[got.extra_labels == 1])
    assert got.exempt.sum() + len(got.extra_labels) < 0.1 * len(got.labels)


# ---------------------------------------------------------------------------------------------- peer settings
def test_clip_boxes_false_keeps_boxes_outside_the_image() -> None:
    priors = np.array([[0.5, 0.5, 0.5, 0.5], [0.05, 0.05, 0.2, 0.2]])
    loc = np.array([[0.0, 0.0, 5.0, 5.0], [-3.0, 0.0, 0.0, 0.0]])  # prior 0 grows to 1.36 wide; 1 moves left
    conf = np.array([[0.0, 2.0], [0.0, 1.0]])
    boxes, _, _ = postprocess(loc, conf, priors, clip_boxes=False)
    wide = 0.5 * math.exp(1.0) / 2
    np.testing.assert_allclose(boxes, [[0.5 - wide, 0.5 - wide, 0.5 + wide, 0.5 + wide],
                                       [0.05 - 0.06 - 0.1, -0.05, 0.05 - 0.06 + 0.1, 0.15]], rtol=1e-12)
    clipped, _, _ = postprocess(loc, conf, priors)
    np.testing.assert_allclose(clipped, np.clip(boxes, 0, 1))
    # NMS sees the boxes it is given: box 1 lies inside box 0; unclamped IoU = 0.04 / 1.359^2 = 0.0217,
    # clamped (box 0 = the image, box 1 = [0, 0, .09, .15]) IoU = 0.0135: at 0.017 only the unclamped drops one
    assert len(postprocess(loc, conf, priors, nms_threshold=0.017, clip_boxes=False)[1]) == 1
    assert len(postprocess(loc, conf, priors, nms_threshold=0.017)[1]) == 2


def test_no_caps() -> None:
    rng = np.random.default_rng(5)
    priors = np.column_stack([rng.uniform(0, 1, (300, 2)), rng.uniform(0.001, 0.01, (300, 2))])  # ~disjoint
    conf = rng.normal(size=(300, 3))
    _, scores, labels = postprocess(np.zeros((300, 4)), conf, priors, score_threshold=0.0, top_k=None,
                                    max_detections=None, nms_threshold=1.0)
    assert len(labels) == 600 and np.all(np.diff(np.log(scores)) <= 0)
    assert len(postprocess(np.zeros((300, 4)), conf, priors, score_threshold=0.0, top_k=None)[1]) == 200
    _, _, labels = postprocess(np.zeros((300, 4)), conf, priors, score_threshold=0.0, max_detections=None)
    assert len(labels) == 2 * 300 and np.bincount(labels).tolist() == [0, 300, 300]
    _, _, labels = postprocess(np.zeros((300, 4)), conf, priors, score_threshold=0.0, top_k=7,
                               max_detections=None)
    assert np.bincount(labels).tolist() == [0, 7, 7]


# ---------------------------------------------------------------------------------------------- peer transcriptions
# Transcriptions of the peers' post-processing (facts from their code; written here, in float64 torch):
# lufficc/SSD ssd/modeling/box_head/{box_head.py::_forward_test, inference.py::PostProcessor} with
# ssd/utils/nms.py::batched_nms (defaults ssd/config/defaults.py: CONFIDENCE_THRESHOLD 0.01, NMS_THRESHOLD 0.45,
# MAX_PER_IMAGE 100, IMAGE_SIZE 300), and amdegroot/ssd.pytorch layers/functions/detection.py::Detect with
# layers/box_utils.py::{decode, nms} (ssd.py: Detect(num_classes, 0, 200, 0.01, 0.45)). Quirks kept out of the
# inputs (docs/CONTRACT.md "Peer settings"): score ties (continuous random logits, moderate so that no two
# probabilities round together), lufficc's class offsets meeting (assumed away below), IoUs within rounding of
# the threshold (a different union rounding and lufficc's pixel scale; continuous random boxes), and our decode
# clamp (|loc| small enough that it never applies).
def _peer_inputs(seed: int, num_priors: int = 500, num_classes: int = 4) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    priors = np.column_stack([rng.uniform(0.0, 1.0, (num_priors, 2)), rng.uniform(0.05, 0.5, (num_priors, 2))])
    loc = rng.normal(scale=1.0, size=(num_priors, 4))  # many boxes reach outside the image
    conf = rng.normal(scale=1.5, size=(num_priors, num_classes))
    return loc, conf, priors


def _peer_decode(loc: "torch.Tensor", priors: "torch.Tensor") -> "torch.Tensor":
    """Both peers: centre = prior centre + loc * 0.1 * prior size, size = prior size * exp(loc * 0.2); corners."""
    import torch

    cxcy = loc[:, :2] * 0.1 * priors[:, 2:] + priors[:, :2]
    wh = torch.exp(loc[:, 2:] * 0.2) * priors[:, 2:]
    return torch.cat([cxcy - wh / 2, cxcy + wh / 2], dim=1)


def _lufficc(loc: np.ndarray, conf: np.ndarray, priors: np.ndarray, size: float = 300.0) -> tuple:
    """lufficc's PostProcessor for one image: every (prior, class >= 1) with score > 0.01, boxes in pixels,
    batched NMS (class offsets, torchvision.ops.nms), the first MAX_PER_IMAGE = 100 of the keep list."""
    import torch
    from torchvision.ops import nms as tv_nms

    scores = torch.softmax(torch.from_numpy(conf), dim=1)
    boxes = _peer_decode(torch.from_numpy(loc), torch.from_numpy(priors))
    n, c = scores.shape
    boxes = boxes.view(n, 1, 4).expand(n, c, 4)[:, 1:].reshape(-1, 4)
    labels = torch.arange(c).view(1, c).expand_as(scores)[:, 1:].reshape(-1)
    scores = scores[:, 1:].reshape(-1)
    indices = torch.nonzero(scores > 0.01).squeeze(1)
    boxes, scores, labels = boxes[indices] * size, scores[indices], labels[indices]
    offsets = labels.to(boxes) * (boxes.max() + 1)
    shifted = boxes + offsets[:, None]
    keep = tv_nms(shifted, scores, 0.45)[:100]
    _assume_no_class_meets(shifted, labels)
    return (boxes[keep] / size).numpy(), scores[keep].numpy(), labels[keep].numpy()


def _assume_no_class_meets(shifted: "torch.Tensor", labels: "torch.Tensor") -> None:
    """lufficc's quirk stays out: boxes of different classes that meet in the offset space (unclipped boxes
    below -1 pixel; it happens on these inputs) never come near the NMS threshold there."""
    from torchvision.ops import box_iou as tv_iou

    other = labels[:, None] != labels[None, :]
    assert not bool(((tv_iou(shifted, shifted) > 0.4) & other).any()), "inputs where lufficc's offsets bite"


def _ssd_pytorch(loc: np.ndarray, conf: np.ndarray, priors: np.ndarray, top_k: int = 200) -> tuple:
    """ssd.pytorch's Detect for one image: per class, score > 0.01, the top_k best *before* NMS (ascending sort,
    last top_k), greedy NMS keeping IoU <= 0.45 with union (area_j - inter) + area_i; class-major output, no
    per-image cap (its final fill_ writes into a copy)."""
    import torch

    scores_all = torch.softmax(torch.from_numpy(conf), dim=1).t()
    decoded = _peer_decode(torch.from_numpy(loc), torch.from_numpy(priors))
    out_b, out_s, out_l = [], [], []
    for cl in range(1, scores_all.shape[0]):
        mask = scores_all[cl].gt(0.01)
        scores, boxes = scores_all[cl][mask], decoded[mask]
        if scores.size(0) == 0:
            continue
        ids = _ssd_pytorch_nms(boxes, scores, 0.45, top_k)
        out_b.append(boxes[ids]), out_s.append(scores[ids]), out_l.append(torch.full((len(ids),), cl))
    return (torch.cat(out_b).numpy(), torch.cat(out_s).numpy(), torch.cat(out_l).numpy())


def _ssd_pytorch_nms(boxes: "torch.Tensor", scores: "torch.Tensor", overlap: float, top_k: int) -> list[int]:
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1) * (y2 - y1)
    idx = scores.sort(0)[1][-top_k:]  # ascending: the top_k largest, best last
    keep = []
    while idx.numel() > 0:
        i = int(idx[-1])
        keep.append(i)
        idx = idx[:-1]
        if idx.numel() == 0:
            break
        w = (x2[idx].clamp(max=x2[i]) - x1[idx].clamp(min=x1[i])).clamp(min=0.0)
        h = (y2[idx].clamp(max=y2[i]) - y1[idx].clamp(min=y1[i])).clamp(min=0.0)
        inter = w * h
        iou = inter / ((area[idx] - inter) + area[i])
        idx = idx[iou.le(overlap)]
    return keep


def _assert_same_detections(ours: tuple, theirs: tuple) -> None:
    np.testing.assert_array_equal(ours[2], theirs[2])
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-12, atol=0)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lufficc_settings_equal_lufficc_postprocessor(seed: int) -> None:
    loc, conf, priors = _peer_inputs(seed)
    ours = postprocess(loc, conf, priors, score_threshold=0.01, nms_threshold=0.45, top_k=None,
                       max_detections=100, clip_boxes=False)
    theirs = _lufficc(loc, conf, priors)
    assert len(theirs[1]) == 100 and ((theirs[0] < 0) | (theirs[0] > 1)).any()  # the cap and outside boxes bite
    _assert_same_detections(ours, theirs)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_ssd_pytorch_settings_equal_ssd_pytorch_detect(seed: int) -> None:
    loc, conf, priors = _peer_inputs(seed)
    ours = postprocess(loc, conf, priors, score_threshold=0.01, nms_threshold=0.45, top_k=200,
                       max_detections=None, clip_boxes=False)
    theirs = _ssd_pytorch(loc, conf, priors)
    assert ((theirs[0] < 0) | (theirs[0] > 1)).any() and len(theirs[1]) > 200
    assert (softmax(conf, axis=1)[:, 1:] > 0.01).sum(axis=0).min() > 200  # the pre-NMS cap bites in every class
    class_major = np.argsort(ours[2], kind="stable")  # the peer's order: class, then score
    _assert_same_detections(tuple(a[class_major] for a in ours), theirs)
    # the native clamp changes the answer on these inputs (so the comparison above tests clip_boxes=False)
    native = postprocess(loc, conf, priors, top_k=200, max_detections=None)
    assert native[0].shape != ours[0].shape or not np.allclose(native[0], ours[0])
