"""The trainer's side jobs as hooks with one interface (after detectron2's ``engine/hooks.py``).

A :class:`Hook` sees three events: ``before_train(trainer)``, ``after_step(trainer, record)`` (the step is done,
its epoch closed if it was the last one) and ``after_train(trainer)`` (the loop ended: at its end or at an agreed
stop, ``trainer.stopped_by``). The rank rule lives in ONE place, ``Trainer._call``: a hook runs on rank 0 only
unless its class sets ``all_ranks`` (the NaN guard and the checkpoint's finiteness check must decide the same on
every rank; the outputs themselves exist on rank 0 only, ``training.train``).

The hooks, in the order the trainer calls them: :class:`GuardHook` (skipped steps; stops a diverged run),
:class:`MetricsHook` (metrics.csv / epochs.csv rows), :class:`EvalHook` (periodic and final evaluation, best.pt),
:class:`CheckpointHook` (periodic and final checkpoint).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from torch import nn

from ssd_torch.checkpoint import unwrap_model
from ssd_torch.evaluation.headline import headline_label
from ssd_torch.training.interrupt import StopFlag
from ssd_torch.training.metrics_log import MetricsLogger
from ssd_torch.training.step import StepOutcome, TrainingDiverged

if TYPE_CHECKING:
    from ssd_torch.training.trainer import Trainer

__all__ = ["StepRecord", "Hook", "GuardHook", "MetricsHook", "EvalHook", "CheckpointHook", "EvaluationStopped",
           "StopAwareData", "is_best"]


@dataclass(frozen=True)
class StepRecord:
    """One finished optimizer step: ``step`` (steps done), the ``epoch`` it belonged to, its outcome, the LR it
    ran at, its seconds, and the row of the epoch it closed (None: the epoch goes on)."""

    step: int
    epoch: int
    outcome: StepOutcome
    lr: float
    seconds: float
    epoch_row: dict[str, Any] | None = None


class Hook:
    """One side job; every event does nothing unless overridden. ``all_ranks``: see the module docstring."""

    all_ranks: ClassVar[bool] = False

    def before_train(self, trainer: "Trainer") -> None:
        pass

    def after_step(self, trainer: "Trainer", record: StepRecord) -> None:
        pass

    def after_train(self, trainer: "Trainer") -> None:
        pass


class GuardHook(Hook):
    """The NaN guard (``trainer.guard``): a skipped step is said; too many stop the run, and so does a skipped
    step whose weights are already non-finite (nothing good is left to continue from). The stop writes a
    checkpoint of the current, finite state (a skipped step leaves the model as before it: ``step.train_step``)
    and names it with the way to resume."""

    all_ranks = True

    def after_step(self, trainer: "Trainer", record: StepRecord) -> None:
        out = record.outcome
        scaler = trainer.scaler is not None and trainer.scaler.is_enabled()
        try:
            message = trainer.guard.record(record.step, out, scaler)
        except TrainingDiverged as e:
            trainer.save()  # refuses (TrainingDiverged naming the last good checkpoint) if not finite
            raise TrainingDiverged(f"{e} {trainer.resume_advice()}") from None
        if message:
            trainer.say(message)
        if not out.stepped:
            trainer.require_finite_model()


class MetricsHook(Hook):
    """A metrics.csv row every ``log_every`` steps (and after step 1); the epochs.csv row and line of each
    closed epoch."""

    def __init__(self, logger: MetricsLogger | None, log_every: int) -> None:
        self.logger, self.log_every = logger, log_every

    def after_step(self, trainer: "Trainer", record: StepRecord) -> None:
        out, step = record.outcome, record.step
        if self.logger is not None and (step % self.log_every == 0 or step == 1):
            self.logger.log("step", {"step": step, "epoch": record.epoch, "loss": out.loss, "loc_loss": out.loc,
                                     "conf_loss": out.conf, "lr": record.lr, "num_pos": out.num_pos,
                                     "images_per_s": out.images / max(record.seconds, 1e-9),
                                     "grad_norm": out.grad_norm, "skipped_total": trainer.guard.total})
        row = record.epoch_row
        if row is not None:
            if self.logger is not None:
                self.logger.log("epoch", row)
            trainer.say(f"epoch {row['epoch']}: step {row['step']}, mean loss {row['mean_loss']:.4f}, "
                        f"{row['images_per_s']:.1f} img/s, peak memory {row['peak_memory_mb']:.0f} MiB")


def is_best(score: Any, best: float) -> bool:
    """The best.pt rule: a finite score strictly above both the best so far and 0 (a broken model scores 0.0
    and must never become "best"; ``best`` starts at -inf, resumed runs read it from their checkpoints)."""
    return isinstance(score, (int, float)) and math.isfinite(score) and score > max(best, 0.0)


class EvaluationStopped(Exception):
    """A stop signal arrived during the final evaluation (raised by :class:`StopAwareData`)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class StopAwareData:
    """The held-out dataset, which raises :class:`EvaluationStopped` on its next image once ``armed`` and a stop
    signal has arrived: the final evaluation then stops at once instead of running to its end after the user was
    told "stopping". Everything else (``annotation``, a COCO file's fields) is the wrapped dataset's."""

    def __init__(self, dataset: Any, stop: StopFlag) -> None:
        self.dataset, self.stop, self.armed = dataset, stop, False

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        if self.armed and self.stop.signum:
            raise EvaluationStopped(self.stop.signum)
        return self.dataset[i]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["dataset"], name)


class EvalHook(Hook):
    """``eval_fn(model) -> {"mAP": ..., "metric": ...}`` every ``every`` steps (0: only at the end) and at the
    end; an eval.csv row and a line each time; best.pt by :func:`is_best`. The final evaluation comes between
    two checkpoints of the last step (the first makes a run aborted during a long evaluation resumable, the
    second records the mAP, which marks the run finished); a stop signal during it (``interruptible``, armed
    only then) stops it, and ``--resume auto`` evaluates again."""

    def __init__(self, eval_fn: Callable[[nn.Module], dict[str, Any]], every: int,
                 interruptible: StopAwareData | None = None) -> None:
        self.eval_fn, self.every, self.interruptible = eval_fn, every, interruptible

    def after_step(self, trainer: "Trainer", record: StepRecord) -> None:
        if self.every and record.step % self.every == 0 and record.step < trainer.span.end:
            self.evaluate(trainer)

    def after_train(self, trainer: "Trainer") -> None:
        if trainer.stopped_by:
            return
        trainer.save()
        if self.interruptible is not None:
            self.interruptible.armed = True
        try:
            self.evaluate(trainer)
        except EvaluationStopped as e:
            trainer.stopped_by = e.signum
            trainer.say(f"the final evaluation was stopped; the checkpoint of step {trainer.step} is written "
                        f"(without its mAP): --resume auto evaluates it")
            return
        finally:
            if self.interruptible is not None:
                self.interruptible.armed = False
        trainer.save(force=True)

    def evaluate(self, trainer: "Trainer") -> dict[str, Any]:
        """Run ``eval_fn`` on the plain model in eval mode; log, say, keep best.pt."""
        t0 = time.perf_counter()
        model = unwrap_model(trainer.model)
        was_training = model.training
        model.eval()
        try:
            metrics = dict(self.eval_fn(model))
        finally:
            model.train(was_training)
        metrics["seconds"] = time.perf_counter() - t0
        trainer.last_eval = metrics
        trainer.last_metrics = {"mAP": metrics.get("mAP"), "step": trainer.step}
        if trainer.outputs.logger is not None:
            trainer.outputs.logger.log("eval", {"step": trainer.step, "epoch": trainer.epoch, **metrics})
        label = headline_label(metrics.get("metric"))
        trainer.say(f"step {trainer.step}: {label} {metrics.get('mAP', float('nan')):.4f}")
        if is_best(metrics.get("mAP"), trainer.best_map):
            trainer.best_map = float(metrics["mAP"])
            trainer.save_best()
        return metrics


class CheckpointHook(Hook):
    """A checkpoint every ``every`` steps (0: only at the end) and when the loop ends (also after a stop).
    Runs on every rank: each checks that the weights are finite (the same answer everywhere: DDP keeps them
    equal), rank 0 writes."""

    all_ranks = True

    def __init__(self, every: int) -> None:
        self.every = every

    def after_step(self, trainer: "Trainer", record: StepRecord) -> None:
        if self.every and record.step % self.every == 0 and record.step < trainer.span.end:
            trainer.save()

    def after_train(self, trainer: "Trainer") -> None:
        trainer.save()
