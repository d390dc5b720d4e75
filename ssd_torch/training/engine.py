"""The training loop: deterministic data order, accumulated/DDP steps normalised by the TOTAL positives,
the NaN/inf guard, checkpoints with exact resume, logging and periodic evaluation.

Data order and augmentation are a pure function of ``(seed, epoch, sample index)``: ``StepSampler`` draws the
epoch's permutation from ``(seed, epoch)`` and can start at any step; ``SeededDataset`` seeds the RNGs per
sample from ``(seed, epoch, index)`` before the transform runs. Neither the worker count nor the resume point
can change the stream, which is what makes "N steps" and "N/2 + resume + N/2" bit-identical on CPU.

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
import csv
import math
import random
import resource
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from ssd_torch.training.checkpoint import CheckpointManager, build_checkpoint, capture_rng, restore_rng, unwrap_model

__all__ = ["sample_seed", "StepSampler", "SeededDataset", "StepOutcome", "train_step", "NonFiniteGuard",
           "TrainingDiverged", "MetricsLogger", "peak_memory_mb", "Trainer", "param_groups"]


# ----------------------------------------------------------------------------------------------- data order
def sample_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integer keys (NumPy's SeedSequence: well-spread, platform-independent)."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(2, np.uint64)[0] >> 1)


class StepSampler(Sampler[list]):
    """Yields this rank's micro-batches of one epoch as lists of ``(epoch, index)`` keys.

    Step s of the epoch takes the global chunk ``perm[s*G : (s+1)*G]`` (G = micro_batch x accumulation x
    world_size; the incomplete last chunk is dropped); rank r takes the slice ``[r*b*a : (r+1)*b*a]`` of it and
    yields it as ``accumulation`` micro-batches of ``micro_batch``. So the images of a step are the same for
    every split of the effective batch, and ``set_epoch(epoch, start_step)`` resumes mid-epoch.
    """

    def __init__(self, num_samples: int, micro_batch: int, accumulation: int = 1, world_size: int = 1,
                 rank: int = 0, seed: int = 0, shuffle: bool = True) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if micro_batch <= 0 or accumulation <= 0:
            raise ValueError(f"micro_batch and accumulation must be > 0, got {micro_batch}, {accumulation}")
        self.num_samples, self.micro_batch, self.accumulation = num_samples, micro_batch, accumulation
        self.world_size, self.rank, self.seed, self.shuffle = world_size, rank, seed, shuffle
        self.global_batch = micro_batch * accumulation * world_size
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.global_batch

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        if not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"start_step must be in [0, {self.steps_per_epoch}], got {start_step}")
        self.epoch, self.start_step = epoch, start_step

    def permutation(self, epoch: int) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, 0x5A3))
        return torch.randperm(self.num_samples, generator=g)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        perm = self.permutation(self.epoch).tolist()
        per_rank = self.micro_batch * self.accumulation
        for s in range(self.start_step, self.steps_per_epoch):
            mine = perm[s * self.global_batch + self.rank * per_rank:][:per_rank]
            for m in range(self.accumulation):
                yield [(self.epoch, i) for i in mine[m * self.micro_batch:(m + 1) * self.micro_batch]]

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accumulation


class SeededDataset(Dataset):
    """Wraps a dataset whose ``__getitem__`` runs a random transform: for a key ``(epoch, index)`` the python,
    NumPy and torch RNGs are seeded from ``(seed, epoch, index)`` around ``base[index]`` (and restored after,
    so the caller's RNG streams are untouched). A plain int key reads ``base[index]`` unseeded (evaluation)."""

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base, self.seed = base, seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        if isinstance(key, int):
            return self.base[key]
        epoch, index = key
        s = sample_seed(self.seed, epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(s)
                random.seed(s)
                np.random.seed(s & 0xFFFFFFFF)
                return self.base[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


# ----------------------------------------------------------------------------------------------- one step
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
    loss_fn(loc[B,P,4], conf[B,P,C], labels, loc_targets) -> LossParts(loc, conf, num_pos) divided by max(N_i, 1).
    A non-finite loss or gradient skips the step: optimizer not stepped, grads zeroed, scaler updated.
    """
    moved = [_to_device(b, device, channels_last) for b in micro_batches]
    with torch.no_grad():
        targets = [match_fn(boxes, labels, counts) for _, boxes, labels, counts in moved]
        n_each = [int((lab > 0).sum()) for lab, _ in targets]
    totals = torch.tensor([float(sum(n_each)), 0.0, 0.0], dtype=torch.float64)
    if world_size > 1:
        totals = _all_reduce(totals, device)
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
        sums = _all_reduce(sums, device)
    return _finish_step(model, optimizer, scaler, sums, denom, int(totals[0]), grad_clip,
                        sum(int(i.shape[0]) for i, *_ in moved) * world_size)


def _finish_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                 sums: Tensor, denom: float, num_pos: int, grad_clip: float | None, images: int) -> StepOutcome:
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


def _all_reduce(t: Tensor, device: torch.device) -> Tensor:
    """Sum a small CPU float64 tensor over ranks (moved to the device for nccl)."""
    work = t.to(device) if dist.get_backend() == "nccl" else t.clone()
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.cpu()


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two SGD groups: conv / linear weights with ``weight_decay``; biases, BatchNorm and L2Norm scales
    (every parameter with < 2 dims) without (decaying a norm scale or a bias only fights the data)."""
    decay, no_decay = [], []
    for _, p in unwrap_model(model).named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ----------------------------------------------------------------------------------------------- NaN guard
class TrainingDiverged(RuntimeError):
    """Raised when too many steps were skipped for non-finite loss or gradients."""


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


# ----------------------------------------------------------------------------------------------- logging
def peak_memory_mb(device: torch.device) -> float:
    """CUDA max allocated (since the last reset) on a GPU, else the process's peak RSS (getrusage, KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MetricsLogger:
    """CSV files in the run folder (``metrics.csv`` per logged step, ``epochs.csv``, ``eval.csv``) and, when
    tensorboard is installed and enabled, the same scalars under ``tb/``. Appends, so a resumed run continues."""

    STEP_FIELDS = ["step", "epoch", "loss", "loc_loss", "conf_loss", "lr", "num_pos", "images_per_s",
                   "grad_norm", "skipped_total"]
    EPOCH_FIELDS = ["epoch", "step", "mean_loss", "seconds", "images_per_s", "peak_memory_mb"]
    EVAL_FIELDS = ["step", "epoch", "mAP", "seconds"]

    def __init__(self, run_dir: str | Path, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(self.run_dir / "tb"))
            except Exception:  # tensorboard missing or broken: CSV still works
                self.writer = None

    def _append(self, name: str, fields: list[str], row: dict[str, Any]) -> None:
        path = self.run_dir / name
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: row.get(k, "") for k in fields})

    def log(self, kind: str, row: dict[str, Any]) -> None:
        """``kind`` in {"step", "epoch", "eval"}; numbers also go to tensorboard as ``kind/name``."""
        fields = {"step": self.STEP_FIELDS, "epoch": self.EPOCH_FIELDS, "eval": self.EVAL_FIELDS}[kind]
        self._append({"step": "metrics.csv", "epoch": "epochs.csv", "eval": "eval.csv"}[kind], fields, row)
        if self.writer is not None:
            x = row.get("step", 0)
            for k, v in row.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(f"{kind}/{k}", v, x)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ----------------------------------------------------------------------------------------------- the loop
class Trainer:
    """Runs optimizer steps from the current position to ``min(total_steps, stop_at)``.

    All components arrive built (``ssd_torch.training.train`` unpacks the config); the trainer owns only the position
    (``step`` = optimizer steps done, ``epoch``, ``step_in_epoch``), the NaN guard, the best mAP and the
    periodic side jobs: logging every ``log_every`` steps, a checkpoint every ``checkpoint_every`` steps and
    at the end, an evaluation every ``eval_every`` steps and at the end (``eval_fn(model) -> {"mAP": ...}``,
    run on rank 0 only), ``best.pt`` whenever the mAP improves.
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 scaler: torch.amp.GradScaler | None, match_fn: Callable, loss_fn: Callable, dataset: Dataset,
                 sampler: StepSampler, collate_fn: Callable, device: torch.device, total_steps: int,
                 stop_at: int | None = None, amp_dtype: torch.dtype | None = None, channels_last: bool = False,
                 grad_clip: float | None = None, num_workers: int = 0, rank: int = 0,
                 guard: NonFiniteGuard | None = None, logger: MetricsLogger | None = None,
                 checkpoints: CheckpointManager | None = None, checkpoint_every: int = 0,
                 eval_fn: Callable[[nn.Module], dict[str, Any]] | None = None, eval_every: int = 0,
                 meta: dict[str, Any] | None = None, log_every: int = 20, progress: bool = False,
                 print_fn: Callable[[str], None] = print) -> None:
        if sampler.steps_per_epoch == 0:
            raise ValueError(f"the training set has {sampler.num_samples} images, fewer than one effective batch "
                             f"of {sampler.global_batch}: lower the batch size or accumulation")
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.match_fn, self.loss_fn, self.dataset, self.sampler = match_fn, loss_fn, dataset, sampler
        self.collate_fn, self.device, self.total_steps = collate_fn, device, total_steps
        self.stop_at = total_steps if stop_at is None else min(stop_at, total_steps)
        self.amp_dtype, self.channels_last, self.grad_clip = amp_dtype, channels_last, grad_clip
        self.num_workers, self.rank, self.world_size = num_workers, rank, sampler.world_size
        self.guard = guard or NonFiniteGuard()
        self.logger, self.checkpoints, self.checkpoint_every = logger, checkpoints, checkpoint_every
        self.eval_fn, self.eval_every, self.meta = eval_fn, eval_every, dict(meta or {})
        self.log_every, self.progress, self.print_fn = log_every, progress, print_fn
        self.step, self.epoch, self.step_in_epoch = 0, 0, 0
        self.best_map = -math.inf
        self.last_metrics: dict[str, Any] = {}
        self.last_eval: dict[str, Any] = {}  # the full eval_fn output of the latest evaluation (not saved)
        self._epoch_stats = [0.0, 0, 0.0, 0]  # loss sum, steps, seconds, images

    # -- position and checkpoints ---------------------------------------------------------------------
    def checkpoint(self, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """The checkpoint dict of the current state (ARCHITECTURE.md format + the engine's position)."""
        extra = {"step_in_epoch": self.step_in_epoch, "global_batch": self.sampler.global_batch,
                 "guard": self.guard.state_dict(), "best_map": self.best_map, "seed": self.sampler.seed}
        return build_checkpoint(model=self.model, model_config=self.meta.get("model_config", {}),
                                class_names=self.meta.get("class_names", ["background", "object"]),
                                step=self.step, epoch=self.epoch, optimizer=self.optimizer,
                                scheduler=self.scheduler, scaler=self.scaler, rng=capture_rng(),
                                train_config=self.meta.get("train_config", {}),
                                metrics=metrics if metrics is not None else self.last_metrics, extra=extra)

    def load_state(self, ckpt: dict[str, Any]) -> None:
        """Restore everything ``checkpoint`` saved (exact resume); the effective batch must be unchanged."""
        extra = ckpt.get("extra", {})
        if extra.get("global_batch") not in (None, self.sampler.global_batch):
            raise ValueError(f"the checkpoint was trained with {extra['global_batch']} images per step, this run "
                             f"uses {self.sampler.global_batch}: the data position cannot be resumed exactly")
        unwrap_model(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        restore_rng(ckpt["rng"])
        self.step, self.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        self.step_in_epoch = int(extra.get("step_in_epoch", 0))
        if "guard" in extra:
            self.guard.load_state_dict(extra["guard"])
        self.best_map = float(extra.get("best_map", -math.inf))
        self.last_metrics = dict(ckpt.get("metrics", {}))

    def _save(self, metrics: dict[str, Any] | None = None) -> None:
        if self.checkpoints is not None and self.rank == 0:
            self.checkpoints.save(self.checkpoint(metrics))

    # -- the loop -------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to ``stop_at``; returns ``{"step", "epoch", "best_map", "last_metrics", "skipped"}``."""
        from tqdm.auto import tqdm
        bar = tqdm(total=self.stop_at, initial=self.step, disable=not (self.progress and self.rank == 0),
                   unit="step", dynamic_ncols=True)
        try:
            while self.step < self.stop_at:
                self._run_epoch(bar)
        finally:
            bar.close()
        self._finish()
        return {"step": self.step, "epoch": self.epoch, "best_map": self.best_map,
                "last_metrics": self.last_metrics, "last_eval": self.last_eval, "skipped": self.guard.total}

    def _loader(self) -> Iterator[Any]:
        self.sampler.set_epoch(self.epoch, self.step_in_epoch)
        # An explicit generator: the DataLoader otherwise draws its worker base seed from the GLOBAL torch
        # RNG, so the number of loaders created (resume!) would shift that stream.
        g = torch.Generator().manual_seed(sample_seed(self.sampler.seed, self.epoch, 0xD1))
        loader = DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=self.collate_fn,
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda", generator=g)
        return iter(loader)

    def _run_epoch(self, bar: Any) -> None:
        batches = self._loader()
        accumulation = self.sampler.accumulation
        epoch = self.epoch
        while self.epoch == epoch and self.step < self.stop_at:  # _after_step rolls the epoch over at its end
            t0 = time.perf_counter()
            micro = [next(batches) for _ in range(accumulation)]
            lr = self.optimizer.param_groups[0]["lr"]
            out = train_step(model=self.model, micro_batches=micro, match_fn=self.match_fn, loss_fn=self.loss_fn,
                             optimizer=self.optimizer, scaler=self.scaler, device=self.device,
                             amp_dtype=self.amp_dtype, channels_last=self.channels_last, grad_clip=self.grad_clip,
                             world_size=self.world_size)
            self.scheduler.step()
            self.step += 1
            self.step_in_epoch += 1
            self._after_step(out, lr, time.perf_counter() - t0, bar)
        del batches  # shuts loader workers down before the next epoch starts its own

    def _after_step(self, out: StepOutcome, lr: float, seconds: float, bar: Any) -> None:
        message = self.guard.record(self.step, out, self.scaler is not None and self.scaler.is_enabled())
        if message and self.rank == 0:
            self.print_fn(message)
        if out.stepped:
            self._epoch_stats[0] += out.loss
            self._epoch_stats[1] += 1
        self._epoch_stats[2] += seconds
        self._epoch_stats[3] += out.images
        rate = out.images / max(seconds, 1e-9)
        bar.update(1)
        bar.set_postfix(loss=f"{out.loss:.3f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}", refresh=False)
        if self.logger is not None and self.rank == 0 and (self.step % self.log_every == 0 or self.step == 1):
            self.logger.log("step", {"step": self.step, "epoch": self.epoch, "loss": out.loss, "loc_loss": out.loc,
                                     "conf_loss": out.conf, "lr": lr, "num_pos": out.num_pos,
                                     "images_per_s": rate, "grad_norm": out.grad_norm,
                                     "skipped_total": self.guard.total})
        if self.step_in_epoch == self.sampler.steps_per_epoch:
            self._end_epoch()
        if self.checkpoint_every and self.step % self.checkpoint_every == 0 and self.step < self.stop_at:
            self._save()
        if self.eval_every and self.step % self.eval_every == 0 and self.step < self.stop_at:
            self._evaluate()

    def _end_epoch(self) -> None:
        loss_sum, n, seconds, images = self._epoch_stats
        row = {"epoch": self.epoch, "step": self.step, "mean_loss": loss_sum / max(n, 1), "seconds": seconds,
               "images_per_s": images / max(seconds, 1e-9), "peak_memory_mb": peak_memory_mb(self.device)}
        if self.rank == 0:
            if self.logger is not None:
                self.logger.log("epoch", row)
            self.print_fn(f"epoch {self.epoch}: step {self.step}, mean loss {row['mean_loss']:.4f}, "
                          f"{row['images_per_s']:.1f} img/s, peak memory {row['peak_memory_mb']:.0f} MiB")
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._epoch_stats = [0.0, 0, 0.0, 0]
        self.epoch += 1
        self.step_in_epoch = 0

    def _evaluate(self) -> dict[str, Any]:
        """eval_fn on rank 0 (others wait); keeps ``best.pt`` by mAP."""
        metrics: dict[str, Any] = {}
        if self.eval_fn is not None and self.rank == 0:
            t0 = time.perf_counter()
            model = unwrap_model(self.model)
            was_training = model.training
            model.eval()
            try:
                metrics = dict(self.eval_fn(model))
            finally:
                model.train(was_training)
            metrics["seconds"] = time.perf_counter() - t0
            self.last_eval = metrics
            self.last_metrics = {"mAP": metrics.get("mAP"), "step": self.step}
            if self.logger is not None:
                self.logger.log("eval", {"step": self.step, "epoch": self.epoch, **metrics})
            self.print_fn(f"step {self.step}: mAP {metrics.get('mAP', float('nan')):.4f}")
            m = metrics.get("mAP")
            if m is not None and math.isfinite(m) and m > self.best_map:
                self.best_map = m
                if self.checkpoints is not None:
                    self.checkpoints.save_best(self.checkpoint(self.last_metrics))
        if self.world_size > 1:
            dist.barrier()
        return metrics

    def _finish(self) -> None:
        """Final evaluation and checkpoint (the final checkpoint holds the final mAP)."""
        if self.eval_fn is not None:
            self._evaluate()
        self._save()
        if self.logger is not None and self.rank == 0:
            from ssd_torch.evaluation.visualize import plot_training_curves
            plot_training_curves(self.logger.run_dir)
