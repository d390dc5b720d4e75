"""The loop: accumulation equivalence, exact resume, the NaN guard."""
from __future__ import annotations

import math

import pytest
import torch

from ssd_torch.errors import ConfigError
from ssd_torch.checkpoint import read_checkpoint
from ssd_torch.training.checkpoint import CheckpointManager
from ssd_torch.data.collate import collate_detection
from ssd_torch.training.step import NonFiniteGuard, StepOutcome, TrainingDiverged, train_step

from ssd_torch.training.trainer import SideJobs
from train_fixtures import NaNLossAt, ToyDetection, components, make_trainer, tiny_config


def _grads_after(model, micro, match_fn, loss_fn):
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    out = train_step(model=model, micro_batches=micro, match_fn=match_fn, loss_fn=loss_fn, optimizer=opt,
                     scaler=None, device=torch.device("cpu"))
    return out, [p.grad.clone() for p in model.parameters()]


@pytest.mark.slow
def test_accumulation_8x4_equals_batch_32():
    data = ToyDetection(32)
    samples = [data[i] for i in range(32)]
    # uneven positives per micro-batch: without the total-N rule the two would differ
    model, _, match_fn, loss_fn = components(tiny_config(batch_norm=False))
    out32, g32 = _grads_after(model, [collate_detection(samples)], match_fn, loss_fn)
    micro = [collate_detection(samples[i:i + 8]) for i in range(0, 32, 8)]
    out8, g8 = _grads_after(model, micro, match_fn, loss_fn)
    assert out8.num_pos == out32.num_pos > 0
    assert out8.loss == pytest.approx(out32.loss, rel=1e-5)
    scale = max(float(g.abs().max()) for g in g32)
    for a, b in zip(g8, g32):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)
    # The data must expose the trap: micro-batches with different positive counts, so that averaging
    # per-micro-batch losses (each divided by its own N) would weight images differently.
    n_each = [int((match_fn(b.boxes, b.labels, b.counts)[0] > 0).sum()) for b in micro]
    assert len(set(n_each)) > 1, n_each


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.slow
def test_resume_is_bit_identical(tmp_path):
    """N steps straight == N/2 steps, checkpoint, fresh objects, resume, N/2 steps (BatchNorm included; the
    6 steps cross an epoch boundary at step 4 and the checkpoint sits mid-epoch at step 3)."""
    data = ToyDetection(9)
    cfg = tiny_config(batch_norm=True)
    straight = make_trainer(cfg, data, batch=2, total_steps=6)
    straight.fit()
    first = make_trainer(cfg, data, batch=2, total_steps=6, stop_at=3,
                         checkpoints=CheckpointManager(tmp_path, keep_last=1))
    first.fit()
    ckpt = read_checkpoint(tmp_path / "last.pt")
    assert (ckpt["step"], ckpt["epoch"], ckpt["extra"]["step_in_epoch"]) == (3, 0, 3)
    torch.rand(5)  # a disturbed global RNG must not matter
    resumed = make_trainer(cfg, data, batch=2, total_steps=6, seed=0)
    resumed.load_state(ckpt)
    resumed.fit()
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.step == 6 and resumed.epoch == 1
    # and the weights did move (the comparison is not between two untouched initialisations)
    init = _weights(make_trainer(cfg, data, batch=2, total_steps=6))
    assert any(not torch.equal(init[k], a[k]) for k in a)


def test_resume_refuses_another_effective_batch(tmp_path):
    data = ToyDetection(4)
    cfg = tiny_config()
    t = make_trainer(cfg, data, batch=2, total_steps=1, checkpoints=CheckpointManager(tmp_path))
    t.fit()
    other = make_trainer(cfg, data, batch=4, total_steps=1)
    with pytest.raises(ConfigError, match="images per step"):
        other.load_state(read_checkpoint(tmp_path / "last.pt"))


def test_nan_step_is_skipped_and_counted():
    data = ToyDetection(6)
    cfg = tiny_config()
    _, _, _, loss_fn = components(cfg)
    t = make_trainer(cfg, data, batch=2, total_steps=3, stop_at=2, loss_fn=NaNLossAt(loss_fn, {2}))
    t.fit()  # step 1 fine, step 2 NaN
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    lr_before = t.optimizer.param_groups[0]["lr"]
    momentum_before = {id(p): t.optimizer.state[p]["momentum_buffer"].clone() for p in t.model.parameters()}
    assert t.guard.total == 1 and t.step == 2
    # replay the NaN step directly: weights and momentum untouched, grads zeroed
    t2 = make_trainer(cfg, data, batch=2, total_steps=3, loss_fn=NaNLossAt(loss_fn, {1}))
    t2.model.load_state_dict(before)
    t2.optimizer.load_state_dict(t.optimizer.state_dict())
    micro = [collate_detection([data[0], data[1]])]
    out = train_step(model=t2.model, micro_batches=micro, match_fn=t2.match_fn, loss_fn=t2.loss_fn,
                     optimizer=t2.optimizer, scaler=None, device=torch.device("cpu"))
    assert not out.stepped and not out.finite_loss and math.isnan(out.loss)
    for k, v in t2.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in t2.model.parameters())
    assert all(torch.equal(t2.optimizer.state[p]["momentum_buffer"], momentum_before[id(q)])
               for p, q in zip(t2.model.parameters(), t.model.parameters()))
    assert lr_before > 0


def test_too_many_nan_steps_stop_with_advice():
    data = ToyDetection(8)
    cfg = tiny_config()
    _, _, _, loss_fn = components(cfg)
    guard = NonFiniteGuard(max_skips=2, window=10, amp="fp16")
    t = make_trainer(cfg, data, batch=1, total_steps=8, loss_fn=NaNLossAt(loss_fn, {2, 3, 5}), guard=guard)
    with pytest.raises(TrainingDiverged) as err:
        t.fit()
    text = str(err.value)
    assert "learning rate" in text and "warmup" in text and "fp16" in text and "step 5" in text
    assert guard.total == 3


def test_guard_window_forgets_old_skips():
    bad = StepOutcome(loss=math.nan, loc=math.nan, conf=0.0, num_pos=1, images=1, finite_loss=False,
                      finite_grad=False, stepped=False, grad_norm=math.nan)
    g = NonFiniteGuard(max_skips=1, window=5)
    g.record(1, bad, False)
    g.record(6, bad, False)  # step 1 is out of the window (6 - 5)
    with pytest.raises(TrainingDiverged):
        g.record(7, bad, False)
    overflow = StepOutcome(loss=1.0, loc=0.5, conf=0.5, num_pos=1, images=1, finite_loss=True,
                           finite_grad=False, stepped=False, grad_norm=math.inf)
    g2 = NonFiniteGuard(max_skips=0, window=5)
    for s in range(3):
        g2.record(s, overflow, scaler_active=True)  # fp16 scale calibration: counted apart, never stops
    assert g2.overflows == 3 and g2.total == 0


@pytest.mark.slow
def test_periodic_evaluation_leaves_training_unchanged():
    """Evaluating during training (the demo now does, every 5 epochs) gives the weights of a run without it: the
    evaluation runs the model in eval mode (BatchNorm statistics untouched) and may use the global RNGs, which
    the training data order never reads."""
    import numpy as np
    data, cfg = ToyDetection(6), tiny_config(batch_norm=True)

    def eval_fn(model):
        assert not model.training
        with torch.no_grad():
            model(torch.rand(2, 3, 300, 300))
        return {"mAP": float(np.random.rand())}

    plain = make_trainer(cfg, data, batch=2, total_steps=4)
    plain.fit()
    evaluated = make_trainer(cfg, data, batch=2, total_steps=4, eval_fn=eval_fn, jobs=SideJobs(eval_every=1))
    evaluated.fit()
    assert evaluated.last_metrics["step"] == 4 and evaluated.model.training
    a, b = _weights(plain), _weights(evaluated)
    assert all(torch.equal(a[k], b[k]) for k in a)
