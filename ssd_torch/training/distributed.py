"""DDP plumbing: joining the torchrun process group, small all-reduces, and agreeing on a decision.

``torchrun --nproc_per_node=N -m ssd_torch.cli.train ...`` starts N processes with ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK`` set; ``setup_distributed`` joins them (nccl on CUDA, gloo on the CPU). Every decision that
changes what the ranks do next (stop on a signal, refuse to start) goes through an all-reduce, so that no rank
waits forever in a collective that the others skipped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from ssd_torch.errors import ConfigError, UserError

__all__ = ["DistInfo", "setup_distributed", "all_reduce", "agree_max", "on_rank0", "say"]

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """This process's place: ``rank`` of ``world_size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def setup_distributed(device: str) -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE > 1`` (env:// init; nccl for CUDA, gloo for CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)


def all_reduce(t: Tensor, device: torch.device, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> Tensor:
    """Reduce a small CPU tensor over ranks (moved to the device for nccl); returns a CPU tensor."""
    work = t.to(device) if dist.get_backend() == "nccl" else t.clone()
    dist.all_reduce(work, op=op)
    return work.cpu()


def agree_max(value: int, device: torch.device) -> int:
    """The largest ``value`` over all ranks (the value itself outside DDP)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    return int(all_reduce(torch.tensor([value], dtype=torch.int64), device, dist.ReduceOp.MAX)[0])


def on_rank0(info: DistInfo, device: torch.device, fn: Callable[[], T]) -> T | None:
    """``fn()`` on rank 0 only; a :class:`UserError` it raises is raised on every rank (the others say that
    rank 0 refused), so that no rank goes on alone. Returns ``fn``'s result on rank 0, None elsewhere."""
    result, error = None, None
    if info.rank == 0:
        try:
            result = fn()
        except UserError as e:
            error = e
    if agree_max(int(error is not None), device):
        raise error or ConfigError("rank 0 refused to start this run (its message says why)")
    return result


def say(info: DistInfo, text: str) -> None:
    """Print ``text`` on rank 0 (through tqdm, so that a progress bar stays intact)."""
    if info.rank == 0:
        from tqdm.auto import tqdm
        tqdm.write(text)
