"""ssd_torch.matching.match_batch vs reference (per image): random padded batches (float64 bit-exact labels,
float32 on well-conditioned inputs), hand-built threshold / tie / forcing cases, validation and backends."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import reference.boxes as rb
import reference.loss as rl
import reference.priors as rp
from reference.matching import float32_ambiguous_priors, float32_iou_tolerance
from ssd_torch.boxes import box_iou, cxcywh_to_xyxy
from ssd_torch.matching import match_batch
from ssd_torch.priors import default_boxes
from torch_cases import SMALL_SPEC, gt_boxes_st, pad_batch, padded_batch_st, record_calls

SSD300_32 = default_boxes(rp.SSD300)


def _reference_batch(boxes: list, labels: list, priors: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    out = [rl.match_and_encode(b, lb, priors, t) for b, lb in zip(boxes, labels)]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


SMALL64 = default_boxes(SMALL_SPEC, dtype=torch.float64)
SMALL32 = default_boxes(SMALL_SPEC)


@given(padded_batch_st(), st.sampled_from([0.5, 0.35]), st.sampled_from([0.0, -3.0]))
def test_float64_equals_reference(batch: tuple, t: float, pad_value: float) -> None:
    boxes, labels, extra = batch
    gt, lab, counts = pad_batch(boxes, labels, extra, dtype=torch.float64, pad_value=pad_value)
    ours_l, ours_t = match_batch(gt, lab, counts, SMALL64, iou_threshold=t)
    ref_l, ref_t = _reference_batch(boxes, labels, SMALL64.numpy(), t)
    np.testing.assert_array_equal(ours_l.numpy(), ref_l)  # same arithmetic: bit-identical decisions
    np.testing.assert_allclose(ours_t.numpy(), ref_t, rtol=1e-12, atol=1e-12)


def _compare_float32(boxes: list, labels: list, extra: int, priors32: torch.Tensor, max_exempt: float) -> None:
    """float32 torch vs float64 reference on the float32 values, exact away from float32 near-ties. At most a
    ``max_exempt`` fraction of an image's priors may be exempt, so the comparison cannot pass vacuously (the
    caps sit well above the worst fractions a targeted hypothesis search found: 12.5 % of the 88 small-layout
    priors, 1.4 % of SSD300's 8732)."""
    priors = priors32.double().numpy()  # the exact values the float32 run sees
    gt, lab, counts = pad_batch(boxes, labels, extra)
    ours_l, ours_t = match_batch(gt, lab, counts, priors32)
    assert ours_l.dtype == torch.int64 and ours_t.dtype == torch.float32
    ref_l, ref_t = _reference_batch(boxes, labels, priors, 0.5)
    for i, b in enumerate(boxes):
        sure = ~float32_ambiguous_priors(b, priors, 0.5)
        assert 1.0 - sure.mean() <= max_exempt, f"image {i}: {(~sure).sum()} of {sure.size} priors exempt"
        np.testing.assert_array_equal(ours_l[i].numpy()[sure], ref_l[i][sure])
        np.testing.assert_allclose(ours_t[i].numpy()[sure], ref_t[i][sure], rtol=1e-4, atol=2e-4)


@given(padded_batch_st())
def test_float32_matches_reference(batch: tuple) -> None:
    _compare_float32(*batch, SMALL32, max_exempt=0.25)


@settings(max_examples=8)
@given(padded_batch_st(max_images=3, max_gt=20))
def test_float32_matches_reference_ssd300(batch: tuple) -> None:
    _compare_float32(*batch, SSD300_32, max_exempt=0.05)


@given(gt_boxes_st(max_gt=8), st.sampled_from(["small", "ssd300"]), st.booleans())
def test_float32_iou_error_is_within_the_near_tie_tolerance(gt: np.ndarray, layout: str, rounded: bool) -> None:
    """The assumption under reference.matching.float32_ambiguous_priors: the torch layer's float32 IoU (priors
    converted to xyxy in float32) sits within float32_iou_tolerance of the float64 IoU, whether the reference
    gets the float32 priors (the tests) or its own float64 ones (ssd_torch.parity)."""
    spec = SMALL_SPEC if layout == "small" else rp.SSD300
    priors32 = default_boxes(spec)
    ref_priors = priors32.double().numpy() if rounded else rp.default_boxes(spec)
    iou32 = box_iou(torch.from_numpy(gt).float(), cxcywh_to_xyxy(priors32)).double().numpy()
    ref_xyxy = rb.cxcywh_to_xyxy(ref_priors)
    error = np.abs(iou32 - rb.box_iou(gt, ref_xyxy))
    assert np.all(error <= float32_iou_tolerance(gt, ref_xyxy))


def _priors_xyxy(*boxes: tuple) -> torch.Tensor:
    """cxcywh priors from xyxy tuples (dyadic values: exact in float32 and float64)."""
    b = torch.tensor(boxes, dtype=torch.float64)
    return torch.cat([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("delta, positive", [(0.0, True), (2.0**-12, True), (-(2.0**-12), False)])
def test_iou_exactly_at_threshold(dtype: torch.dtype, delta: float, positive: bool) -> None:
    # gt [0.25, 0.25, 0.75, 0.5 + delta] vs prior 1 = [0.25, 0.25, 0.75, 0.75]: IoU = 0.5 + 2 delta exactly;
    # prior 0 is the gt box itself (IoU 1), so the gt is forced onto prior 0 and prior 1 is decided by >= t.
    priors = _priors_xyxy((0.25, 0.25, 0.75, 0.5), (0.25, 0.25, 0.75, 0.75), (0.0, 0.75, 0.25, 1.0))
    if delta:  # move prior 0 with the gt so that it stays the gt's best prior
        priors[0, 3] += delta
        priors[0, 1] += delta / 2
    gt = torch.tensor([[[0.25, 0.25, 0.75, 0.5 + delta]]], dtype=torch.float64)
    ours, _ = match_batch(gt.to(dtype), torch.tensor([[7]]), torch.tensor([1]), priors.to(dtype))
    ref, _ = rl.match_and_encode(gt[0].numpy(), np.array([7]), priors.numpy(), 0.5)
    expected = [7, 7 if positive else 0, 0]
    assert ours[0].tolist() == expected == ref.tolist()


def test_forcing_later_gt_wins_and_below_threshold_is_forced() -> None:
    # Priors 0 and 1; three gts that all have prior 0 as their best (IoU < 0.5 for gts 0 and 1).
    priors = _priors_xyxy((0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0))
    gt = torch.tensor([[[0.0, 0.0, 0.25, 0.5],  # IoU with prior 0: 0.5
                        [0.0, 0.0, 0.25, 0.25],  # 0.25
                        [0.0, 0.0, 0.125, 0.125]]], dtype=torch.float64)  # 1/16, the last gt: it wins
    labels, _ = match_batch(gt, torch.tensor([[1, 2, 3]]), torch.tensor([3]), priors)
    assert labels.tolist() == [[3, 0]]
    ref, _ = rl.match_and_encode(gt[0].numpy(), np.array([1, 2, 3]), priors.numpy())
    assert ref.tolist() == [3, 0]


def test_many_gts_want_one_prior_is_order_free() -> None:
    # 50 identical gts all want prior 0: "later wins" means the last one, whatever the scatter order.
    priors = _priors_xyxy((0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0))
    gt = torch.tensor([0.0, 0.0, 0.125, 0.125]).expand(2, 50, 4).contiguous()
    labels_in = torch.arange(1, 51).expand(2, 50).contiguous()
    labels, targets = match_batch(gt, labels_in, torch.tensor([50, 20]), priors.float())
    assert labels.tolist() == [[50, 0], [20, 0]]
    assert torch.equal(targets[:, 1], torch.zeros(2, 4))


def test_ties_first_index_wins() -> None:
    # Prior 2 = [0.25, 0.25, 0.75, 0.75] has IoU 0.5 with both gts -> gt 0 (first); gt 2 has IoU 0.5 with
    # priors 3 and 4 -> prior 3 (first) is forced; threshold 0.6 so only forced / >= 0.6 priors are positive.
    priors = _priors_xyxy((0.25, 0.25, 0.75, 0.5), (0.25, 0.5, 0.75, 0.75), (0.25, 0.25, 0.75, 0.75),
                          (0.0, 0.0, 0.125, 0.25), (0.125, 0.0, 0.25, 0.25))
    gt = torch.tensor([[[0.25, 0.25, 0.75, 0.5], [0.25, 0.5, 0.75, 0.75], [0.0, 0.0, 0.25, 0.25]]])
    for dtype in (torch.float32, torch.float64):
        lab, _ = match_batch(gt.to(dtype), torch.tensor([[1, 2, 3]]), torch.tensor([3]), priors.to(dtype),
                             iou_threshold=0.6)
        assert lab.tolist() == [[1, 2, 0, 3, 0]]
    for t, expected in ((0.6, [1, 2, 0, 3, 0]), (0.5, [1, 2, 1, 3, 3])):
        ref, _ = rl.match_and_encode(gt[0].double().numpy(), np.array([1, 2, 3]), priors.numpy(), t)
        ours, _ = match_batch(gt.double(), torch.tensor([[1, 2, 3]]), torch.tensor([3]), priors, iou_threshold=t)
        assert ref.tolist() == expected == ours[0].tolist()


def test_no_ground_truth_anywhere() -> None:
    pri = default_boxes(SMALL_SPEC)
    for g in (0, 3):  # G_max = 0, and padding-only rows (with garbage, even degenerate) and counts = 0
        gt = torch.full((2, g, 4), 0.3)
        labels, targets = match_batch(gt, torch.zeros(2, g, dtype=torch.int64), torch.zeros(2, dtype=torch.int64),
                                      pri, iou_threshold=0.0)
        assert labels.shape == (2, pri.shape[0]) and targets.shape == (2, pri.shape[0], 4)
        assert not labels.any() and not targets.any()


def test_background_targets_are_zero_and_finite() -> None:
    gt, lab, counts = pad_batch([np.array([[0.1, 0.2, 0.4, 0.6]]), np.zeros((0, 4))],
                                [np.array([4]), np.zeros(0, dtype=np.int64)], extra=2)
    labels, targets = match_batch(gt, lab, counts, SSD300_32)
    assert torch.isfinite(targets).all()
    assert not targets[labels == 0].any() and labels[0].gt(0).sum() >= 1 and not labels[1].any()


def test_validation_errors() -> None:
    pri = default_boxes(SMALL_SPEC)
    ok = torch.tensor([[[0.1, 0.1, 0.5, 0.5]]])
    with pytest.raises(ValueError, match="degenerate"):
        match_batch(torch.tensor([[[0.5, 0.1, 0.5, 0.4]]]), torch.tensor([[1]]), torch.tensor([1]), pri)
    with pytest.raises(ValueError, match="gt box 0 of image 0 has a non-finite coordinate"):
        match_batch(torch.tensor([[[0.1, 0.1, float("nan"), 0.4]]]), torch.tensor([[1]]), torch.tensor([1]), pri)
    with pytest.raises(ValueError, match="label"):
        match_batch(ok, torch.tensor([[0]]), torch.tensor([1]), pri)
    with pytest.raises(ValueError, match="counts"):
        match_batch(ok, torch.tensor([[1]]), torch.tensor([2]), pri)
    with pytest.raises(ValueError, match="gt_boxes must have shape"):
        match_batch(ok[0], torch.tensor([[1]]), torch.tensor([1]), pri)
    with pytest.raises(TypeError, match="integer"):
        match_batch(ok, torch.tensor([[1.0]]), torch.tensor([1]), pri)
    # validate=False skips the value checks (no sync); the degenerate box is then the caller's problem
    match_batch(torch.tensor([[[0.5, 0.1, 0.5, 0.4]]]), torch.tensor([[1]]), torch.tensor([1]), pri, validate=False)


def test_auto_backend_runs_the_kernels_for_float32_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # numba is a required dependency: "auto" must reach the kernels on CPU float32 and the torch code in float64
    import ssd_torch.matching as sm

    gt, lab, counts = pad_batch([np.array([[0.1, 0.2, 0.4, 0.6], [0.5, 0.5, 0.9, 0.8]])], [np.array([4, 2])])
    ran = record_calls(monkeypatch, sm, "_match_numba", "_match_torch")
    auto = match_batch(gt, lab, counts, SSD300_32, backend="auto")
    numba = match_batch(gt, lab, counts, SSD300_32, backend="numba")
    assert ran == ["_match_numba", "_match_numba"]
    assert torch.equal(auto[0], numba[0]) and torch.equal(auto[1], numba[1])
    match_batch(gt.double(), lab, counts, SSD300_32.double(), backend="auto")
    assert ran[-1] == "_match_torch"
    with pytest.raises(ValueError, match="unknown matching backend 'cuda'"):
        match_batch(gt, lab, counts, SSD300_32, backend="cuda")


def _spy_validator(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """Record the calls of the one ground-truth validator from both layers that import it."""
    import kernels.interop
    import ssd_torch.matching

    return (record_calls(monkeypatch, ssd_torch.matching, "check_padded_ground_truth"),
            record_calls(monkeypatch, kernels.interop, "check_padded_ground_truth"))


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("validate", [True, False])
def test_validate_checks_once_and_false_reaches_the_kernels(backend: str, validate: bool,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # validate=True: one check per call (a host sync on CUDA), whichever backend runs; validate=False: none,
    # the numba kernels included (the caller vouched for the data), so even a zero-width real gt goes through
    calls = _spy_validator(monkeypatch)
    gt = torch.tensor([[[0.1, 0.2, 0.4, 0.6], [0.5, 0.5, 0.9, 0.8]]])
    args = (gt, torch.tensor([[4, 2]]), torch.tensor([2]), SSD300_32)
    match_batch(*args, backend=backend, validate=validate)
    assert sum(map(len, calls)) == int(validate)
    gt[0, 1, 2] = 0.5  # zero width
    if validate:
        with pytest.raises(ValueError, match="gt box 1 of image 0 is degenerate"):
            match_batch(*args, backend=backend, validate=True)
    else:
        labels, _ = match_batch(*args, backend=backend, validate=False)
        assert labels.shape == (1, SSD300_32.shape[0])
    assert sum(map(len, calls)) == 2 * int(validate)
