"""Learning-rate rules: linear scaling to the effective batch, rescaled iteration counts, warmup + multistep/cosine.

Every count here is in OPTIMIZER steps. The paper's schedule (SSD paper §3: LR 1e-3 for 80k iterations,
then 1e-4 and 1e-5 until 120k, batch 32) is expressed at a reference batch of 32 images; a run whose
effective batch (batch x accumulation x world size) is E takes ``round(n * 32 / E)`` steps for each count n,
at ``lr = base_lr * E / 32`` (the linear scaling rule, Goyal et al. 2017). Gradient accumulation therefore
changes memory use only: the same E gives the same schedule whether it comes from batch, accumulation or GPUs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ssd_torch.training.train_config import SCHEDULE_KINDS

__all__ = ["SCHEDULE_KINDS", "effective_batch", "scaled_lr", "rescale_steps", "LRFactor", "build_lr_factor",
           "build_scheduler", "restore_position", "ScheduleLengths", "schedule_lengths"]

#: The LR shapes ``LRFactor`` implements (``ScheduleConfig.kind``).


def effective_batch(batch_size: int, accumulation: int, world_size: int) -> int:
    """Images per optimizer step: per-process batch x accumulation steps x processes."""
    for name, v in (("batch_size", batch_size), ("accumulation", accumulation), ("world_size", world_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    return batch_size * accumulation * world_size


def scaled_lr(base_lr: float, effective: int, reference_batch: int = 32) -> float:
    """Linear scaling rule: ``base_lr`` is the LR for ``reference_batch`` images per step."""
    if not base_lr > 0 or effective <= 0 or reference_batch <= 0:
        raise ValueError(f"need base_lr > 0 and positive batches, got {base_lr}, {effective}, {reference_batch}")
    return base_lr * effective / reference_batch


def rescale_steps(steps_at_reference: int, effective: int, reference_batch: int = 32) -> int:
    """An iteration count at ``reference_batch`` images per step, for ``effective`` images per step
    (same number of images seen); at least 1 step unless the input is 0."""
    if steps_at_reference < 0:
        raise ValueError(f"steps must be >= 0, got {steps_at_reference}")
    if steps_at_reference == 0:
        return 0
    return max(1, round(steps_at_reference * reference_batch / effective))


@dataclass(frozen=True)
class ScheduleLengths:
    """Resolved lengths in optimizer steps: total, milestones (multistep) and warmup."""

    total_steps: int
    milestones: tuple[int, ...]
    warmup_steps: int


def schedule_lengths(*, iterations: int, milestones: tuple[int, ...], warmup_iterations: int, effective: int,
                     reference_batch: int = 32, epochs: int | None = None,
                     steps_per_epoch: int | None = None) -> ScheduleLengths:
    """Rescale the reference-batch schedule to ``effective`` images per step.

    With ``epochs`` the total is ``epochs * steps_per_epoch`` and each milestone keeps its fraction of
    ``iterations`` (80k/120k -> 2/3 of the run); the warmup is rescaled in images either way.
    """
    warmup = rescale_steps(warmup_iterations, effective, reference_batch)
    if epochs is None:
        total = rescale_steps(iterations, effective, reference_batch)
        ms = tuple(rescale_steps(m, effective, reference_batch) for m in milestones)
    else:
        if not steps_per_epoch or steps_per_epoch <= 0:
            raise ValueError(f"epochs={epochs} needs steps_per_epoch > 0, got {steps_per_epoch} (dataset smaller "
                             f"than one effective batch of {effective} images?)")
        total = epochs * steps_per_epoch
        ms = tuple(max(1, round(m / iterations * total)) for m in milestones)
    return ScheduleLengths(total_steps=total, milestones=ms, warmup_steps=min(warmup, total))


@dataclass(frozen=True)
class LRFactor:
    """Multiplier of the peak LR at optimizer step ``step`` (0-based: the factor used BY step ``step``).

    warmup: linear from ``warmup_factor`` at step 0 to 1 at ``warmup_steps``; then
    multistep: ``gamma ** (number of milestones <= step)``, or
    cosine: ``min_ratio + (1 - min_ratio) * (1 + cos(pi * t)) / 2`` with t the post-warmup progress in [0, 1].
    The warmup multiplies the main schedule (both apply during warmup).
    A picklable callable, so ``LambdaLR.state_dict`` stores it and resume restores it exactly.
    """

    kind: str
    total_steps: int
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_steps: int = 0
    warmup_factor: float = 1.0 / 3.0
    min_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        warm = 1.0
        if step < self.warmup_steps:
            alpha = step / self.warmup_steps
            warm = self.warmup_factor * (1.0 - alpha) + alpha
        if self.kind == "multistep":
            return warm * self.gamma ** sum(1 for m in self.milestones if step >= m)
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            t = min(1.0, max(0.0, (step - self.warmup_steps) / span))
            return warm * (self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t)))
        raise ValueError(f"unknown schedule kind {self.kind!r}; use one of {SCHEDULE_KINDS}")


def build_lr_factor(*, kind: str, total_steps: int, milestones: tuple[int, ...] = (), gamma: float = 0.1,
                    warmup_steps: int = 0, warmup_factor: float = 1.0 / 3.0, min_ratio: float = 0.0) -> LRFactor:
    """Validated ``LRFactor``."""
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"unknown schedule kind {kind!r}; use one of {SCHEDULE_KINDS}")
    if total_steps <= 0 or warmup_steps < 0:
        raise ValueError(f"need total_steps > 0 and warmup_steps >= 0, got {total_steps}, {warmup_steps}")
    return LRFactor(kind=kind, total_steps=total_steps, milestones=tuple(milestones), gamma=gamma,
                    warmup_steps=warmup_steps, warmup_factor=warmup_factor, min_ratio=min_ratio)


def build_scheduler(optimizer: torch.optim.Optimizer, factor: LRFactor) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepped once per optimizer step; its ``last_epoch`` is the step count."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)


def restore_position(scheduler: torch.optim.lr_scheduler.LambdaLR, state: dict) -> None:
    """Resume ``scheduler`` at the step count of a saved ``state_dict`` while keeping ITS OWN peak LRs and LR
    factor (built from the current config), and set the optimizer's LRs for that step.

    ``LambdaLR.load_state_dict`` would also restore the saved ``base_lrs`` and overwrite the factor's fields,
    so a resumed run would silently keep the old schedule. The LR is computed exactly as ``LambdaLR.step``
    does (``base_lr * factor(step)``), so an unchanged config resumes bit-identically.
    """
    scheduler.last_epoch = int(state["last_epoch"])
    scheduler._step_count = int(state.get("_step_count", scheduler.last_epoch + 1))
    lrs = [base * fn(scheduler.last_epoch) for fn, base in zip(scheduler.lr_lambdas, scheduler.base_lrs)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs
