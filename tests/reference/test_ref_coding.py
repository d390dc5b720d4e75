"""reference.coding: a hand-worked encoding, the decode clamp, decode(encode(g)) == g."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ref_strategies import xyxy_boxes
from reference.boxes import cxcywh_to_xyxy
from reference.coding import DECODE_CLAMP, decode, encode
from reference.priors import SSD300, default_boxes

PRIOR = np.array([[0.5, 0.5, 0.2, 0.4]])  # cxcywh
SSD_PRIORS = default_boxes(SSD300)


def test_encode_by_hand() -> None:
    gt = cxcywh_to_xyxy([[0.52, 0.46, 0.4, 0.2]])
    # (0.02 / (0.1·0.2), -0.04 / (0.1·0.4), log(0.4/0.2) / 0.2, log(0.2/0.4) / 0.2)
    expected = [[1.0, -1.0, math.log(2) / 0.2, -math.log(2) / 0.2]]
    np.testing.assert_allclose(encode(gt, PRIOR), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(decode(expected, PRIOR), gt, rtol=0, atol=1e-15)


def test_decode_zero_offsets_gives_the_prior() -> None:
    d = default_boxes(SSD300)
    np.testing.assert_allclose(decode(np.zeros_like(d), d), cxcywh_to_xyxy(d), rtol=0, atol=1e-15)


def test_decode_clamps_exponent() -> None:
    assert DECODE_CLAMP == pytest.approx(math.log(62.5))
    huge = decode([[0.0, 0.0, 1e4, 1e4]], PRIOR)  # exp(2000) would overflow
    np.testing.assert_allclose(huge, cxcywh_to_xyxy([[0.5, 0.5, 0.2 * 62.5, 0.4 * 62.5]]))
    # an argument exactly at the clamp is unchanged; just below it is not clamped
    at = decode([[0.0, 0.0, DECODE_CLAMP / 0.2, 0.0]], PRIOR)
    assert at[0, 2] - at[0, 0] == pytest.approx(0.2 * 62.5, rel=1e-12)
    below = decode([[0.0, 0.0, (DECODE_CLAMP - 1e-3) / 0.2, 0.0]], PRIOR)
    assert below[0, 2] - below[0, 0] == pytest.approx(0.2 * 62.5 * math.exp(-1e-3), rel=1e-12)


def test_variances_are_used() -> None:
    gt = cxcywh_to_xyxy([[0.52, 0.46, 0.4, 0.2]])
    np.testing.assert_allclose(encode(gt, PRIOR, (0.2, 0.1)), [[0.5, -0.5, math.log(2) / 0.1, -math.log(2) / 0.1]])


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        encode(np.zeros((2, 4)), PRIOR)
    with pytest.raises(ValueError, match="priors"):
        decode(np.zeros((1, 4)), np.zeros((1, 3)))


@given(xyxy_boxes(max_n=8), st.lists(st.integers(0, 8731), min_size=8, max_size=8),
       st.sampled_from([(0.1, 0.2), (0.2, 0.1), (1.0, 1.0)]))
def test_decode_encode_round_trip(g: np.ndarray, idx: list[int], variances: tuple[float, float]) -> None:
    priors = SSD_PRIORS[idx[:len(g)]]
    np.testing.assert_allclose(decode(encode(g, priors, variances), priors, variances), g, rtol=0, atol=1e-12)
