"""ssd_torch.coding vs reference.coding: encode, decode (with the exponent clamp), round trip, batching."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import reference.coding as rc
import reference.priors as rp
from ssd_torch.coding import decode, encode
from torch_cases import SMALL_SPEC

PRIORS64 = rp.default_boxes(SMALL_SPEC)  # [88, 4]
P = PRIORS64.shape[0]


def _gt_for_priors(seed: int) -> np.ndarray:
    """One valid xyxy box per prior (positive width and height)."""
    rng = np.random.default_rng(seed)
    lo = rng.uniform(0.0, 0.7, size=(P, 2))
    return np.concatenate([lo, lo + rng.uniform(0.02, 0.3, size=(P, 2))], axis=1)


@given(st.integers(0, 2**31 - 1))
def test_encode_matches_reference(seed: int) -> None:
    gt = _gt_for_priors(seed)
    ref = rc.encode(gt, PRIORS64)
    ours64 = encode(torch.from_numpy(gt), torch.from_numpy(PRIORS64))
    np.testing.assert_allclose(ours64.numpy(), ref, rtol=1e-12, atol=1e-12)
    ours32 = encode(torch.from_numpy(gt).float(), torch.from_numpy(PRIORS64).float())
    np.testing.assert_allclose(ours32.numpy(), ref, rtol=1e-4, atol=1e-4)


@given(st.integers(0, 2**31 - 1), st.floats(0.5, 8.0))
def test_decode_matches_reference_including_clamp(seed: int, scale: float) -> None:
    loc = np.random.default_rng(seed).normal(scale=scale, size=(P, 4))  # large scales hit the clamp
    ref = rc.decode(loc, PRIORS64)
    ours = decode(torch.from_numpy(loc), torch.from_numpy(PRIORS64))
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12, atol=1e-12)
    ours32 = decode(torch.from_numpy(loc).float(), torch.from_numpy(PRIORS64).float())
    np.testing.assert_allclose(ours32.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_round_trip_and_batched_leading_dims() -> None:
    gt = torch.from_numpy(np.stack([_gt_for_priors(1), _gt_for_priors(2)]))  # [2, P, 4]
    pri = torch.from_numpy(PRIORS64)
    t = encode(gt, pri)
    assert t.shape == (2, P, 4)
    torch.testing.assert_close(decode(t, pri), gt, rtol=0, atol=1e-12)
    torch.testing.assert_close(t[1], encode(gt[1], pri), rtol=0, atol=0)


def test_clamp_value_and_effect() -> None:
    pri = torch.tensor([[0.5, 0.5, 0.1, 0.1]], dtype=torch.float64)
    out = decode(torch.tensor([[0.0, 0.0, 1e4, 1e4]], dtype=torch.float64), pri)  # would overflow exp
    width = 0.1 * 1000.0 / 16.0
    torch.testing.assert_close(out, torch.tensor([[0.5 - width / 2, 0.5 - width / 2, 0.5 + width / 2,
                                                   0.5 + width / 2]], dtype=torch.float64))


def test_variances_and_shapes_are_checked() -> None:
    pri = torch.from_numpy(PRIORS64)
    with pytest.raises(ValueError, match="variances"):
        encode(pri, pri, variances=(0.1,))
    with pytest.raises(ValueError, match="loc must have shape"):
        decode(torch.zeros(P + 1, 4, dtype=torch.float64), pri)
    with pytest.raises(ValueError, match="priors"):
        decode(torch.zeros(P, 4), torch.zeros(P, 3))
