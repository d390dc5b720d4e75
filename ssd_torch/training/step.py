"""One optimizer step (``train_step``), its outcome, the numerics it runs in, and the NaN/inf guard.

Loss normalisation of one optimizer step (docs/CONTRACT.md "Loss", SSD paper eq. 1: the sum is divided by N, the
number of matched default boxes OF THE BATCH): with micro-batches i (accumulation) on ranks r (DDP),
``L = sum_{r,i} (L_loc + L_conf)_{r,i} / max(N_total, 1)``, ``N_total = sum_{r,i} N_{r,i}``. Averaging
per-micro-batch means instead weights an image by 1/N of its micro-batch — the "bs 32 x accumulation 8 ->
0.40 mAP" trap. So the targets of all micro-batches are matched first (cheap), N_total is summed (and
all-reduced), then each micro-batch backpropagates ``sum_i / N_total * world_size`` (DDP averages gradients
over ranks, the factor undoes that).
"""
from __future__ import annotations

import contextlib
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from ssd_torch.errors import UserError
from ssd_torch.training.distributed import all_reduce
from ssd_torch.training.train_config import AMP_MODES

__all__ = ["AMP_MODES", "Numerics", "amp_settings", "StepOutcome", "train_step", "NonFiniteGuard",
           "TrainingDiverged"]

#: ``runtime.amp``: autocast dtype of the forward pass (None: fp32); fp16 also gets a GradScaler.
_AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Numerics:
    """How a step computes: autocast dtype (None: fp32), channels-last images, global grad-norm clip (None: off)."""

    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    grad_clip: float | None = None


def amp_settings(amp: str, device: torch.device) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """(autocast dtype, GradScaler) for an ``AMP_MODES`` name: fp16 needs a scaler, bf16 and fp32 do not."""
    if amp not in _AMP_DTYPES:
        raise ValueError(f"unknown amp mode {amp!r}; use one of {AMP_MODES}")
    dtype = _AMP_DTYPES[amp]
    return dtype, torch.amp.GradScaler(device.type) if dtype == torch.float16 else None


@dataclass
class StepOutcome:
    """One optimizer step: loss = (loc_sum + conf_sum) / max(N_total, 1) over all micro-batches and ranks."""

    loss: float
    loc: float
    conf: float
    num_pos: int
    images: int
    finite_loss: bool
    finite_grad: bool
    stepped: bool
    grad_norm: float


def _grad_norm(params: list[Tensor], clip: float | None) -> Tensor:
    """Global L2 norm of the gradients (clipping them to ``clip`` if set); NaN/inf propagate."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm=clip, error_if_nonfinite=False)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]))


def _to_device(batch: Any, device: torch.device, channels_last: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A collated ``Batch(images[B,3,S,S], boxes[B,G,4] xyxy normalised, labels[B,G], counts[B])`` on device."""
    images = batch.images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return (images, batch.boxes.to(device, non_blocking=True), batch.labels.to(device, non_blocking=True),
            batch.counts.to(device, non_blocking=True))


def train_step(*, model: nn.Module, micro_batches: Sequence[Any], match_fn: Callable, loss_fn: Callable,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None, device: torch.device,
               amp_dtype: torch.dtype | None = None, channels_last: bool = False, grad_clip: float | None = None,
               world_size: int = 1) -> StepOutcome:
    """One optimizer step over ``micro_batches`` (gradient accumulation), normalised by the TOTAL positives.

    match_fn(boxes[B,G,4], labels[B,G], counts[B]) -> (labels[B,P] int64, loc_targets[B,P,4]);
    loss_fn(loc[B,P,4], conf[B,P,C], labels, loc_targets) -> LossParts(loc, conf, num_pos) divided by max(N_i, 1)
    (``objective.build_objective`` builds both). A non-finite loss or gradient skips the step: optimizer not
    stepped, grads zeroed, scaler updated, and the buffers the forward passes moved (BatchNorm's running
    statistics and batch counts) put back, so that a skipped step leaves the model exactly as before it.
    """
    buffers = [(b, b.detach().clone()) for b in model.buffers()]  # small: BatchNorm statistics, not weights
    moved = [_to_device(b, device, channels_last) for b in micro_batches]
    with torch.no_grad():
        targets = [match_fn(boxes, labels, counts) for _, boxes, labels, counts in moved]
        n_each = [int((lab > 0).sum()) for lab, _ in targets]
    totals = torch.tensor([float(sum(n_each))], dtype=torch.float64)
    if world_size > 1:
        totals = all_reduce(totals, device)
    denom = max(float(totals[0]), 1.0)
    optimizer.zero_grad(set_to_none=True)
    sums = torch.zeros(2, dtype=torch.float64)
    ddp = isinstance(model, nn.parallel.DistributedDataParallel)
    for m, ((images, _, _, _), (lab, loc_t), n_i) in enumerate(zip(moved, targets, n_each)):
        sync = contextlib.nullcontext() if not ddp or m == len(moved) - 1 else model.no_sync()
        with sync:
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loc, conf = model(images)
            parts = loss_fn(loc.float(), conf.float(), lab, loc_t)
            # LossParts are divided by max(N_i, 1): back to sums, then over the step's total N.
            loc_sum, conf_sum = parts.loc * max(n_i, 1), parts.conf * max(n_i, 1)
            loss = (loc_sum + conf_sum) * (world_size / denom)
            (scaler.scale(loss) if scaler is not None else loss).backward()
        sums += torch.stack([loc_sum.detach(), conf_sum.detach()]).double().cpu()
    if world_size > 1:
        sums = all_reduce(sums, device)
    out = _finish_step(optimizer, scaler, sums, denom, int(totals[0]), grad_clip,
                       sum(int(i.shape[0]) for i, *_ in moved) * world_size)
    if not out.stepped:
        with torch.no_grad():
            for live, saved in buffers:
                live.copy_(saved)
    return out


def _finish_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None, sums: Tensor,
                 denom: float, num_pos: int, grad_clip: float | None, images: int) -> StepOutcome:
    """Unscale, check finiteness (the same decision on every rank: sums are all-reduced, grads too), step."""
    loc, conf = float(sums[0]) / denom, float(sums[1]) / denom
    finite_loss = math.isfinite(loc) and math.isfinite(conf)
    if scaler is not None:
        scaler.unscale_(optimizer)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    norm = float(_grad_norm(params, grad_clip))
    finite_grad = math.isfinite(norm)
    stepped = finite_loss and finite_grad
    if stepped:
        (scaler.step(optimizer) if scaler is not None else optimizer.step())
    else:
        optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.update()  # unscale_ recorded found_inf: a skipped step lowers the scale
    return StepOutcome(loss=loc + conf, loc=loc, conf=conf, num_pos=num_pos, images=images,
                       finite_loss=finite_loss, finite_grad=finite_grad, stepped=stepped, grad_norm=norm)


class TrainingDiverged(UserError, RuntimeError):
    """Raised when too many steps were skipped for non-finite loss or gradients (a user error: the message says
    which settings to change; ``run_cli`` prints it as one line)."""


@dataclass
class NonFiniteGuard:
    """Counts skipped steps; more than ``max_skips`` within the last ``window`` steps stops training.

    fp16 GradScaler overflows (finite loss, inf gradient while a scaler is active) are routine scale
    calibration and are counted separately, not toward the limit.
    """

    max_skips: int = 10
    window: int = 100
    amp: str = "none"
    total: int = 0
    overflows: int = 0
    recent: deque = field(default_factory=deque)

    def record(self, step: int, outcome: StepOutcome, scaler_active: bool) -> str | None:
        """Update counters after step ``step``; returns a log line for a skipped step, raises when too many."""
        if outcome.stepped:
            return None
        if scaler_active and outcome.finite_loss:
            self.overflows += 1
            return f"step {step}: fp16 gradient overflow, step skipped and loss scale lowered"
        self.total += 1
        self.recent.append(step)
        while self.recent and self.recent[0] <= step - self.window:
            self.recent.popleft()
        what = "loss" if not outcome.finite_loss else "gradient"
        if len(self.recent) > self.max_skips:
            raise TrainingDiverged(
                f"{len(self.recent)} steps with a non-finite {what} within the last {self.window} steps "
                f"(limit {self.max_skips}); training stopped at step {step}. Lower the learning rate "
                f"(optim.base_lr), lengthen the warmup (schedule.warmup_iterations), set optim.grad_clip, "
                f"or train in fp32 / bf16 instead of fp16 (runtime.amp={self.amp!r}).")
        return f"step {step}: non-finite {what}, step skipped ({self.total} so far)"

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "overflows": self.overflows, "recent": list(self.recent)}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.total, self.overflows, self.recent = d["total"], d["overflows"], deque(d["recent"])
