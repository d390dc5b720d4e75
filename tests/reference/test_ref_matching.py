"""reference.matching: forcing order, thresholds (>= t), ties, G = 0, bad input, every gt gets a prior."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ref_strategies import xyxy_boxes
from reference.boxes import box_iou, cxcywh_to_xyxy, xyxy_to_cxcywh
from reference.matching import (check_padded_ground_truth, float32_ambiguous_priors, float32_iou_tolerance, match,
                                validate_ground_truth)
from reference.priors import SSD300, default_boxes

SSD_PRIORS = default_boxes(SSD300)


def strip(x0: float, x1: float) -> list[float]:
    """A full-height xyxy box: its IoU with another strip is the 1-D interval IoU."""
    return [x0, 0.0, x1, 1.0]


# p0 = [0, 0.4], p1 = [0.6, 1.0], p2 = [0.05, 0.45]
PRIORS = xyxy_to_cxcywh(np.array([strip(0.0, 0.4), strip(0.6, 1.0), strip(0.05, 0.45)]))
BIG, SMALL = strip(0.0, 0.4), strip(0.0, 0.1)
# IoU table:           p0     p1   p2
#   BIG   [0, 0.4]     1      0    0.35/0.45 = 0.778
#   SMALL [0, 0.1]     0.25   0    0.05/0.45 = 0.111
# Both gts want p0 (step 3). SMALL never reaches 0.5, so it is matched only by forcing.


def test_hand_iou_table() -> None:
    np.testing.assert_allclose(box_iou(np.array([BIG, SMALL]), cxcywh_to_xyxy(PRIORS)),
                               [[1.0, 0.0, 0.35 / 0.45], [0.25, 0.0, 0.05 / 0.45]], atol=1e-12)


def test_two_gts_want_the_same_prior_later_gt_wins() -> None:
    labels, matched = match(np.array([BIG, SMALL]), np.array([3, 7]), PRIORS)
    # forcing g=0 sets p0 -> BIG, then g=1 overwrites p0 -> SMALL (label 7, IoU 0.25: forced only).
    # p2 keeps BIG by threshold (0.778 >= 0.5); p1 overlaps nothing: argmax tie -> gt 0, background.
    np.testing.assert_array_equal(labels, [7, 0, 3])
    np.testing.assert_array_equal(matched, [1, 0, 0])
    assert labels.dtype == np.int64 and matched.dtype == np.int64


def test_forcing_order_reversed() -> None:
    # Now BIG comes last and takes p0 back; SMALL is left with no prior at all (why the "every gt gets a prior"
    # property needs distinct best priors as a precondition).
    labels, matched = match(np.array([SMALL, BIG]), np.array([7, 3]), PRIORS)
    np.testing.assert_array_equal(labels, [3, 0, 3])
    np.testing.assert_array_equal(matched, [1, 0, 1])


def test_threshold_is_inclusive() -> None:
    gt = np.array([[0.0, 0.0, 0.5, 1.0]])
    priors = np.array([
        [0.25, 0.5, 0.5, 1.0],  # the gt itself: best prior (forced)
        [0.5, 0.5, 1.0, 1.0],  # [0, 0, 1, 1]: IoU = 0.5 / 1 = 0.5 exactly -> matched
        [0.125, 0.5, 0.25, 1.0],  # [0, 0, 0.25, 1]: IoU = 0.25 / 0.5 = 0.5 exactly -> matched
        [(1 + 2.0 ** -20) / 2, 0.5, 1 + 2.0 ** -20, 1.0],  # IoU = 0.5 / (1 + 2^-20) just below -> background
    ])
    iou = box_iou(gt, cxcywh_to_xyxy(priors))[0]
    assert iou[1] == 0.5 and iou[2] == 0.5 and iou[3] < 0.5
    labels, matched = match(gt, np.array([4]), priors)
    np.testing.assert_array_equal(labels, [4, 4, 4, 0])
    np.testing.assert_array_equal(matched, [0, 0, 0, 0])
    labels, _ = match(gt, np.array([4]), priors, iou_threshold=0.6)
    np.testing.assert_array_equal(labels, [4, 0, 0, 0])


def test_ties_first_index_wins() -> None:
    # the gt overlaps p0 and p1 equally (IoU 1/3 each): best_prior is p0 (step 3, first index)
    gt = np.array([strip(0.25, 0.75)])
    priors = xyxy_to_cxcywh(np.array([strip(0.0, 0.5), strip(0.5, 1.0)]))
    labels, _ = match(gt, np.array([2]), priors)
    np.testing.assert_array_equal(labels, [2, 0])
    # two identical gts: each prior's best gt is gt 0 (step 2), but forcing gives p0 to the later gt 1
    labels, matched = match(np.array([strip(0.0, 0.5)] * 2), np.array([5, 6]), priors[:1].repeat(2, axis=0))
    np.testing.assert_array_equal(matched, [1, 0])
    np.testing.assert_array_equal(labels, [6, 5])


def test_no_ground_truth() -> None:
    for empty in (np.zeros((0, 4)), []):
        labels, matched = match(empty, np.zeros(0, dtype=np.int64), SSD_PRIORS)
        assert labels.shape == matched.shape == (8732,)
        assert not labels.any() and np.all(matched == -1)


@pytest.mark.parametrize("boxes, labels, message", [
    ([[0.1, 0.1, 0.5, 0.5], [0.3, 0.2, 0.3, 0.6]], [1, 2], "gt box 1 is degenerate"),
    ([[0.1, 0.1, 0.5, 0.5], [0.3, 0.6, 0.4, 0.2]], [1, 2], "gt box 1 is degenerate"),
    ([[0.1, 0.1, 0.5, np.nan]], [1], "gt box 0 has a non-finite"),
    ([[0.1, 0.1, 0.5, 0.5]], [1, 2], r"gt_labels must have shape"),
    ([[0.1, 0.1, 0.5]], [1], r"gt_boxes must have shape"),
    ([[0.1, 0.1, 0.5, 0.5]], [0], "background"),
    ([[0.1, 0.1, 0.5, 0.5]], [1.5], "integers"),
])
def test_bad_input(boxes: list, labels: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        match(np.array(boxes), np.array(labels), SSD_PRIORS)


def test_bad_priors() -> None:
    with pytest.raises(ValueError, match="priors"):
        match(np.array([[0.1, 0.1, 0.5, 0.5]]), np.array([1]), np.zeros((0, 4)))


@given(xyxy_boxes(min_n=1, max_n=6, min_size=0.02), st.data())
def test_every_gt_gets_a_prior_with_its_label(gt: np.ndarray, data: st.DataObject) -> None:
    """Precondition: G <= P and the gts' best priors (step 3) are distinct; then forcing never overwrites
    one gt's best prior with another, so each gt labels at least its own best prior."""
    gt = np.clip(gt, 0.0, 1.0)
    assume(np.all(gt[:, 2:] - gt[:, :2] > 1e-3))
    gt_labels = np.array(data.draw(st.lists(st.integers(1, 20), min_size=len(gt), max_size=len(gt))))
    best_prior = np.argmax(box_iou(gt, cxcywh_to_xyxy(SSD_PRIORS)), axis=1)
    assume(len(set(best_prior.tolist())) == len(gt))
    labels, matched = match(gt, gt_labels, SSD_PRIORS)
    for g in range(len(gt)):
        assert labels[best_prior[g]] == gt_labels[g] and matched[best_prior[g]] == g
        assert np.any((matched == g) & (labels == gt_labels[g]))
    # a prior is positive iff it was forced or its best IoU reaches the threshold
    best_iou = box_iou(gt, cxcywh_to_xyxy(SSD_PRIORS)).max(axis=0)
    forced = np.zeros(len(SSD_PRIORS), dtype=bool)
    forced[best_prior] = True
    np.testing.assert_array_equal(labels > 0, forced | (best_iou >= 0.5))


# ---------------------------------------------------------------------------------------------- padded batches
PADDED = np.array([[[0.1, 0.1, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]],  # image 0: one real gt, then padding
                   [[0.2, 0.2, 0.6, 0.9], [0.3, 0.3, 0.4, 0.4]]])  # image 1: two real gts


def test_padded_validator_accepts_junk_padding() -> None:
    labels = np.array([[1, 0], [2, 3]])  # the padding row holds a degenerate box and label 0
    check_padded_ground_truth(PADDED, labels, np.array([1, 2]))
    check_padded_ground_truth(np.zeros((2, 0, 4)), np.zeros((2, 0), np.int64), np.array([0, 0]))


@pytest.mark.parametrize("change, message", [
    (dict(counts=np.array([3, 2])), r"counts\[0\] = 3 is outside \[0, 2\]"),
    (dict(counts=np.array([1, -1])), r"counts\[1\] = -1 is outside \[0, 2\]"),
    (dict(counts=np.array([2, 2])), "gt box 1 of image 0 is degenerate"),  # the padding row becomes real
    (dict(labels=np.array([[1, 0], [2, 0]])), "gt label 1 of image 1 is 0"),
    (dict(box=(1, 0, 2, np.inf)), r"gt box 0 of image 1 has a non-finite coordinate"),
    (dict(box=(1, 1, 3, 0.3)), r"gt box 1 of image 1 is degenerate \(width 0.1, height 0\)"),
])
def test_padded_validator_names_the_first_problem(change: dict, message: str) -> None:
    boxes = PADDED.copy()
    if "box" in change:
        b, g, k, value = change["box"]
        boxes[b, g, k] = value
    labels = change.get("labels", np.array([[1, 0], [2, 3]]))
    with pytest.raises(ValueError, match=message):
        check_padded_ground_truth(boxes, labels, change.get("counts", np.array([1, 2])))


@given(xyxy_boxes(min_n=1, max_n=5, min_size=0.0), st.data())
def test_one_image_validator_is_the_padded_one(gt: np.ndarray, data: st.DataObject) -> None:
    """validate_ground_truth and check_padded_ground_truth accept and reject the same gts (step 6, one rule)."""
    labels = np.array(data.draw(st.lists(st.integers(0, 3), min_size=len(gt), max_size=len(gt))))
    for g, corruption in enumerate(data.draw(st.lists(st.sampled_from(["", "", "nan", "flat", "flipped"]),
                                                      min_size=len(gt), max_size=len(gt)))):
        if corruption == "nan":
            gt[g, 1] = np.nan
        elif corruption:  # zero width, or x0 > x1
            gt[g, 2] = gt[g, 0] - (corruption == "flipped") * 0.1
    errors = []
    for check in (lambda: validate_ground_truth(gt, labels),
                  lambda: check_padded_ground_truth(gt[None], labels[None], np.array([len(gt)]))):
        try:
            check()
            errors.append(None)
        except ValueError as e:
            errors.append(str(e).replace(" of image 0", ""))
    assert errors[0] == errors[1]


# ---------------------------------------------------------------------------------------------- float32 near-ties
TIE_PRIORS = np.array([[0.25, 0.5, 0.5, 1.0], [0.75, 0.5, 0.5, 1.0], [0.5, 0.5, 0.2, 0.2]])  # cxcywh


def test_float32_ambiguous_priors_flag_ties_only() -> None:
    gt = np.array([[0.25, 0.0, 0.75, 1.0]])  # IoU 1/3 with priors 0 and 1: forcing may pick either
    assert float32_ambiguous_priors(gt, TIE_PRIORS).tolist() == [True, True, False]
    gt_half = np.array([[0.0, 0.0, 0.5, 0.5]])  # IoU with prior 0 exactly 0.5: at the threshold (step 5)
    assert float32_ambiguous_priors(gt_half, TIE_PRIORS[:1]).tolist() == [True]
    assert float32_ambiguous_priors(gt_half, TIE_PRIORS[:1], iou_threshold=0.4).tolist() == [False]
    assert float32_ambiguous_priors(np.zeros((0, 4)), TIE_PRIORS).tolist() == [False] * 3


def test_float32_ambiguous_priors_spare_identical_boxes() -> None:
    # identical boxes have bit-identical IoUs in every precision: the first index wins everywhere
    gt = np.array([[0.0, 0.0, 0.5, 1.0]] * 2)  # two identical gts: a step-2 tie on prior 0 (IoU 1 with both)
    assert not float32_ambiguous_priors(gt, TIE_PRIORS).any()
    twins = TIE_PRIORS[[0, 0, 2]]  # two identical priors tie for the gt's best prior (step 3)
    assert not float32_ambiguous_priors(gt[:1], twins).any()


def test_float32_ambiguous_priors_near_a_tie_but_not_at_it() -> None:
    # a gt overlapping prior 0 a little more than prior 1: within rounding for 2^-22, clear-cut for 2^-12
    for shift, ambiguous in ((2.0 ** -22, True), (2.0 ** -12, False)):
        gt = np.array([[0.25 - shift, 0.0, 0.75 - shift, 1.0]])
        assert float32_ambiguous_priors(gt, TIE_PRIORS[:2]).tolist() == [ambiguous] * 2
    # a rival gt with another box and the same IoU on a positive prior (step 2)
    gts = np.array([[0.0, 0.0, 0.5, 0.75], [0.0, 0.25, 0.5, 1.0]])  # IoU 0.75 with prior 0 for both
    assert float32_ambiguous_priors(gts, TIE_PRIORS[:1]).tolist() == [True]
    assert float32_ambiguous_priors(gts, TIE_PRIORS[:1], iou_threshold=0.9).tolist() == [False]


@given(xyxy_boxes(min_n=1, max_n=4, min_size=0.02))
def test_float32_iou_tolerance_is_positive_and_small(gt: np.ndarray) -> None:
    gt = np.clip(gt, 0.0, 1.0)
    assume(np.all(gt[:, 2:] - gt[:, :2] > 0.01))
    priors = cxcywh_to_xyxy(SSD_PRIORS)
    tol, iou = float32_iou_tolerance(gt, priors), box_iou(gt, priors)
    assert np.all(tol[iou > 0] > 0) and tol.max() < 1e-4  # rounding-sized: a few float32 ulps of an IoU
    apart = ((gt[:, None, 2:] < priors[None, :, :2] - 1e-6).any(-1)
             | (priors[None, :, 2:] < gt[:, None, :2] - 1e-6).any(-1))
    assert np.all(tol[apart] == 0)  # boxes clearly apart have IoU exactly 0 in every precision
