"""ssd_torch.voc_eval (vectorised) against reference.voc_eval (the devkit loop): the same AP floats, exactly.

Equality is exact (``==`` on every AP, the mAP and npos; NaN where the reference has NaN): the fast evaluator
promises the reference's floats, not an approximation. Generated cases stress what the vectorisation has to
reproduce: difficult boxes, duplicate detections of one gt, duplicate gt boxes (IoU ties between gts), score
ties across images (stable order), images without detections or gt, classes without detections or gt, and
IoUs sitting exactly at the threshold (integer pixel boxes make IoU = 0.5 exact).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reference import voc_eval as ref
from ssd_torch import voc_eval as fast


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _assert_equal(got: "ref.VocResult", want: "ref.VocResult") -> None:
    assert got.npos == want.npos
    assert got.ap.keys() == want.ap.keys()
    for c in want.ap:
        assert _same(got.ap[c], want.ap[c]), (c, got.ap[c], want.ap[c])
        np.testing.assert_array_equal(got.recall[c], want.recall[c])  # NaN == NaN here
        np.testing.assert_array_equal(got.precision[c], want.precision[c])
    assert _same(got.mAP, want.mAP), (got.mAP, want.mAP)


def _generate(seed: int, num_images: int, num_classes: int, max_gt: int, max_det: int):
    """Integer-pixel boxes near each other (so IoU hits 0.5 exactly sometimes), scores on a coarse grid (ties)."""
    rng = np.random.default_rng(seed)
    gt, det = {}, {}
    for i in range(num_images):
        g = int(rng.integers(0, max_gt + 1))
        xy = rng.integers(1, 40, size=(g, 2))
        boxes = np.concatenate([xy, xy + rng.integers(0, 30, size=(g, 2))], axis=1).astype(np.float64)
        labels = rng.integers(1, num_classes, size=g)
        if g > 1 and rng.random() < 0.3:  # a duplicate gt box: IoU tie between two gts
            boxes[1], labels[1] = boxes[0], labels[0]
        gt[f"img{i}"] = (boxes, labels, rng.random(g) < 0.25)
        d = int(rng.integers(0, max_det + 1))
        near = rng.integers(0, max(g, 1), size=d)
        jitter = rng.integers(-4, 5, size=(d, 4)).astype(np.float64)
        xy = rng.integers(1, 40, size=(d, 2))
        far = np.concatenate([xy, xy + rng.integers(0, 30, size=(d, 2))], axis=1).astype(np.float64)
        use_near = (rng.random(d) < 0.7) & (g > 0)
        dboxes = np.where(use_near[:, None], boxes[near % max(g, 1)] + jitter if g else far, far)
        dlabels = np.where(use_near & (rng.random(d) < 0.85), labels[near % max(g, 1)] if g else 1,
                           rng.integers(1, num_classes, size=d))
        if rng.random() < 0.85:  # some images have no detection entry at all
            det[f"img{i}"] = (dboxes, np.round(rng.random(d), 1), dlabels)
    return det, gt


@pytest.mark.parametrize("use_07_metric", [True, False])
@pytest.mark.parametrize("seed", range(12))
def test_generated_cases_equal_reference(seed: int, use_07_metric: bool) -> None:
    det, gt = _generate(seed, num_images=25, num_classes=6, max_gt=5, max_det=15)
    _assert_equal(fast.evaluate_voc(det, gt, 6, use_07_metric=use_07_metric),
                  ref.evaluate_voc(det, gt, 6, use_07_metric=use_07_metric))


@given(seed=st.integers(0, 2**32 - 1), num_images=st.integers(0, 8), num_classes=st.integers(2, 5),
       threshold=st.sampled_from([0.0, 0.3, 0.5, 0.7]), use_07_metric=st.booleans())
def test_property_equal_reference(seed: int, num_images: int, num_classes: int, threshold: float,
                                  use_07_metric: bool) -> None:
    det, gt = _generate(seed, num_images, num_classes, max_gt=4, max_det=8)
    _assert_equal(fast.evaluate_voc(det, gt, num_classes, threshold, use_07_metric),
                  ref.evaluate_voc(det, gt, num_classes, threshold, use_07_metric))


def _one_class_case() -> tuple[dict, dict]:
    """gt A, C (normal) and B (difficult); detections by score: A (TP), A again (FP: taken), B (ignored), C (TP)."""
    gt = {"x": (np.array([[1, 1, 10, 10], [21, 1, 30, 10], [41, 1, 50, 10]], float), np.array([1, 1, 1]),
                np.array([False, True, False]))}
    boxes = np.array([[1, 1, 10, 10], [1, 1, 10, 9], [21, 1, 30, 10], [41, 1, 50, 10]], float)
    det = {"x": (boxes, np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 1, 1, 1]))}
    return det, gt


def test_hand_computed_ap() -> None:
    # tp = [1,1,1,2], fp = [0,1,1,1]: recall [.5,.5,.5,1], precision [1,.5,.5,2/3], npos = 2
    det, gt = _one_class_case()
    r07 = fast.evaluate_voc(det, gt, 2)
    assert r07.npos == {1: 2}
    assert r07.ap[1] == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11, abs=1e-12)  # recall points 0..0.5 -> 1, else 2/3
    assert fast.evaluate_voc(det, gt, 2, use_07_metric=False).ap[1] == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-12)
    _assert_equal(r07, ref.evaluate_voc(det, gt, 2))


@pytest.mark.parametrize("ymax, is_tp", [(5.0, True), (4.0, False), (6.0, True)])
def test_iou_exactly_at_threshold_counts(ymax: float, is_tp: bool) -> None:
    # devkit +1 widths: gt 10x10 = 100 px; the detection 10 x ymax covers ymax*10 px -> IoU = ymax / 10
    gt = {"x": (np.array([[1, 1, 10, 10]], float), np.array([1]), np.array([False]))}
    det = {"x": (np.array([[1, 1, 10, ymax]]), np.array([0.5]), np.array([1]))}
    got = fast.evaluate_voc(det, gt, 2)
    assert got.ap[1] == (1.0 if is_tp else 0.0)
    _assert_equal(got, ref.evaluate_voc(det, gt, 2))


def test_duplicate_gt_tie_goes_to_first_gt_without_fallback() -> None:
    # two identical gts; both detections pick gt 0 (first wins the tie), the second is an FP, not a match of gt 1
    gt = {"x": (np.array([[1, 1, 10, 10], [1, 1, 10, 10]], float), np.array([1, 1]), np.array([False, False]))}
    det = {"x": (np.array([[1, 1, 10, 10], [1, 1, 10, 10]], float), np.array([0.9, 0.8]), np.array([1, 1]))}
    flags, npos = fast.match_detections(det, gt, 2)
    assert flags[1][0].tolist() == [1.0, 0.0] and flags[1][1].tolist() == [0.0, 1.0] and npos == {1: 2}
    _assert_equal(fast.evaluate_voc(det, gt, 2), ref.evaluate_voc(det, gt, 2))


def test_class_without_gt_is_nan_and_left_out_of_the_map() -> None:
    det, gt = _one_class_case()
    got = fast.evaluate_voc(det, gt, 4)  # classes 2 (no gt, no detection) and 3 (no gt)
    assert math.isnan(got.ap[2]) and math.isnan(got.ap[3]) and got.mAP == got.ap[1]
    _assert_equal(got, ref.evaluate_voc(det, gt, 4))


def test_tensors_and_empty_inputs() -> None:
    det, gt = _one_class_case()
    as_tensors = {k: tuple(torch.as_tensor(a) for a in v) for k, v in det.items()}
    _assert_equal(fast.evaluate_voc(as_tensors, gt, 2), fast.evaluate_voc(det, gt, 2))
    assert fast.evaluate_voc({}, gt, 2).ap[1] == 0.0  # gt but no detection: AP 0
    _assert_equal(fast.evaluate_voc({}, {}, 3), ref.evaluate_voc({}, {}, 3))


def test_bad_labels_are_rejected() -> None:
    det, gt = _one_class_case()
    bad = {"x": (det["x"][0], det["x"][1], np.array([1, 0, 1, 1]))}
    with pytest.raises(ValueError, match="labels must be in 1..1"):
        fast.evaluate_voc(bad, gt, 2)


@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), max_size=40), st.integers(1, 30))
def test_all_point_ap_equals_reference_voc_ap(flags: list[tuple[int, int]], npos: int) -> None:
    # the vectorised envelope (reversed running max) against the reference's loop, on real cumulative curves
    tp = np.cumsum([f[0] for f in flags], dtype=np.float64)
    fp = np.cumsum([f[1] * (1 - f[0]) for f in flags], dtype=np.float64)
    recall, precision = tp / npos, tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    assert fast._ap(recall, precision, False) == ref.voc_ap(recall, precision, False)


def test_non_overlapping_detection_at_threshold_zero_claims_first_gt() -> None:
    # reference rule: IoU 0 >= 0.0, so a detection far from every gt still takes the first gt of its class
    gt = {"x": (np.array([[1, 1, 10, 10], [50, 50, 60, 60]], float), np.array([1, 1]), np.array([False, True]))}
    det = {"x": (np.array([[100, 100, 110, 110], [30, 30, 31, 31]], float), np.array([0.9, 0.8]), np.array([1, 1]))}
    for threshold in (0.0, 0.5):
        _assert_equal(fast.evaluate_voc(det, gt, 2, threshold), ref.evaluate_voc(det, gt, 2, threshold))
    flags, _ = fast.match_detections(det, gt, 2, 0.0)
    assert flags[1][0].tolist() == [1.0, 0.0] and flags[1][1].tolist() == [0.0, 1.0]  # gt 0 taken, then a duplicate


def test_class_names_label_the_summary() -> None:
    det, gt = _one_class_case()
    got = fast.evaluate_voc(det, gt, 2, class_names=["background", "cat"])
    assert "cat: AP" in got.summary() and got.class_names == ("background", "cat")


def test_malformed_boxes_are_rejected() -> None:
    gt = {"x": (np.zeros((2, 5)), np.array([1, 1]), np.array([False, False]))}
    with pytest.raises(ValueError, match=r"boxes must have shape \[N, 4\]"):
        fast.evaluate_voc({}, gt, 2)
    with pytest.raises(ValueError, match="no ground-truth entry"):
        fast.evaluate_voc({"y": (np.zeros((0, 4)), np.zeros(0), np.zeros(0))}, {}, 2)
