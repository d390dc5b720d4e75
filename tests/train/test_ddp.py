"""DDP on CPU (gloo, 2 processes, each accumulating 2 micro-batches: the no_sync path) gives the weights of one
process with the same global batch of 4."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from train_fixtures import ToyDetection, make_trainer, tiny_config

STEPS = 2
# Small steps: a large first step makes the second one chaotic (hard-negative ranks and ReLU patterns flip on
# float-rounding differences), which would test the loss surface instead of the gradient reduction.
LR = 1e-4


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
        torch.testing.assert_close(ddp[k], ref[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")
        moved = max(moved, float((ref[k] - init[k]).abs().max()))
        worst = max(worst, float((ref[k] - ddp[k]).abs().max()))
    assert moved > 100 * max(worst, 1e-7)  # real steps were taken, far larger than the mismatch
