"""Data order and augmentation as a pure function of (seed, epoch, index): StepSampler + SeededDataset."""
import random

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from ssd_torch.training.data_order import SeededDataset, StepSampler


def _steps(sampler):
    micro = list(iter(sampler))
    a = sampler.accumulation
    return [sum(micro[i:i + a], []) for i in range(0, len(micro), a)]


@given(n=st.integers(8, 60), b=st.integers(1, 4), a=st.integers(1, 3), w=st.integers(1, 3),
       epoch=st.integers(0, 5))
def test_any_split_gives_the_same_step_contents(n, b, a, w, epoch):
    """Step s holds the same images whether the effective batch is b*a*w or one big batch."""
    whole = StepSampler(n, b * a * w, 1, 1, 0, seed=3)
    whole.set_epoch(epoch)
    ref = _steps(whole)
    parts = []
    for r in range(w):
        s = StepSampler(n, b, a, w, r, seed=3)
        s.set_epoch(epoch)
        parts.append(_steps(s))
    assert whole.steps_per_epoch == n // (b * a * w) == len(ref)
    for k, step in enumerate(ref):
        merged = sum((p[k] for p in parts), [])
        assert merged == step
        assert all(len(p[k]) == b * a for p in parts)
    flat = [i for step in ref for _, i in step]
    assert len(set(flat)) == len(flat)  # no image twice in an epoch


def test_resume_offset_and_epoch_dependence():
    s = StepSampler(40, 4, 2, seed=1)
    s.set_epoch(2)
    full = list(iter(s))
    s.set_epoch(2, start_step=3)
    assert list(iter(s)) == full[6:] and len(s) == len(full) - 6
    s.set_epoch(3)
    assert list(iter(s)) != full
    with pytest.raises(ValueError, match="start_step"):
        s.set_epoch(0, start_step=6)
    with pytest.raises(ValueError, match="rank"):
        StepSampler(10, 2, 1, world_size=2, rank=2)


class _Noisy(torch.utils.data.Dataset):
    def __len__(self):
        return 5

    def __getitem__(self, i):
        return torch.rand(2), random.random(), float(np.random.rand()), i


def test_seeded_dataset_is_pure_and_leaves_caller_rng_alone():
    ds = SeededDataset(_Noisy(), seed=7)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    a = ds[(1, 3)]
    after = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    assert torch.equal(before[0], after[0]) and before[1] == after[1] and np.array_equal(before[2], after[2])
    torch.rand(10)  # disturbing the global stream changes nothing
    b = ds[(1, 3)]
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    c = ds[(2, 3)]
    assert not torch.equal(a[0], c[0])
    assert SeededDataset(_Noisy(), seed=8)[(1, 3)][1] != a[1]
