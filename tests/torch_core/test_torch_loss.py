"""ssd_torch.loss vs reference.loss.multibox_loss: values (float64 / float32), gradients vs finite differences
of the reference, hard-negative counts, the no-positive batch, and the MultiBoxLoss module."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import reference.loss as rl
from ssd_torch.loss import (LossParts, MultiBoxLoss, hard_negative_mask, hard_negative_sum,
                            multibox_loss_from_targets)
from ssd_torch.matching import match_batch
from ssd_torch.priors import default_boxes
from torch_cases import SMALL_SPEC, pad_batch, padded_batch_st

PRI64 = default_boxes(SMALL_SPEC, dtype=torch.float64)  # 88 priors
P = PRI64.shape[0]


def _predictions(seed: int, b: int, c: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(b, P, 4, generator=g, dtype=torch.float64) * 1.5  # |d| on both sides of the L1 kink
    conf = torch.randn(b, P, c, generator=g, dtype=torch.float64) * 2.0
    return loc.to(dtype), conf.to(dtype)


@given(padded_batch_st(num_classes=4), st.integers(0, 2**31 - 1), st.sampled_from([3, 1, 0.5]))
def test_matches_reference(batch: tuple, seed: int, ratio: float) -> None:
    boxes, labels, extra = batch
    loc, conf = _predictions(seed, len(boxes), 4)
    gt, lab, counts = pad_batch(boxes, labels, extra, dtype=torch.float64)
    ref = rl.multibox_loss(loc.numpy(), conf.numpy(), boxes, labels, PRI64.numpy(), neg_pos_ratio=ratio)
    ours = MultiBoxLoss(PRI64, neg_pos_ratio=ratio)(loc, conf, gt, lab, counts)
    assert isinstance(ours, LossParts) and int(ours.num_pos) == ref[2]
    np.testing.assert_allclose([float(ours.loc), float(ours.conf)], ref[:2], rtol=1e-10, atol=1e-12)
    # float32 loss arithmetic on the same targets (float32 *matching* may legitimately flip a decision within
    # ~1e-6 of a threshold or tie; test_torch_matching compares it away from such decisions).
    targets = match_batch(gt, lab, counts, PRI64)
    ours32 = multibox_loss_from_targets(loc.float(), conf.float(), targets[0], targets[1].float(), ratio)
    assert ours32.loc.dtype == torch.float32
    np.testing.assert_allclose([float(ours32.loc), float(ours32.conf)], ref[:2], rtol=1e-4, atol=1e-5)


def _reference_total(loc: np.ndarray, conf: np.ndarray, boxes: list, labels: list) -> float:
    out = rl.multibox_loss(loc, conf, boxes, labels, PRI64.numpy())
    return out[0] + out[1]


@settings(max_examples=5)
@given(st.integers(0, 2**31 - 1))
def test_gradient_matches_reference_finite_differences(seed: int) -> None:
    boxes = [np.array([[0.1, 0.1, 0.45, 0.5], [0.5, 0.4, 0.9, 0.95]]), np.array([[0.2, 0.3, 0.7, 0.6]])]
    labels = [np.array([1, 2]), np.array([2])]
    loc, conf = _predictions(seed, 2, 3)
    loc.requires_grad_(True)
    conf.requires_grad_(True)
    gt, lab, counts = pad_batch(boxes, labels, dtype=torch.float64)
    parts = MultiBoxLoss(PRI64)(loc, conf, gt, lab, counts)
    (parts.loc + parts.conf).backward()
    rng = np.random.default_rng(seed)
    eps = 1e-6
    for tensor in (loc, conf):
        base = [loc.detach().numpy().copy(), conf.detach().numpy().copy()]
        which = 0 if tensor is loc else 1
        for flat in rng.choice(base[which].size, size=12, replace=False):
            idx = np.unravel_index(flat, base[which].shape)
            plus, minus = [a.copy() for a in base], [a.copy() for a in base]
            plus[which][idx] += eps
            minus[which][idx] -= eps
            fd = (_reference_total(*plus, boxes, labels) - _reference_total(*minus, boxes, labels)) / (2 * eps)
            assert float(tensor.grad[idx]) == pytest.approx(fd, rel=1e-5, abs=1e-7)


def test_no_positive_gives_zero_with_gradient() -> None:
    loc, conf = _predictions(0, 3, 5)
    loc.requires_grad_(True)
    conf.requires_grad_(True)
    labels = torch.zeros(3, P, dtype=torch.int64)
    parts = multibox_loss_from_targets(loc, conf, labels, torch.zeros(3, P, 4, dtype=torch.float64))
    assert float(parts.loc.detach()) == 0.0 and float(parts.conf.detach()) == 0.0 and int(parts.num_pos) == 0
    (parts.loc + parts.conf).backward()
    assert torch.equal(loc.grad, torch.zeros_like(loc)) and torch.equal(conf.grad, torch.zeros_like(conf))
    # the same through the module with counts = 0 and G_max = 0
    module = MultiBoxLoss(PRI64)
    for g in (0, 2):
        out = module(loc, conf, torch.zeros(3, g, 4, dtype=torch.float64), torch.zeros(3, g, dtype=torch.int64),
                     torch.zeros(3, dtype=torch.int64))
        assert not any(torch.isnan(v).any() for v in out) and float(out.conf.detach()) == 0.0


def test_hard_negative_count_and_selection() -> None:
    ce = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 9.0, 0.5, 7.0],
                       [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
                       [8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0]])
    positive = torch.zeros(3, 8, dtype=torch.bool)
    positive[0, 5] = True  # n = 1 -> the 3 largest negatives: 7, 5, 4 (the positive's 9 is not a negative)
    positive[2, :7] = True  # n = 7, one negative left -> min(21, 1) = 1
    mask = hard_negative_mask(ce, positive, 3)
    assert mask[0].tolist() == [True, True, False, False, False, False, False, True]
    assert not mask[1].any()  # no positive -> no negatives
    assert mask[2].tolist() == [False] * 7 + [True]
    assert hard_negative_mask(ce, positive, 1.5)[0].sum() == 1  # floor(1.5 * 1)


def test_from_targets_equals_module_and_half_precision() -> None:
    boxes, labels = [np.array([[0.1, 0.1, 0.45, 0.5]]), np.array([[0.2, 0.3, 0.7, 0.6]])], [np.array([1]),
                                                                                             np.array([3])]
    gt, lab, counts = pad_batch(boxes, labels, extra=1)
    pri = PRI64.float()
    loc, conf = _predictions(3, 2, 4, torch.float32)
    module = MultiBoxLoss(pri)
    assert module.state_dict() == {}  # priors are a non-persistent buffer
    direct = multibox_loss_from_targets(loc, conf, *match_batch(gt, lab, counts, pri))
    via = module(loc, conf, gt, lab, counts)
    for a, b in zip(direct, via):
        assert torch.equal(a, b)
    half = module(loc.half(), conf.bfloat16(), gt, lab, counts)
    assert half.loc.dtype == torch.float32
    torch.testing.assert_close(half.conf, via.conf, rtol=2e-2, atol=1e-2)


def test_errors() -> None:
    loc, conf = _predictions(0, 1, 3)
    labels = torch.zeros(1, P, dtype=torch.int64)
    with pytest.raises(ValueError, match="conf must have shape"):
        multibox_loss_from_targets(loc, conf[:, :-1], labels, torch.zeros(1, P, 4))
    with pytest.raises(ValueError, match="labels"):
        multibox_loss_from_targets(loc, conf, labels.float(), torch.zeros(1, P, 4))
    with pytest.raises(ValueError, match="number of classes"):
        gt, lab, counts = pad_batch([np.array([[0.1, 0.1, 0.45, 0.5]])], [np.array([7])], dtype=torch.float64)
        MultiBoxLoss(PRI64)(loc, conf, gt, lab, counts)
    with pytest.raises(ValueError, match="priors"):
        MultiBoxLoss(torch.zeros(3, 3))


@given(st.integers(1, 4), st.integers(0, 2**31 - 1), st.sampled_from([3, 0.5, 10]))
def test_topk_and_sort_mining_agree(rows: int, seed: int, ratio: float) -> None:
    rng = np.random.default_rng(seed)
    ce = torch.from_numpy(rng.integers(0, 4, size=(rows, 30)).astype(np.float64))  # many ties
    positive = torch.from_numpy(rng.random((rows, 30)) < rng.random((rows, 1)))
    by_sort = hard_negative_sum(ce, positive, ratio, use_topk=False)
    by_topk = hard_negative_sum(ce, positive, ratio, use_topk=True)
    expected = 0.0
    for i in range(rows):  # the reference rule, literally
        neg = np.sort(ce[i][~positive[i]].numpy())[::-1]
        expected += neg[: min(int(ratio * int(positive[i].sum())), neg.size)].sum()
    assert float(by_sort) == float(by_topk) == expected


@settings(max_examples=30)
@given(padded_batch_st(num_classes=4), st.integers(0, 2**31 - 1), st.sampled_from([3, 1, 0.5]),
       st.sampled_from([1, 5, 200]), st.integers(0, 3))
def test_min_negatives_matches_reference(batch: tuple, seed: int, ratio: float, min_negatives: int,
                                         empty: int) -> None:
    """Images without gt (``empty`` extra ones, plus those hypothesis draws with G = 0) keep ``min_negatives``
    hard negatives, in the module, the from-targets function and both mining paths, as in the reference."""
    boxes, labels, extra = batch
    boxes = boxes + [np.zeros((0, 4))] * empty
    labels = labels + [np.zeros(0, np.int64)] * empty
    loc, conf = _predictions(seed, len(boxes), 4)
    gt, lab, counts = pad_batch(boxes, labels, extra, dtype=torch.float64)
    ref = rl.multibox_loss(loc.numpy(), conf.numpy(), boxes, labels, PRI64.numpy(), neg_pos_ratio=ratio,
                           min_negatives=min_negatives)
    ours = MultiBoxLoss(PRI64, neg_pos_ratio=ratio, min_negatives=min_negatives)(loc, conf, gt, lab, counts)
    assert int(ours.num_pos) == ref[2]
    np.testing.assert_allclose([float(ours.loc), float(ours.conf)], ref[:2], rtol=1e-10, atol=1e-12)
    targets = match_batch(gt, lab, counts, PRI64)
    ce = torch.nn.functional.cross_entropy(conf.flatten(0, 1), targets[0].flatten(), reduction="none")
    ce = ce.view_as(targets[0])
    sums = [hard_negative_sum(ce, targets[0] > 0, ratio, use_topk=t, min_negatives=min_negatives)
            for t in (True, False)]
    torch.testing.assert_close(sums[0], sums[1], rtol=1e-12, atol=1e-12)


def test_min_negatives_by_hand_and_default_unchanged() -> None:
    """Row 1 has no positive: min_negatives = 2 keeps its two largest ce (8, 7); rows with positives keep
    floor(ratio * n) whatever min_negatives says. min_negatives = 0 is the default and gives the paper's rule."""
    ce = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 9.0, 0.5, 7.0],
                       [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]])
    positive = torch.zeros(2, 8, dtype=torch.bool)
    positive[0, 5] = True
    mask = hard_negative_mask(ce, positive, 1, min_negatives=2)
    assert mask[0].tolist() == [False] * 7 + [True]  # n = 1, ratio 1: one negative (7), not two
    assert mask[1].tolist() == [False] * 6 + [True, True]
    assert hard_negative_mask(ce, positive, 1, min_negatives=100)[1].all()  # capped at #negatives
    assert float(hard_negative_sum(ce, positive, 1, min_negatives=2)) == 7.0 + 15.0
    assert torch.equal(hard_negative_mask(ce, positive, 1), hard_negative_mask(ce, positive, 1, min_negatives=0))
    loc, conf = _predictions(5, 2, 3)
    labels = torch.zeros(2, P, dtype=torch.int64)
    labels[0, :3] = 1
    targets = torch.randn(2, P, 4, dtype=torch.float64)
    default = multibox_loss_from_targets(loc, conf, labels, targets)
    for a, b in zip(default, multibox_loss_from_targets(loc, conf, labels, targets, min_negatives=0)):
        assert torch.equal(a, b)


def test_min_negatives_batch_without_positives_has_gradient() -> None:
    loc, conf = _predictions(1, 2, 3)
    conf.requires_grad_(True)
    labels = torch.zeros(2, P, dtype=torch.int64)
    parts = multibox_loss_from_targets(loc, conf, labels, torch.zeros(2, P, 4, dtype=torch.float64),
                                       min_negatives=3)
    ce = torch.nn.functional.cross_entropy(conf.detach().flatten(0, 1), labels.flatten(), reduction="none")
    want = ce.view(2, P).topk(3, dim=1).values.sum()  # divided by max(N, 1) = 1
    assert int(parts.num_pos) == 0 and float(parts.loc) == 0.0
    torch.testing.assert_close(parts.conf.detach(), want)
    parts.conf.backward()
    assert int((conf.grad.abs().sum(dim=-1) > 0).sum()) == 6  # exactly the 3 + 3 mined priors get a gradient


def test_min_negatives_rejects_bad_values() -> None:
    for bad in (-1, 0.5):
        with pytest.raises(ValueError, match="min_negatives"):
            MultiBoxLoss(PRI64, min_negatives=bad)
        with pytest.raises(ValueError, match="min_negatives"):
            multibox_loss_from_targets(*_predictions(0, 1, 3), torch.zeros(1, P, dtype=torch.int64),
                                       torch.zeros(1, P, 4), min_negatives=bad)
    assert "min_negatives=4" in repr(MultiBoxLoss(PRI64, min_negatives=4))

