"""DDP on CPU (gloo, 2 processes, each accumulating 2 micro-batches: the no_sync path) gives the weights of one
process with the same global batch of 4; a stop signal that reaches ONE rank stops both at the same step."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssd_torch.checkpoint import read_checkpoint

from ssd_torch.training.checkpoint import CheckpointManager
from ssd_torch.training.interrupt import StopFlag, stop_on_signals
from train_fixtures import ToyDetection, components, make_trainer, tiny_config

STEPS = 2
# Small steps: a large first step makes the second one chaotic (hard-negative ranks and ReLU patterns flip on
# float-rounding differences), which would test the loss surface instead of the gradient reduction.
LR = 1e-4


class _SignalAt:
    """A loss function that sends this process a real SIGTERM during its ``call``-th call (None: never)."""

    def __init__(self, loss_fn, call):
        self.loss_fn, self.call, self.calls = loss_fn, call, 0

    def __call__(self, *args):
        self.calls += 1
        if self.calls == self.call:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.loss_fn(*args)


def _stop_on_one_rank(rank: int, world_size: int, out_dir: str) -> None:
    """4 planned steps; rank 1 alone gets SIGTERM during step 2 (its 3rd micro-batch): both must stop after it."""
    cfg = tiny_config(batch_norm=False)
    loss_fn = _SignalAt(components(cfg)[3], 3 if rank == 1 else None)
    stop = StopFlag()
    t = make_trainer(cfg, ToyDetection(8), batch=1, accumulation=2, total_steps=4, lr=LR, world_size=world_size,
                     rank=rank, loss_fn=loss_fn, stop=stop,
                     checkpoints=CheckpointManager(os.path.join(out_dir, "checkpoints")) if rank == 0 else None)
    with stop_on_signals(stop, announce=False):
        summary = t.fit()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"step": summary["step"], "stopped_by": summary["stopped_by"], "signum": stop.signum}, f)


def _worker(rank: int, world_size: int, store: str, out: str, batch: int, accumulation: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        cfg = tiny_config(batch_norm=False)  # the SSD300 topology, narrow: no batch statistics
        t = make_trainer(cfg, ToyDetection(8), batch=batch, accumulation=accumulation, total_steps=STEPS, lr=LR,
                         world_size=world_size, rank=rank)
        t.fit()
        if rank == 0:
            torch.save(t.model.module.state_dict(), out)
        _stop_on_one_rank(rank, world_size, os.path.dirname(out))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(tmp_path):
    ctx = mp.get_context("spawn")
    store, out = str(tmp_path / "store"), str(tmp_path / "ddp.pt")
    procs = [ctx.Process(target=_worker, args=(r, 2, store, out, 1, 2)) for r in range(2)]
    for p in procs:
        p.start()
    # the single-process twin runs meanwhile: global batch 4 = 1 image x 2 micro-batches x 2 processes
    cfg = tiny_config(batch_norm=False)  # the SSD300 topology, narrow: no batch statistics
    single = make_trainer(cfg, ToyDetection(8), batch=4, total_steps=STEPS, lr=LR)
    single.fit()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0, f"DDP worker exited with {p.exitcode}"
    ddp = torch.load(out)
    ref = single.model.state_dict()
    init = make_trainer(cfg, ToyDetection(8), batch=4, total_steps=STEPS).model.state_dict()
    moved, worst = 0.0, 0.0
    for k in ref:
        torch.testing.assert_close(ddp[k], ref[k], rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")
        moved = max(moved, float((ref[k] - init[k]).abs().max()))
        worst = max(worst, float((ref[k] - ddp[k]).abs().max()))
    assert moved > 100 * max(worst, 1e-7)  # real steps were taken, far larger than the mismatch
    # the stop: only rank 1 saw the signal, both ranks agreed to stop after step 2; rank 0 wrote the checkpoint
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["signum"] for r in ranks] == [0, signal.SIGTERM]
    assert all(r["stopped_by"] == signal.SIGTERM and r["step"] == 2 for r in ranks), ranks
    assert read_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 2
