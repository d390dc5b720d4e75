"""reference.loss: targets (0 for background), a loss worked by hand, hard negatives, properties."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ref_strategies import xyxy_boxes
from reference.boxes import box_iou, cxcywh_to_xyxy, xyxy_to_cxcywh
from reference.coding import encode
from reference.loss import logsumexp, match_and_encode, multibox_loss, smooth_l1
from reference.priors import SSD300, default_boxes

# Six disjoint full-height strips of width 1/8 (dyadic, so every conversion is exact); the gt is strip 0 itself.
STRIPS = np.array([[k / 8, 0.0, (k + 1) / 8, 1.0] for k in range(6)])
PRIORS = xyxy_to_cxcywh(STRIPS)
GT = STRIPS[:1]


def hand_batch() -> tuple[np.ndarray, np.ndarray]:
    """loc [2, 6, 4], conf [2, 6, 3] of the hand-worked case."""
    loc = np.zeros((2, 6, 4))
    loc[0, 0] = [0.5, -2.0, 0.0, 0.0]  # the positive: smooth_l1 = 0.5·0.5² + (2 - 0.5) = 1.625
    loc[0, 1:] = 7.0  # negatives' loc never counts
    conf = np.zeros((2, 6, 3))
    conf[0, 0] = [0.0, math.log(3), 0.0]  # label 1: ce = log(1 + 3 + 1) - log 3 = log(5/3)
    # negatives [0, log k, 0]: ce = log(2 + k) - 0 = log 3 .. log 7; the 3 hardest are log 7, log 6, log 5
    for p, k in zip(range(1, 6), [1, 4, 2, 5, 3]):
        conf[0, p] = [0.0, math.log(k), 0.0]
    conf[1] = np.random.default_rng(0).normal(size=(6, 3)) * 10  # image 1 has no gt: contributes nothing
    return loc, conf


def test_match_and_encode_zero_targets_for_background() -> None:
    gt = np.array([[0.0, 0.0, 0.125, 1.0], [0.5, 0.0, 0.625, 1.0]])
    labels, targets = match_and_encode(gt, np.array([2, 5]), PRIORS)
    np.testing.assert_array_equal(labels, [2, 0, 0, 0, 5, 0])
    np.testing.assert_array_equal(targets[labels == 0], 0.0)
    np.testing.assert_array_equal(targets[[0, 4]], 0.0)  # the gts are the priors themselves
    shifted = gt + [0.01, 0, 0.01, 0]
    labels, targets = match_and_encode(shifted, np.array([2, 5]), PRIORS)
    np.testing.assert_allclose(targets[[0, 4]], encode(shifted, PRIORS[[0, 4]]))
    labels, targets = match_and_encode(np.zeros((0, 4)), np.zeros(0, np.int64), PRIORS)
    assert not labels.any() and not targets.any() and targets.shape == (6, 4)


def test_loss_by_hand() -> None:
    loc, conf = hand_batch()
    gt_boxes = [GT, np.zeros((0, 4))]
    gt_labels = [np.array([1]), np.zeros(0, np.int64)]
    loc_loss, conf_loss, n = multibox_loss(loc, conf, gt_boxes, gt_labels, PRIORS)
    assert n == 1 and isinstance(n, int) and isinstance(loc_loss, float) and isinstance(conf_loss, float)
    assert loc_loss == pytest.approx(1.625, rel=1e-12)
    # log(5/3) + log 7 + log 6 + log 5 = log(350)
    assert conf_loss == pytest.approx(math.log(350), rel=1e-12)
    # neg_pos_ratio 1: only the hardest negative (log 7); ratio 10 > #negatives: all five (log 3..log 7)
    assert multibox_loss(loc, conf, gt_boxes, gt_labels, PRIORS, neg_pos_ratio=1)[1] == pytest.approx(
        math.log(5 / 3 * 7), rel=1e-12)
    assert multibox_loss(loc, conf, gt_boxes, gt_labels, PRIORS, neg_pos_ratio=10)[1] == pytest.approx(
        math.log(5 / 3 * 3 * 4 * 5 * 6 * 7), rel=1e-12)


def test_loss_divides_by_total_positives() -> None:
    loc, conf = hand_batch()
    both = [GT, GT]
    labels = [np.array([1]), np.array([1])]
    conf[1] = conf[0]
    loc[1] = loc[0]
    loc_loss, conf_loss, n = multibox_loss(loc, conf, both, labels, PRIORS)
    assert n == 2 and loc_loss == pytest.approx(1.625) and conf_loss == pytest.approx(math.log(350))


def test_no_positives_anywhere() -> None:
    loc, conf = hand_batch()
    out = multibox_loss(loc, conf, [np.zeros((0, 4))] * 2, [np.zeros(0, np.int64)] * 2, PRIORS)
    assert out == (0.0, 0.0, 0)


def _no_gt_conf() -> np.ndarray:
    """conf [6, 3] of an image without gt: rows [0, log k, 0] give background ce = log(2 + k) = log 3 .. log 8."""
    conf = np.zeros((6, 3))
    for p, k in enumerate([1, 4, 2, 5, 3, 6]):
        conf[p] = [0.0, math.log(k), 0.0]
    return conf


def test_min_negatives_by_hand() -> None:
    """docs/CONTRACT.md "Loss": an image with n_i = 0 keeps k_i = min_negatives hardest negatives; an image with
    positives keeps floor(ratio * n_i) whatever min_negatives says; N (the divisor) counts positives only."""
    loc, conf = hand_batch()
    conf[1] = _no_gt_conf()  # ce of image 1: log 3, log 6, log 4, log 7, log 5, log 8
    gt_boxes = [GT, np.zeros((0, 4))]
    gt_labels = [np.array([1]), np.zeros(0, np.int64)]
    default = multibox_loss(loc, conf, gt_boxes, gt_labels, PRIORS)
    assert default == multibox_loss(loc, conf, gt_boxes, gt_labels, PRIORS, min_negatives=0)
    assert default[1] == pytest.approx(math.log(350), rel=1e-12)  # image 1 contributes nothing (the paper)
    loc_loss, conf_loss, n = multibox_loss(loc, conf, gt_boxes, gt_labels, PRIORS, min_negatives=2)
    assert n == 1 and loc_loss == pytest.approx(1.625, rel=1e-12)  # negatives never add to loc
    assert conf_loss == pytest.approx(math.log(350) + math.log(8 * 7), rel=1e-12)  # + the two hardest of image 1
    # more than the image has: all six; image 0 (n = 1, ratio 1) still keeps exactly one negative (log 7)
    everything = math.log(3 * 6 * 4 * 7 * 5 * 8)
    assert multibox_loss(loc, conf, gt_boxes, gt_labels, PRIORS, min_negatives=100)[1] == pytest.approx(
        math.log(350) + everything, rel=1e-12)
    assert multibox_loss(loc, conf, gt_boxes, gt_labels, PRIORS, neg_pos_ratio=1, min_negatives=5)[1] == \
        pytest.approx(math.log(5 / 3 * 7) + math.log(8 * 7 * 6 * 5 * 4), rel=1e-12)  # top 5 of image 1


def test_min_negatives_without_any_positive() -> None:
    """N = 0 in the whole batch: the hard negatives still count, divided by max(N, 1) = 1."""
    loc, conf = hand_batch()
    conf[0] = conf[1] = _no_gt_conf()
    empty = ([np.zeros((0, 4))] * 2, [np.zeros(0, np.int64)] * 2)
    assert multibox_loss(loc, conf, *empty, PRIORS, min_negatives=1) == (0.0, pytest.approx(2 * math.log(8)), 0)
    assert multibox_loss(loc, conf, *empty, PRIORS) == (0.0, 0.0, 0)


def test_min_negatives_rejects_bad_values() -> None:
    loc, conf = hand_batch()
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="min_negatives"):
            multibox_loss(loc, conf, [GT, GT], [np.array([1])] * 2, PRIORS, min_negatives=bad)


def test_helpers() -> None:
    np.testing.assert_allclose(smooth_l1(np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0])),
                               [1.5, 0.5, 0.125, 0.0, 0.125, 0.5, 2.5])
    big = np.array([[1000.0, 1000.0], [-1000.0, 0.0]])  # naive exp overflows
    np.testing.assert_allclose(logsumexp(big, axis=1), [1000.0 + math.log(2), 0.0], atol=1e-12)


@pytest.mark.parametrize("loc_shape, conf_shape, n_gt, message", [
    ((1, 5, 4), (1, 6, 3), 1, "loc"),
    ((1, 6, 4), (1, 6, 1), 1, "conf"),
    ((1, 6, 4), (1, 6, 3), 2, "one entry per image"),
])
def test_bad_shapes(loc_shape: tuple, conf_shape: tuple, n_gt: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        multibox_loss(np.zeros(loc_shape), np.zeros(conf_shape), [GT] * n_gt, [np.array([1])] * n_gt, PRIORS)


def test_label_out_of_range() -> None:
    with pytest.raises(ValueError, match="number of classes"):
        multibox_loss(np.zeros((1, 6, 4)), np.zeros((1, 6, 3)), [GT], [np.array([3])], PRIORS)


COARSE = default_boxes(SSD300)[7942:]  # the 10x10 map and above: 790 priors, so random gts do match


@given(st.lists(xyxy_boxes(min_n=0, max_n=4, min_size=0.05), min_size=1, max_size=3),
       st.integers(0, 2 ** 32 - 1))
def test_loss_nonnegative_and_permutation_invariant(gts: list[np.ndarray], seed: int) -> None:
    """Precondition for the invariance: each gt's best prior is unique (an exact IoU tie is broken by prior
    index, docs/CONTRACT.md step 3, so a permutation may then pick another prior legitimately)."""
    rng = np.random.default_rng(seed)
    gts = [np.clip(g, 0.0, 1.0) for g in gts]
    gts = [g[np.all(g[:, 2:] - g[:, :2] > 1e-3, axis=1)] for g in gts]
    for g in gts:
        iou = box_iou(g, cxcywh_to_xyxy(COARSE))
        assume(np.all((iou == iou.max(axis=1, keepdims=True)).sum(axis=1) == 1))
    labels = [rng.integers(1, 4, size=len(g)) for g in gts]
    batch, num_priors = len(gts), len(COARSE)
    loc = rng.normal(size=(batch, num_priors, 4))
    conf = rng.normal(size=(batch, num_priors, 4)) * 3
    out = multibox_loss(loc, conf, gts, labels, COARSE)
    assert out[0] >= 0.0 and out[1] >= 0.0 and out[2] >= sum(len(g) > 0 for g in gts)
    perm = rng.permutation(num_priors)
    permuted = multibox_loss(loc[:, perm], conf[:, perm], gts, labels, COARSE[perm])
    assert permuted[2] == out[2]
    assert permuted[0] == pytest.approx(out[0], rel=1e-9, abs=1e-12)
    assert permuted[1] == pytest.approx(out[1], rel=1e-9, abs=1e-12)
