"""reference.voc_eval: 11-point / all-point AP by hand (incl. the 0.3 recall trap) and the devkit's matching
rules (difficult, duplicates, +1 widths, iw/ih guard, no fall-back, npos = 0, no detections)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference.voc_eval import RECALL_POINTS_11, VocResult, evaluate_voc, voc_ap

G1, G2, G3, G4 = [1, 1, 10, 10], [20, 20, 29, 29], [1, 1, 10, 10], [5, 5, 14, 14]


def gt(boxes: list, labels: list, difficult: list | None = None) -> tuple:
    n = len(labels)
    return (np.array(boxes, dtype=np.float64).reshape(n, 4), np.array(labels, dtype=np.int64),
            np.array(difficult if difficult is not None else [False] * n, dtype=bool))


def det(boxes: list, scores: list, labels: list) -> tuple:
    return (np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(scores, dtype=np.float64),
            np.array(labels, dtype=np.int64))


def test_recall_points_are_exact_tenths() -> None:
    assert RECALL_POINTS_11[3] == 0.3 == 3 / 10
    # the trap this avoids: both usual constructions give 0.30000000000000004 > 0.3
    assert np.arange(0.0, 1.1, 0.1)[3] > 0.3 and np.linspace(0, 1, 11)[3] > 0.3


def test_voc_ap_recall_exactly_0_3() -> None:
    recall, precision = np.array([0.1, 0.2, 3 / 10]), np.ones(3)
    assert voc_ap(recall, precision) == pytest.approx(4 / 11, rel=1e-15)  # t = 0, 0.1, 0.2, 0.3
    trap = sum(precision[recall >= t].max() if np.any(recall >= t) else 0 for t in np.arange(0, 1.1, 0.1)) / 11
    assert trap == pytest.approx(3 / 11)  # what np.arange would have given
    assert voc_ap(recall, precision, use_07_metric=False) == pytest.approx(0.3)


def test_voc_ap_all_point_by_hand() -> None:
    assert voc_ap([0.5, 1.0], [1.0, 0.5], use_07_metric=False) == pytest.approx(0.5 * 1.0 + 0.5 * 0.5)
    # the envelope lifts the early precision to the later, better one
    assert voc_ap([0.5, 1.0], [0.5, 1.0], use_07_metric=False) == pytest.approx(1.0)
    assert voc_ap([0.5, 1.0], [0.5, 1.0]) == pytest.approx(1.0)
    assert voc_ap([], []) == 0.0 and voc_ap([], [], use_07_metric=False) == 0.0
    with pytest.raises(ValueError, match="same length"):
        voc_ap([0.1, 0.2], [1.0])


def hand_split() -> tuple[dict, dict]:
    ground_truth = {
        "A": gt([G1, G2, G3], [1, 1, 2], [False, True, False]),  # G2 is difficult
        "B": gt([G4], [1]),
        "C": gt([], []),  # an image with no objects
    }
    detections = {
        "A": det([G1, [1, 1, 10, 11], G2, [100, 100, 120, 120]], [0.9, 0.8, 0.7, 0.05], [1, 1, 1, 3]),
        "B": det([G4, [50, 50, 60, 60]], [0.6, 0.5], [1, 1]),
    }
    return detections, ground_truth


def test_evaluate_by_hand_07() -> None:
    detections, ground_truth = hand_split()
    res = evaluate_voc(detections, ground_truth, num_classes=4)
    assert isinstance(res, VocResult)
    assert res.npos == {1: 2, 2: 1, 3: 0}  # the difficult G2 does not count
    # class 1 in score order: .9 TP (G1), .8 FP (duplicate on G1), .7 ignored (difficult G2), .6 TP, .5 FP
    np.testing.assert_allclose(res.recall[1], [0.5, 0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(res.precision[1], [1.0, 0.5, 0.5, 2 / 3, 0.5])
    # 11-point: t = 0 .. 0.5 -> 1, t = 0.6 .. 1.0 -> 2/3; (6 + 5·2/3) / 11 = 28/33
    assert res.ap[1] == pytest.approx(28 / 33, rel=1e-14)
    assert res.ap[2] == 0.0 and res.recall[2].shape == (0,)  # ground truth, no detection
    assert math.isnan(res.ap[3])  # a detection but no ground truth: npos = 0 -> NaN, left out of the mAP
    assert res.mAP == pytest.approx((28 / 33 + 0.0) / 2, rel=1e-14)


def test_evaluate_by_hand_all_point() -> None:
    detections, ground_truth = hand_split()
    res = evaluate_voc(detections, ground_truth, num_classes=4, use_07_metric=False)
    # envelope: precision 1 up to recall 0.5, then 2/3 up to recall 1 -> 0.5 + 0.5·2/3 = 5/6
    assert res.ap[1] == pytest.approx(5 / 6, rel=1e-14)
    names = ("background", "cat", "dog", "cow")
    summary = evaluate_voc(detections, ground_truth, 4, class_names=names).summary()
    assert "cat" in summary and "mAP" in summary


def test_plus_one_pixel_widths() -> None:
    # gt 10x10 pixels (1..10 inclusive); det 5x10: inter 50, union 100 -> exactly 0.5 -> TP.
    # Without +1 the IoU would be 36/81 = 0.444 -> FP.
    res = evaluate_voc({"A": det([[1, 1, 5, 10]], [0.9], [1])}, {"A": gt([G1], [1])}, 2)
    assert res.ap[1] == pytest.approx(1.0)
    # one pixel less: 40 / 100 -> FP
    res = evaluate_voc({"A": det([[1, 1, 4, 10]], [0.9], [1])}, {"A": gt([G1], [1])}, 2)
    assert res.ap[1] == 0.0


def test_overlap_needs_positive_iw_and_ih() -> None:
    # diagonally disjoint: iw = ih = -9, whose product 81 would fake an IoU of 81/119 = 0.68 without the guard
    res = evaluate_voc({"A": det([G2], [0.9], [1])}, {"A": gt([G1], [1])}, 2)
    assert res.ap[1] == 0.0 and res.precision[1].tolist() == [0.0]
    # sharing one pixel row and column: iw = ih = 1 -> a (tiny) overlap
    res = evaluate_voc({"A": det([[10, 10, 19, 19]], [0.9], [1])}, {"A": gt([G1], [1])}, 2, iou_threshold=0.005)
    assert res.ap[1] == pytest.approx(1.0)


def test_no_fall_back_to_second_best() -> None:
    # both detections overlap GA best; the second one also overlaps GB by >= 0.5 but GA is taken -> FP
    ga, gb = [1, 1, 10, 10], [3, 1, 12, 10]
    ground_truth = {"A": gt([ga, gb], [1, 1])}
    res = evaluate_voc({"A": det([ga, [1, 1, 10, 10]], [0.9, 0.8], [1, 1])}, ground_truth, 2)
    np.testing.assert_allclose(res.precision[1], [1.0, 0.5])
    np.testing.assert_allclose(res.recall[1], [0.5, 0.5])


def test_difficult_first_detection_guards_zero_over_zero() -> None:
    ground_truth = {"A": gt([G1, G2], [1, 1], [True, False])}
    res = evaluate_voc({"A": det([G1, G2], [0.9, 0.8], [1, 1])}, ground_truth, 2)
    np.testing.assert_array_equal(res.precision[1], [0.0, 1.0])  # 0/0 -> 0, not NaN
    assert res.ap[1] == pytest.approx(1.0)


def test_recall_exactly_0_3_through_the_evaluator() -> None:
    boxes = [[1 + 20 * k, 1, 10 + 20 * k, 10] for k in range(10)]
    res = evaluate_voc({"A": det(boxes[:3], [0.9, 0.8, 0.7], [1, 1, 1])}, {"A": gt(boxes, [1] * 10)}, 2)
    assert res.recall[1][-1] == 0.3
    assert res.ap[1] == pytest.approx(4 / 11, rel=1e-15)


def test_equal_scores_keep_dict_order() -> None:
    ground_truth = {"X": gt([], []), "Y": gt([G1], [1])}
    fp_first = evaluate_voc({"X": det([G1], [0.5], [1]), "Y": det([G1], [0.5], [1])}, ground_truth, 2)
    tp_first = evaluate_voc({"Y": det([G1], [0.5], [1]), "X": det([G1], [0.5], [1])}, ground_truth, 2)
    assert fp_first.ap[1] == pytest.approx(0.5) and tp_first.ap[1] == pytest.approx(1.0)


def test_bad_input() -> None:
    ground_truth = {"A": gt([G1], [1])}
    with pytest.raises(ValueError, match="no ground-truth entry"):
        evaluate_voc({"Z": det([G1], [0.9], [1])}, ground_truth, 2)
    with pytest.raises(ValueError, match=r"labels must be in 1\.\.1"):
        evaluate_voc({"A": det([G1], [0.9], [2])}, ground_truth, 2)
    with pytest.raises(ValueError, match="scores"):
        evaluate_voc({"A": (np.array([G1], float), np.array([0.9, 0.8]), np.array([1]))}, ground_truth, 2)
    with pytest.raises(ValueError, match="difficult"):
        evaluate_voc({}, {"A": (np.array([G1], float), np.array([1]), np.array([True, False]))}, 2)


_pix_box = st.tuples(st.integers(1, 40), st.integers(1, 400), st.integers(0, 100), st.integers(0, 100)).map(
    lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


def _disjoint(objs: list) -> list:
    """Shift object k right by 150·k pixels: the gt boxes of an image never overlap."""
    return [([b[0] + 150 * k, b[1], b[2] + 150 * k, b[3]], c, d) for k, (b, c, d) in enumerate(objs)]


_noisy_box = st.tuples(_pix_box, st.integers(0, 4)).map(lambda t: [t[0][0] + 150 * t[1], t[0][1],
                                                                   t[0][2] + 150 * t[1], t[0][3]])
_image = st.lists(st.tuples(_pix_box, st.integers(1, 3), st.booleans()), max_size=5).map(_disjoint)


@given(st.lists(_image, min_size=1, max_size=4), st.data(), st.booleans())
def test_ap_bounds_and_perfect_detections(images: list, data: st.DataObject, use_07: bool) -> None:
    """Precondition for AP = 1: the gt boxes of an image do not overlap (else a detection of a box may be
    claimed by an overlapping difficult box first, which the devkit ignores rather than counting)."""
    ground_truth = {i: gt([b for b, _, _ in objs], [c for _, c, _ in objs], [d for _, _, d in objs])
                    for i, objs in enumerate(images)}
    # perfect: every non-difficult box detected once, any scores -> AP = 1 wherever npos > 0
    perfect = {}
    for i, objs in enumerate(images):
        keep = [(b, c) for b, c, d in objs if not d]
        scores = data.draw(st.lists(st.floats(0.01, 1.0), min_size=len(keep), max_size=len(keep)))
        perfect[i] = det([b for b, _ in keep], scores, [c for _, c in keep])
    res = evaluate_voc(perfect, ground_truth, 4, use_07_metric=use_07)
    for c in (1, 2, 3):
        assert math.isnan(res.ap[c]) if res.npos[c] == 0 else res.ap[c] == pytest.approx(1.0)
    # random detections: AP in [0, 1]
    noisy = {i: det(data.draw(st.lists(_noisy_box, min_size=n, max_size=n)),
                    data.draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n)),
                    data.draw(st.lists(st.integers(1, 3), min_size=n, max_size=n)))
             for i, n in enumerate(data.draw(st.lists(st.integers(0, 6), min_size=len(images), max_size=len(images))))}
    res = evaluate_voc(noisy, ground_truth, 4, use_07_metric=use_07)
    for c in (1, 2, 3):
        assert math.isnan(res.ap[c]) == (res.npos[c] == 0)
        assert math.isnan(res.ap[c]) or 0.0 <= res.ap[c] <= 1.0 + 1e-12
