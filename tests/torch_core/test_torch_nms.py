"""ssd_torch.nms vs reference.nms: batched post-processing per image (float64 exact order, float32 on
well-conditioned inputs), the blocked NMS keep mask, stable top-k, and hand-built threshold / tie cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hypothesis import assume, given, settings
from hypothesis import strategies as st

import reference.boxes as rb
import reference.coding as rc
import reference.nms as rn
from ssd_torch.nms import (Detections, class_log_scores, key_floor, nms_keep_torch, postprocess, select_candidates,
                           stable_topk)
from ssd_torch.parity import EXEMPT_CAP, match_detections
from ssd_torch.priors import default_boxes
from torch_cases import SMALL_SPEC, record_calls

PRI64 = default_boxes(SMALL_SPEC, dtype=torch.float64)  # 88 priors
P = PRI64.shape[0]
SETTINGS = st.fixed_dictionaries({
    "score_threshold": st.sampled_from([0.01, 0.2, 0.0]),
    "top_k": st.sampled_from([400, 6, None]),
    "nms_threshold": st.sampled_from([0.45, 0.3]),
    "max_detections": st.sampled_from([200, 9, None]),
    "clip_boxes": st.booleans(),
})


@st.composite
def head_outputs_st(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """``loc[B, P, 4]``, ``conf[B, P, C]`` float64, with duplicated logit rows (exact score ties)."""
    b, c = draw(st.integers(1, 3)), draw(st.integers(2, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    loc = rng.normal(scale=draw(st.sampled_from([0.3, 1.0])), size=(b, P, 4))
    # x 20 and x 50: a confident model, most winning probabilities round to 1 in float32
    conf = rng.normal(scale=draw(st.sampled_from([1.0, 3.0])), size=(b, P, c)) * draw(st.sampled_from([1, 1, 20, 50]))
    for _ in range(draw(st.integers(0, 5))):  # exact ties: same logits for another prior (and its box)
        i, j = rng.integers(0, P, size=2)
        conf[:, j] = conf[:, i]
        if draw(st.booleans()):
            loc[:, j] = loc[:, i]
    return loc, conf


def _assert_same(ours: Detections, ref: tuple, atol: float) -> None:
    boxes, scores, labels = ref
    assert ours.labels.tolist() == labels.tolist()
    np.testing.assert_allclose(ours.scores.numpy(), scores, rtol=0, atol=atol)
    np.testing.assert_allclose(ours.boxes.numpy(), boxes, rtol=0, atol=atol)


@given(head_outputs_st(), SETTINGS)
def test_float64_equals_reference(head: tuple, kw: dict) -> None:
    loc, conf = head
    out = postprocess(torch.from_numpy(loc), torch.from_numpy(conf), PRI64, **kw)
    assert len(out) == loc.shape[0]
    for i, det in enumerate(out):
        _assert_same(det, rn.postprocess(loc[i], conf[i], PRI64.numpy(), **kw), atol=1e-12)


def _well_conditioned(loc: np.ndarray, conf: np.ndarray, priors: np.ndarray, kw: dict, margin: float) -> bool:
    """No key (``log_scores``) near-tied (``reference.nms.near_tied``) with the threshold's log or with another
    candidate's key, no same-class candidate pair with IoU within ``margin`` of the NMS threshold (one image,
    float64): the inputs on which a float32 path has no freedom at all."""
    keys = rn.log_scores(conf)[:, 1:]
    floor = rn.score_floor(kw["score_threshold"])
    if np.any(rn.near_tied(keys, floor)):
        return False
    s = np.sort(keys[keys > floor])
    if np.any(rn.near_tied(s[:-1], s[1:]) & (np.diff(s) > 0)):
        return False
    boxes = rc.decode(loc, priors)
    boxes = np.clip(boxes, 0.0, 1.0) if kw["clip_boxes"] else boxes
    for c in range(keys.shape[1]):
        idx = np.flatnonzero(keys[:, c] > floor)
        iou = rb.box_iou(boxes[idx], boxes[idx])
        if np.any(np.abs(iou - kw["nms_threshold"]) < margin):
            return False
    return True


@given(head_outputs_st(), SETTINGS)
def test_float32_matches_reference_when_well_conditioned(head: tuple, kw: dict) -> None:
    loc, conf = (x.astype(np.float32).astype(np.float64) for x in head)  # the exact float32 inputs
    priors = PRI64.float().double().numpy()
    assume(all(_well_conditioned(loc[i], conf[i], priors, kw, 1e-5) for i in range(len(loc))))
    out = postprocess(torch.from_numpy(loc).float(), torch.from_numpy(conf).float(), PRI64.float(), **kw)
    for i, det in enumerate(out):
        assert det.scores.dtype == torch.float32 and det.labels.dtype == torch.int64
        _assert_same(det, rn.postprocess(loc[i], conf[i], priors, **kw), atol=2e-6)


def _priors_from_xyxy(boxes: list) -> torch.Tensor:
    b = torch.tensor(boxes, dtype=torch.float64)
    return torch.cat([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("height, kept", [(4.5, 2), (4.5 + 1 / 64, 1), (4.5 - 1 / 64, 2)])
def test_nms_iou_exactly_at_threshold(dtype: torch.dtype, height: float, kept: int) -> None:
    # A = [0, 0, 10, 10] / 32 contains B = [0, 0, 10, h] / 32: IoU = h / 10 = 0.45 exactly for h = 4.5 (all
    # coordinates dyadic, so decode with zero offsets reproduces them exactly). Strict ">" keeps both at 0.45.
    priors = _priors_from_xyxy([[0, 0, 10 / 32, 10 / 32], [0, 0, 10 / 32, height / 32]])
    conf = torch.tensor([[[0.0, 2.0], [0.0, 1.0]]], dtype=torch.float64)
    loc = torch.zeros(1, 2, 4, dtype=torch.float64)
    det = postprocess(loc.to(dtype), conf.to(dtype), priors.to(dtype))[0]
    ref = rn.postprocess(loc[0].numpy(), conf[0].numpy(), priors.numpy())
    assert len(det.scores) == len(ref[1]) == kept
    keep = nms_keep_torch(_priors_to_xyxy(priors).to(dtype)[None, None], torch.tensor([[2]]), 0.45)
    assert int(keep.sum()) == kept


def _priors_to_xyxy(p: torch.Tensor) -> torch.Tensor:
    return torch.cat([p[:, :2] - p[:, 2:] / 2, p[:, :2] + p[:, 2:] / 2], dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_score_exactly_at_threshold(dtype: torch.dtype) -> None:
    conf = torch.zeros(1, P, 4, dtype=dtype)  # softmax = 1/4 exactly for every class
    loc = torch.zeros(1, P, 4, dtype=dtype)
    assert len(postprocess(loc, conf, PRI64.to(dtype), score_threshold=0.25)[0].scores) == 0
    below = float(np.nextafter(np.float32(0.25), np.float32(0)))
    det = postprocess(loc, conf, PRI64.to(dtype), score_threshold=below, nms_threshold=1.0, top_k=3)[0]
    ref = rn.postprocess(loc[0].double().numpy(), conf[0].double().numpy(), PRI64.numpy(), score_threshold=below,
                         nms_threshold=1.0, top_k=3)
    # every score ties: top-3 per class are priors 0, 1, 2 and the merge keeps class 1 first, then 2, then 3
    assert det.labels.tolist() == ref[2].tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    np.testing.assert_allclose(det.boxes.double().numpy(), ref[0], rtol=0, atol=1e-7)


def test_ties_keep_lower_prior_and_lower_class() -> None:
    boxes = [[0.0, 0.0, 0.5, 0.5]] * 3 + [[0.5, 0.5, 1.0, 1.0]]
    priors = _priors_from_xyxy(boxes)
    conf = torch.tensor([[[0.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 3.0]]])
    det = postprocess(torch.zeros(1, 4, 4), conf, priors.float())[0]
    ref = rn.postprocess(np.zeros((4, 4)), conf[0].double().numpy(), priors.numpy())
    # scores: class 2 / prior 3 (0.91); then class 1 and class 2 tie on the three identical boxes (0.42 each):
    # prior 0 survives NMS in both classes and class 1 comes first; last class 1 / prior 3 (0.045)
    assert det.labels.tolist() == ref[2].tolist() == [2, 1, 2, 1]
    assert det.scores[1] == det.scores[2]
    torch.testing.assert_close(det.boxes.double(), torch.from_numpy(ref[0]), rtol=0, atol=1e-7)


def test_empty_and_limits() -> None:
    conf = torch.full((2, P, 3), -20.0)
    conf[..., 0] = 20.0  # background everywhere: no candidate
    det = postprocess(torch.zeros(2, P, 4), conf, PRI64.float())
    assert [d.boxes.shape for d in det] == [(0, 4), (0, 4)] and det[0].labels.dtype == torch.int64
    conf = torch.randn(1, P, 3)
    det = postprocess(torch.zeros(1, P, 4), conf, PRI64.float(), score_threshold=0.0, max_detections=5)[0]
    assert len(det.scores) == 5 and bool((det.scores[:-1] >= det.scores[1:]).all())
    for name in ("max_detections", "top_k"):  # ints >= 1 or None (the reference's check_limit)
        with pytest.raises(ValueError, match=f"{name} must be an int >= 1 or None"):
            postprocess(torch.zeros(1, P, 4), conf, PRI64.float(), **{name: 0})


@given(st.integers(1, 4), st.integers(1, 40), st.integers(0, 2**31 - 1))
def test_stable_topk_equals_stable_sort(rows: int, k: int, seed: int) -> None:
    x = torch.from_numpy(np.random.default_rng(seed).integers(0, 5, size=(rows, 40)).astype(np.float32))
    values, index = stable_topk(x, k)
    ref_v, ref_i = x.sort(dim=1, descending=True, stable=True)
    assert torch.equal(values, ref_v[:, :k]) and torch.equal(index, ref_i[:, :k])


@settings(max_examples=40)
@given(st.integers(1, 3), st.integers(1, 30), st.integers(0, 2**31 - 1), st.sampled_from([0.3, 0.5, 0.7]))
def test_keep_mask_equals_reference_nms(groups: int, k: int, seed: int, t: float) -> None:
    rng = np.random.default_rng(seed)
    lo = rng.uniform(0, 0.6, size=(groups, k, 2))
    boxes = np.concatenate([lo, lo + rng.uniform(0.05, 0.4, size=(groups, k, 2))], axis=-1)
    counts = rng.integers(0, k + 1, size=groups)
    for block in (4, 64):  # several blocks and one block
        keep = nms_keep_torch(torch.from_numpy(boxes)[None], torch.from_numpy(counts)[None], t, block=block)[0]
        for g in range(groups):
            n = counts[g]
            expected = np.zeros(k, dtype=bool)
            # boxes are already in score order: equal scores make the reference keep the index order
            expected[rn.nms(boxes[g, :n], np.zeros(n), t)] = True
            assert keep[g].tolist() == expected.tolist()


def test_backend_names_and_argument_errors() -> None:
    loc, conf = torch.zeros(1, P, 4), torch.randn(1, P, 3)
    with pytest.raises(ValueError, match="backend"):
        postprocess(loc, conf, PRI64.float(), backend="cuda")
    with pytest.raises(ValueError, match="conf must have shape"):
        postprocess(loc, conf[..., :1], PRI64.float())
    with pytest.raises(ValueError, match="priors"):
        postprocess(loc, conf, PRI64[:-1].float())
    with pytest.raises(ValueError, match="top_k"):
        postprocess(loc, conf, PRI64.float(), top_k=0)


def test_auto_backend_runs_the_kernels_for_float32_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # numba is a required dependency: "auto" must reach the kernels on CPU float32 and the torch mask in float64
    import ssd_torch.nms as sn

    ran = record_calls(monkeypatch, sn, "_nms_keep_numba", "nms_keep_torch")
    g = torch.Generator().manual_seed(1)
    loc, conf = torch.randn(1, P, 4, generator=g) * 0.5, torch.randn(1, P, 3, generator=g)
    postprocess(loc, conf, PRI64.float(), backend="auto")
    assert ran == ["_nms_keep_numba"]
    postprocess(loc.double(), conf.double(), PRI64, backend="auto")
    assert ran == ["_nms_keep_numba", "nms_keep_torch"]


@given(st.integers(0, 2**31 - 1), st.sampled_from([0.0, 6.0]), st.sampled_from([400, 3]), st.booleans())
def test_candidate_strategies_agree(seed: int, boost: float, top_k: int, quantise: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    conf = torch.randn(2, P, 4, generator=g)
    if quantise:  # many exact score ties
        conf = conf.round()
    conf[..., 0] += boost
    loc = torch.randn(2, P, 4, generator=g) * 0.3
    dense = select_candidates(loc, conf, PRI64.float(), top_k=top_k, strategy="dense")
    compact = select_candidates(loc, conf, PRI64.float(), top_k=top_k, strategy="compact")
    assert torch.equal(dense.counts, compact.counts) and dense.scores.shape == compact.scores.shape
    valid = torch.arange(dense.scores.shape[-1])[None, None, :] < dense.counts[..., None]
    assert torch.equal(dense.scores[valid], compact.scores[valid])
    assert torch.equal(dense.keys[valid], compact.keys[valid]) and dense.keys.dtype == torch.float64
    assert torch.equal(dense.scores[valid], torch.exp(dense.keys[valid]).float())
    assert torch.equal(dense.boxes[valid], compact.boxes[valid])


# ---------------------------------------------------------------------------------------------- ranking key
def test_class_log_scores_by_hand() -> None:
    x = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 40.0, 0.0]], dtype=torch.float64)
    e1, e2 = np.exp(-1.0), np.exp(-2.0)
    want = np.array([np.array([-2.0, -1.0, 0.0]) - np.log1p(e2 + e1),
                     np.array([0.0, 0.0, -1.0]) - np.log1p(1 + e1),  # tied max: the first is j*
                     [-np.log(3)] * 3,
                     [-40 - np.log1p(2 * np.exp(-40)), -np.log1p(2 * np.exp(-40)), -40 - np.log1p(2 * np.exp(-40))]])
    np.testing.assert_allclose(class_log_scores(x).numpy(), want, rtol=1e-15, atol=0)
    np.testing.assert_allclose(class_log_scores(x).numpy(), rn.log_scores(x.numpy()), rtol=1e-15, atol=0)
    winner32 = class_log_scores(x.float())[3, 1]
    assert torch.softmax(x.float(), -1)[3, 1] == 1.0 and float(winner32) == pytest.approx(-2 * np.exp(-40), rel=1e-6)


@settings(max_examples=60)
@given(st.integers(2, 81), st.sampled_from([0.5, 3.0, 20.0, 50.0, 200.0]), st.integers(0, 2**31 - 1))
def test_float32_keys_stay_within_the_contract_bound(c: int, scale: float, seed: int) -> None:
    x = torch.from_numpy(np.random.default_rng(seed).normal(scale=scale, size=(500, c))).float()
    got, want = class_log_scores(x).double().numpy(), rn.log_scores(x.double().numpy())
    bound = rn.FLOAT32_LOGP_RTOL * np.abs(want) + rn.FLOAT32_LOGP_ATOL
    assert np.all(np.abs(got - want) <= bound), float(np.max(np.abs(got - want) / bound))


@given(st.floats(0.0, 1.0), st.integers(-3, 3))
def test_key_floor_decides_as_the_real_log(threshold: float, ulps: int) -> None:
    floor = rn.score_floor(threshold)
    low = key_floor(threshold, torch.float32)
    if not np.isfinite(floor):
        assert low == -np.inf
        return
    x = np.float32(floor)
    for _ in range(abs(ulps)):
        x = np.nextafter(x, np.float32(np.sign(ulps) * np.inf))
    assert bool(torch.tensor(x) > low) == (float(x) > floor)
    assert key_floor(threshold, torch.float64) == floor


@settings(max_examples=60)
@given(head_outputs_st(), SETTINGS)
def test_float32_equals_reference_up_to_contract_near_ties(head: tuple, kw: dict) -> None:
    """Any float32 input (confident x20 / x50 ones included): the detections are the reference's, in its
    order, but for the float32 near-ties of docs/CONTRACT.md "Ranking key" (few, and capped)."""
    loc, conf = (x.astype(np.float32) for x in head)
    out = postprocess(torch.from_numpy(loc), torch.from_numpy(conf), PRI64.float(), **kw)
    for i, det in enumerate(out):
        expected = rn.float32_ambiguous_detections(loc[i].astype(np.float64), conf[i].astype(np.float64),
                                                   PRI64.numpy(), **kw)
        m = match_detections(expected, tuple(t.double().numpy() for t in det))
        assert m.disagreeing == 0, m
        assert m.exempt <= max(1, EXEMPT_CAP * m.total), m


def test_confident_ties_in_probability_are_ordered_by_the_key() -> None:
    # The defect (issue #21): float32 softmax rounds these winners to 1.0 and the old pipeline kept prior order
    # among them; ranked by the key, priors come in the order of their real confidence, as in the reference.
    boxes = [[0.0, 0.0, 0.5, 0.5], [0.05, 0.0, 0.55, 0.5], [0.5, 0.5, 1.0, 1.0]]
    priors = _priors_from_xyxy(boxes).float()
    conf = torch.tensor([[[0.0, 20.0], [0.0, 25.0], [0.0, 30.0]]])
    assert bool((torch.softmax(conf, -1)[..., 1] == 1.0).all())
    det = postprocess(torch.zeros(1, 3, 4), conf, priors)[0]
    ref = rn.postprocess(np.zeros((3, 4)), conf[0].double().numpy(), priors.double().numpy())
    # priors 0 and 1 overlap (IoU 0.82): the more confident prior 1 survives
    assert ref[2].tolist() == det.labels.tolist() == [1, 1]
    np.testing.assert_allclose(det.boxes.double().numpy(), ref[0], atol=1e-7)
    np.testing.assert_allclose(det.boxes.numpy(), [boxes[2], boxes[1]], atol=1e-7)


def test_peer_settings_on_the_torch_layer() -> None:
    g = torch.Generator().manual_seed(3)
    loc, conf = torch.randn(1, P, 4, generator=g, dtype=torch.float64) * 2, torch.randn(1, P, 3, generator=g,
                                                                                       dtype=torch.float64)
    out = postprocess(loc, conf, PRI64, score_threshold=0.0, top_k=None, max_detections=None, clip_boxes=False)[0]
    ref = rn.postprocess(loc[0].numpy(), conf[0].numpy(), PRI64.numpy(), score_threshold=0.0, top_k=None,
                         max_detections=None, clip_boxes=False)
    assert len(ref[2]) > 9 and (ref[0].min() < 0 or ref[0].max() > 1)
    _assert_same(out, ref, atol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 5.0, 20.0, 50.0])
@pytest.mark.parametrize("threshold", [0.01, 0.3, 0.5, 0.9, 0.999])
def test_the_float32_prefilter_never_drops_a_candidate(scale: float, threshold: float) -> None:
    """ranking_keys skips the float64 key of priors whose float32 keys all stay below the floor: the candidates
    (keys above the floor) and their keys are exactly those of the float64 pass over everything."""
    from ssd_torch.nms import class_log_scores, key_floor, ranking_keys

    gen = torch.Generator().manual_seed(int(scale * 100 + threshold * 1000))
    conf = torch.randn(2, 3000, 7, generator=gen) * scale
    floor = key_floor(threshold, torch.float64)
    full = class_log_scores(conf.double())[..., 1:]  # the object classes: background is never a candidate
    got = ranking_keys(conf, floor)[..., 1:]
    assert torch.equal(got > floor, full > floor)
    assert torch.equal(got[full > floor], full[full > floor])
    if threshold >= 0.5 and scale <= 5.0:
        assert bool((got == float("-inf")).any())  # the prefilter did skip work (the test can fail)
