"""The training loop: optimizer steps from the current position, side jobs as hooks (``hooks``: NaN guard, logs,
evaluation with best.pt, checkpoints), exact resume, and a clean stop on a signal.

All components arrive built (``ssd_torch.training.train`` builds them from the config), grouped in small frozen
option objects: :class:`Feed` (the data), :class:`Span` (how far), ``step.Numerics`` (how a step computes),
:class:`SideJobs` (how often) and :class:`Outputs` (where results go). The trainer owns only the position
(``step`` = optimizer steps done, ``epoch``, ``step_in_epoch``), the best mAP, the stop, and the one rule that
no checkpoint is written from non-finite weights (:meth:`Trainer.save`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ssd_torch.checkpoint import build_checkpoint, nonfinite_keys, unwrap_model
from ssd_torch.labels import check_categories
from ssd_torch.errors import CheckpointError, ConfigError
from ssd_torch.training.checkpoint import CheckpointManager, capture_rng, restore_rng
from ssd_torch.training.data_order import (CollateOrError, StepSampler, ignore_stop_signals, raise_sample_error,
                                           sample_seed)
from ssd_torch.training.distributed import agree_max
from ssd_torch.training.interrupt import StopFlag
from ssd_torch.training.hooks import (CheckpointHook, EvalHook, GuardHook, Hook, MetricsHook, StepRecord,
                                     StopAwareData)
from ssd_torch.training.metrics_log import MetricsLogger, peak_memory_mb
from ssd_torch.training.schedule import restore_position
from ssd_torch.training.step import NonFiniteGuard, Numerics, TrainingDiverged, train_step

__all__ = ["Feed", "Span", "SideJobs", "RunMeta", "Outputs", "Trainer"]


@dataclass(frozen=True)
class Feed:
    """The training data: a ``SeededDataset``, its ``StepSampler``, the collate function, loader workers."""

    dataset: Dataset
    sampler: StepSampler
    collate_fn: Callable[[list], Any]
    num_workers: int = 0


@dataclass(frozen=True)
class Span:
    """``total_steps``: the schedule's length in optimizer steps; ``stop_at``: this invocation stops there
    (``schedule.max_steps``; None: at the end)."""

    total_steps: int
    stop_at: int | None = None

    @property
    def end(self) -> int:
        return self.total_steps if self.stop_at is None else min(self.stop_at, self.total_steps)


@dataclass(frozen=True)
class SideJobs:
    """Intervals in optimizer steps (0: only at the end): a ``metrics.csv`` row every ``log_every`` steps
    (and after step 1), an evaluation every ``eval_every``, a checkpoint every ``checkpoint_every``."""

    log_every: int = 20
    eval_every: int = 0
    checkpoint_every: int = 0
    progress: bool = False


@dataclass(frozen=True)
class RunMeta:
    """What every checkpoint of the run carries besides its state (ARCHITECTURE.md "Checkpoint format"), all
    required: the ``ModelConfig`` dict, the class names (``"background"`` first), the ``TrainConfig`` dict, the
    post-processing settings (``PostprocessConfig.to_dict``) and the fingerprint of the training data
    (``data_fingerprint``; None: not recorded, e.g. in unit tests)."""

    model_config: dict[str, Any]
    class_names: tuple[str, ...]
    train_config: dict[str, Any]
    postprocess: dict[str, Any]
    data_fingerprint: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_categories(self.class_names, "RunMeta")


@dataclass(frozen=True)
class Outputs:
    """Where results go (built on rank 0 only; the other ranks get ``Outputs(meta)``): the CSV/tensorboard
    logger, the checkpoint folder, the evaluation (``eval_fn(model) -> {"mAP": ...}``; ``eval_data``: its
    :class:`hooks.StopAwareData`, so that a signal stops the final evaluation), what checkpoints carry besides
    the state (:class:`RunMeta`) and the console."""

    meta: RunMeta
    logger: MetricsLogger | None = None
    checkpoints: CheckpointManager | None = None
    eval_fn: Callable[[nn.Module], dict[str, Any]] | None = None
    eval_data: StopAwareData | None = None
    print_fn: Callable[[str], None] = print


class Trainer:
    """Runs optimizer steps from the current position to ``span.end``; see the module docstring."""

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 scaler: torch.amp.GradScaler | None, match_fn: Callable, loss_fn: Callable, feed: Feed,
                 device: torch.device, span: Span, outputs: Outputs, numerics: Numerics = Numerics(),
                 jobs: SideJobs = SideJobs(), guard: NonFiniteGuard | None = None, rank: int = 0,
                 stop: StopFlag | None = None) -> None:
        feed.sampler.require_steps()
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.match_fn, self.loss_fn, self.feed, self.device = match_fn, loss_fn, feed, device
        self.span, self.numerics, self.jobs, self.outputs = span, numerics, jobs, outputs
        self.guard, self.rank, self.stop = guard or NonFiniteGuard(), rank, stop
        self.sampler, self.world_size = feed.sampler, feed.sampler.world_size
        self.step, self.epoch, self.step_in_epoch = 0, 0, 0
        self.best_map = -math.inf  # hooks.is_best: only a finite score above 0 and above this becomes best
        self.stopped_by = 0  # the signal all ranks agreed to stop on (0: none)
        self.last_metrics: dict[str, Any] = {}
        self.last_eval: dict[str, Any] = {}  # the full eval_fn output of the latest evaluation (not saved)
        self._epoch_stats = [0.0, 0, 0.0, 0]  # loss sum, steps, seconds, images
        self._saved_at = -1
        self.hooks: list[Hook] = self._side_jobs()

    def _side_jobs(self) -> list[Hook]:
        """The hooks, in calling order: guard, logs, evaluation (before the checkpoint of the same step, so that
        it records the mAP), checkpoint."""
        out, jobs = self.outputs, self.jobs
        hooks: list[Hook] = [GuardHook(), MetricsHook(out.logger, jobs.log_every)]
        if out.eval_fn is not None:
            hooks.append(EvalHook(out.eval_fn, jobs.eval_every, out.eval_data))
        return hooks + [CheckpointHook(jobs.checkpoint_every)]

    def _call(self, event: str, *args: Any) -> None:
        """THE rank rule: a hook runs on rank 0 only, unless its class sets ``all_ranks``."""
        for hook in self.hooks:
            if hook.all_ranks or self.rank == 0:
                getattr(hook, event)(self, *args)

    def say(self, text: str) -> None:
        """One line on the console, from rank 0 only."""
        if self.rank == 0:
            self.outputs.print_fn(text)

    # -- position and checkpoints ---------------------------------------------------------------------
    def checkpoint(self, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """The checkpoint dict of the current state (ARCHITECTURE.md format + the engine's position)."""
        meta = self.outputs.meta
        extra = {"step_in_epoch": self.step_in_epoch, "global_batch": self.sampler.global_batch,
                 "guard": self.guard.state_dict(), "best_map": self.best_map, "seed": self.sampler.seed,
                 "epoch_stats": list(self._epoch_stats), "data_fingerprint": meta.data_fingerprint}
        return build_checkpoint(model=self.model, model_config=meta.model_config, class_names=list(meta.class_names),
                                step=self.step, epoch=self.epoch, optimizer=self.optimizer,
                                scheduler=self.scheduler, scaler=self.scaler, rng=capture_rng(),
                                train_config=meta.train_config, postprocess=meta.postprocess,
                                metrics=metrics if metrics is not None else self.last_metrics, extra=extra)

    def load_state(self, ckpt: dict[str, Any]) -> None:
        """Restore everything ``checkpoint`` saved (exact resume). The effective batch must be unchanged; the
        optimizer's hyperparameters and the LR schedule stay those of THIS trainer (the current config)."""
        extra = ckpt.get("extra", {})
        if extra.get("global_batch") not in (None, self.sampler.global_batch):
            raise ConfigError(
                f"the checkpoint was trained with {extra['global_batch']} images per step (batch x accumulation x "
                f"processes), this run uses {self.sampler.global_batch}: the data position cannot be resumed "
                f"exactly; keep the effective batch (e.g. halve --batch-size and double --accumulation) or start "
                f"a new run in another --output-dir")
        try:
            unwrap_model(self.model).load_state_dict(ckpt["model"])
        except RuntimeError as e:
            first = str(e).splitlines()[0]
            raise CheckpointError(f"the checkpoint's weights do not fit this model ({first})") from None
        hyper = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(ckpt["optimizer"])
        for group, own in zip(self.optimizer.param_groups, hyper):
            group.update(own)
        restore_position(self.scheduler, ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        restore_rng(ckpt["rng"])
        self.step, self.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        self.step_in_epoch = int(extra.get("step_in_epoch", 0))
        if "guard" in extra:
            self.guard.load_state_dict(extra["guard"])
        self.best_map = float(extra.get("best_map", -math.inf))
        self._epoch_stats = list(extra.get("epoch_stats", self._epoch_stats))
        self.last_metrics = dict(ckpt.get("metrics", {}))

    def finished(self) -> bool:
        """At the end of the span with its final evaluation done (a resumed finished run has nothing to do)."""
        evaluated = self.outputs.eval_fn is None or self.last_metrics.get("step") == self.step
        return self.step >= self.span.end and evaluated

    def require_finite_model(self) -> None:
        """Raise :class:`TrainingDiverged` (naming the last good checkpoint) when a weight or buffer is NaN/inf."""
        bad = nonfinite_keys(unwrap_model(self.model).state_dict())
        if bad:
            raise TrainingDiverged(f"step {self.step}: the model's weights are non-finite (NaN/inf in "
                                   f"{bad[:3]}{' ...' if len(bad) > 3 else ''}); nothing was saved. "
                                   f"{self.resume_advice()}")

    def resume_advice(self) -> str:
        """Where the last good checkpoint is and how to continue from it (checkpoints are always finite)."""
        mgr = self.outputs.checkpoints
        files = mgr.step_files() if mgr is not None else []
        if not files:
            return "No checkpoint was written: start again with a lower --lr (optim.base_lr)."
        return (f"The last good checkpoint is {files[-1]}: continue from it with --resume {files[-1]} "
                f"--resume-with-changes and a lower --lr (optim.base_lr).")

    def save(self, *, force: bool = False) -> None:
        """A checkpoint of this step (once per step unless ``force``), never from non-finite weights."""
        if self._saved_at == self.step and not force:
            return
        self.require_finite_model()
        if self.outputs.checkpoints is not None and self.rank == 0:
            self.outputs.checkpoints.save(self.checkpoint())
        self._saved_at = self.step

    def save_best(self) -> None:
        """best.pt from the current (finite) state; the caller decided it is the best (``hooks.is_best``)."""
        self.require_finite_model()
        if self.outputs.checkpoints is not None and self.rank == 0:
            self.outputs.checkpoints.save_best(self.checkpoint(metrics=self.last_metrics))

    # -- the loop -------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to ``span.end`` or to an agreed stop (then a checkpoint is written and the final evaluation is
        skipped); returns ``{"step", "epoch", "best_map", "last_metrics", "last_eval", "skipped", "stopped_by"}``."""
        from tqdm.auto import tqdm
        self._call("before_train")
        bar = tqdm(total=self.span.end, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (self.jobs.progress and self.rank == 0))
        batches: Iterator[Any] | None = None
        try:
            while self.step < self.span.end and not self._stop_agreed():
                epoch = self.epoch
                if batches is None:
                    batches = self._loader()
                self._one_step(batches, bar)
                if self.epoch != epoch:
                    batches = None  # shuts the loader's workers down; the next epoch opens its own
        finally:
            bar.close()
        batches = None
        self._call("after_train")
        return {"step": self.step, "epoch": self.epoch, "best_map": self.best_map, "last_metrics": self.last_metrics,
                "last_eval": self.last_eval, "skipped": self.guard.total, "stopped_by": self.stopped_by}

    def _stop_agreed(self) -> bool:
        """Has any rank received a stop signal? (One all-reduce per step under DDP: all ranks stop together.)"""
        local = self.stop.signum if self.stop is not None else 0
        self.stopped_by = agree_max(local, self.device) if self.world_size > 1 else local
        return bool(self.stopped_by)

    def _loader(self) -> Iterator[Any]:
        self.sampler.set_epoch(self.epoch, self.step_in_epoch)
        # An explicit generator: the DataLoader otherwise draws its worker base seed from the GLOBAL torch
        # RNG, so the number of loaders created (resume!) would shift that stream.
        g = torch.Generator().manual_seed(sample_seed(self.sampler.seed, self.epoch, 0xD1))
        workers = self.feed.num_workers
        loader = DataLoader(self.feed.dataset, batch_sampler=self.sampler, num_workers=workers,
                            collate_fn=CollateOrError(self.feed.collate_fn), pin_memory=self.device.type == "cuda",
                            generator=g, worker_init_fn=ignore_stop_signals if workers else None)
        return iter(loader)

    def _one_step(self, batches: Iterator[Any], bar: Any) -> None:
        t0 = time.perf_counter()
        micro = [raise_sample_error(next(batches)) for _ in range(self.sampler.accumulation)]
        lr = self.optimizer.param_groups[0]["lr"]
        n = self.numerics
        out = train_step(model=self.model, micro_batches=micro, match_fn=self.match_fn, loss_fn=self.loss_fn,
                         optimizer=self.optimizer, scaler=self.scaler, device=self.device, amp_dtype=n.amp_dtype,
                         channels_last=n.channels_last, grad_clip=n.grad_clip, world_size=self.world_size)
        self.scheduler.step()
        self.step += 1
        self.step_in_epoch += 1
        seconds = time.perf_counter() - t0
        epoch = self.epoch
        self._epoch_stats[0] += out.loss if out.stepped else 0.0
        self._epoch_stats[1] += int(out.stepped)
        self._epoch_stats[2] += seconds
        self._epoch_stats[3] += out.images
        bar.update(1)
        bar.set_postfix(loss=f"{out.loss:.3f}", lr=f"{lr:.2e}", img_s=f"{out.images / max(seconds, 1e-9):.1f}",
                        refresh=False)
        row = self._end_epoch() if self.step_in_epoch == self.sampler.steps_per_epoch else None
        self._call("after_step", StepRecord(self.step, epoch, out, lr, seconds, row))

    def _end_epoch(self) -> dict[str, Any]:
        """Close the epoch: its row (mean loss over the steps taken, throughput, peak memory); the next begins."""
        loss_sum, n, seconds, images = self._epoch_stats
        row = {"epoch": self.epoch, "step": self.step, "mean_loss": loss_sum / max(n, 1), "seconds": seconds,
               "images_per_s": images / max(seconds, 1e-9), "peak_memory_mb": peak_memory_mb(self.device)}
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._epoch_stats = [0.0, 0, 0.0, 0]
        self.epoch += 1
        self.step_in_epoch = 0
        return row
