"""LR rules of ssd_torch.training.schedule: linear scaling, rescaled milestones, warmup, accumulation independence."""

import pytest
import torch
from hypothesis import given, strategies as st

from ssd_torch.training.schedule import (LRFactor, build_lr_factor, build_scheduler, effective_batch, rescale_steps,
                                scaled_lr, schedule_lengths)


def test_linear_scaling_hand_computed():
    assert scaled_lr(1e-3, 32, 32) == pytest.approx(1e-3)
    assert scaled_lr(1e-3, 8, 32) == pytest.approx(2.5e-4)
    assert scaled_lr(1e-3, 256, 32) == pytest.approx(8e-3)
    assert effective_batch(8, 4, 2) == 64


def test_effective_batch_rejects_bad_values():
    with pytest.raises(ValueError, match="accumulation"):
        effective_batch(8, 0, 1)
    with pytest.raises(ValueError, match="batch_size"):
        effective_batch(True, 1, 1)


def test_paper_milestones_rescaled():
    # 80k/100k/120k at batch 32; at an effective batch of 64 -> half the steps, at 8 -> 4x.
    L = schedule_lengths(iterations=120_000, milestones=(80_000, 100_000), warmup_iterations=500, effective=64)
    assert (L.total_steps, L.milestones, L.warmup_steps) == (60_000, (40_000, 50_000), 250)
    L = schedule_lengths(iterations=120_000, milestones=(80_000, 100_000), warmup_iterations=500, effective=8)
    assert (L.total_steps, L.milestones, L.warmup_steps) == (480_000, (320_000, 400_000), 2000)


def test_epoch_mode_keeps_milestone_fractions():
    L = schedule_lengths(iterations=120, milestones=(80, 100), warmup_iterations=0, effective=32,
                         epochs=3, steps_per_epoch=40)
    assert (L.total_steps, L.milestones) == (120, (80, 100))
    with pytest.raises(ValueError, match="steps_per_epoch"):
        schedule_lengths(iterations=120, milestones=(), warmup_iterations=0, effective=32, epochs=3,
                         steps_per_epoch=0)


@given(batch=st.sampled_from([1, 2, 4, 8, 16, 32]), accum=st.sampled_from([1, 2, 4, 8]),
       world=st.sampled_from([1, 2, 4]))
def test_accumulation_changes_nothing_but_memory(batch, accum, world):
    """Any split of the same effective batch gives the same LR and step counts."""
    eff = effective_batch(batch, accum, world)
    ref = effective_batch(eff, 1, 1)
    a = schedule_lengths(iterations=120_000, milestones=(80_000, 100_000), warmup_iterations=500, effective=eff)
    b = schedule_lengths(iterations=120_000, milestones=(80_000, 100_000), warmup_iterations=500, effective=ref)
    assert a == b
    assert scaled_lr(1e-3, eff) == scaled_lr(1e-3, ref)


def test_rescale_rounding_and_floor():
    assert rescale_steps(0, 64) == 0
    assert rescale_steps(1, 64) == 1  # never rounds a non-zero count down to 0
    assert rescale_steps(3, 64) == 2  # round(1.5) -> 2 (banker's rounding is fine: documented round)
    with pytest.raises(ValueError):
        rescale_steps(-1, 32)


def test_warmup_linear_then_multistep():
    f = build_lr_factor(kind="multistep", total_steps=100, milestones=(50, 80), gamma=0.1, warmup_steps=10,
                        warmup_factor=0.5)
    assert f(0) == pytest.approx(0.5)
    assert f(5) == pytest.approx(0.75)
    assert f(10) == pytest.approx(1.0)
    assert f(49) == pytest.approx(1.0)
    assert f(50) == pytest.approx(0.1)   # exactly at a milestone the decay applies
    assert f(79) == pytest.approx(0.1)
    assert f(80) == pytest.approx(0.01)


def test_cosine_end_points():
    f = build_lr_factor(kind="cosine", total_steps=110, warmup_steps=10, warmup_factor=0.1, min_ratio=0.01)
    assert f(0) == pytest.approx(0.1)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.01 + 0.99 * 0.5)
    assert f(110) == pytest.approx(0.01)
    assert all(f(s) >= f(s + 1) - 1e-12 for s in range(10, 120))


def test_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        build_lr_factor(kind="step", total_steps=10)


def test_lambda_scheduler_counts_optimizer_steps_and_resumes():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.2)
    f = build_lr_factor(kind="multistep", total_steps=10, milestones=(3,), warmup_steps=2, warmup_factor=0.5)
    sched = build_scheduler(opt, f)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.1, 0.15, 0.2, 0.02, 0.02])
    state = sched.state_dict()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    sched2 = build_scheduler(opt2, f)
    sched2.load_state_dict(state)
    assert sched2.last_epoch == 5 and isinstance(sched2.lr_lambdas[0], LRFactor)
