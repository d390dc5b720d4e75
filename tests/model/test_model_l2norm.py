"""L2Norm (ParseNet / SSD §3.1): init, the normalisation itself, the zero-vector guard, float32 norm under autocast."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ssd_torch.modeling.model import L2Norm


def _oracle(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """float64 ``weight[c] * x / ||x||_2`` over channels (x must be non-zero at every location)."""
    x64 = x.double()
    return x64 / x64.pow(2).sum(1, keepdim=True).sqrt() * weight.double().view(1, -1, 1, 1)


def test_init_is_the_scale_per_channel() -> None:
    layer = L2Norm(16, scale=20.0)
    assert layer.weight.shape == (16,) and torch.equal(layer.weight.detach(), torch.full((16,), 20.0))
    assert torch.equal(L2Norm(3, scale=7.5).weight.detach(), torch.full((3,), 7.5))


@given(st.integers(1, 8), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_output_has_norm_weight_and_direction_of_input(channels: int, side: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, channels, side, side, generator=gen) * 10 ** float(torch.empty(1).uniform_(-3, 3, generator=gen))
    x[x.abs().sum(1, keepdim=True).expand_as(x) == 0] = 1.0  # the oracle needs non-zero vectors
    layer = L2Norm(channels)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(channels, generator=gen) + 0.5)
        y = layer(x)
    torch.testing.assert_close(y.double(), _oracle(x, layer.weight), rtol=1e-5, atol=1e-6)


def test_zero_vector_gives_zero_output_and_finite_gradients() -> None:
    x = torch.zeros(1, 4, 2, 2)
    x[0, :, 0, 0] = torch.tensor([3.0, 0.0, 4.0, 0.0])  # one non-zero location, three all-zero ones (post-ReLU)
    x.requires_grad_(True)
    layer = L2Norm(4, scale=2.0)
    y = layer(x)
    torch.testing.assert_close(y[0, :, 0, 0], torch.tensor([1.2, 0.0, 1.6, 0.0]))
    assert torch.count_nonzero(y[0, :, 1:, :]) == 0 and torch.count_nonzero(y[0, :, 0, 1]) == 0
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(layer.weight.grad).all()


def test_bf16_autocast_keeps_one_rounding_error() -> None:
    """Under bf16 autocast the result is the float32 computation rounded once to bf16: relative error at
    most 2^-8 (bf16 unit roundoff) against a float64 oracle on the same bf16 input."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 512, 6, 6, generator=gen) * 3).bfloat16()
    layer = L2Norm(512)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    want = _oracle(x, layer.weight)
    rel = ((y.double() - want).abs() / want.abs().clamp_min(1e-30)).max()
    assert rel <= 2.0**-8


def test_norm_does_not_overflow_in_float16() -> None:
    """512 channels of 300.0: the sum of squares (4.6e7) overflows float16 (max 65504); computed in float32
    the output is 20 * 300 / sqrt(512 * 300^2) = 20 / sqrt(512) everywhere."""
    x = torch.full((1, 512, 2, 2), 300.0, dtype=torch.float16)
    with torch.no_grad():
        y = L2Norm(512)(x)
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), torch.full((1, 512, 2, 2), 20 / 512**0.5), rtol=1e-3, atol=0)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_memory_format_does_not_change_the_result(fmt: torch.memory_format) -> None:
    x = torch.randn(2, 8, 5, 5, generator=torch.Generator().manual_seed(1))
    layer = L2Norm(8)
    with torch.no_grad():
        torch.testing.assert_close(layer(x.contiguous(memory_format=fmt)), layer(x))
