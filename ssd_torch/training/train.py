"""One training run: build the components from a resolved ``TrainConfig`` and train (``run_training``).

The command line is ``ssd_torch.cli.train`` (``ssd-train``; under torchrun ``-m ssd_torch.cli.train``).
``--batch-size`` is PER PROCESS; the LR follows the effective batch (``schedule.py``). This module is the one
place where the config is taken apart: each builder gets its section (``datasets``, ``model_setup``,
``objective``) or explicit keyword arguments.

Order of a run: refuse what can be refused before anything is written (device, backbone weights, the run
folder: ``run_folder``), resolve the class list from the data (``datasets.resolve_class_names``; written into
``config.json``), open the checkpoint to resume (``resume``: refuses fixed changes and other classes), build the
model with its starting weights (``model_setup.build_model``: backbone, ``--init-from``, or none on resume) and
then the data, priors, objective and evaluation from the ``ModelConfig`` it returns, restore the resumed state,
write ``config.json``, rewind the logs to the resumed step, train under the stop-signal handlers
(``interrupt``), plot ``curves.png``.
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import torch

from ssd_torch.labels import categories_of
from ssd_torch.device import resolve_device
from ssd_torch.errors import ConfigError
from ssd_torch.modeling.predictor import Predictor
from ssd_torch.training.checkpoint import CheckpointManager
from ssd_torch.training.data_order import SeededDataset, StepSampler
from ssd_torch.training.datasets import build_datasets, ensure_synthetic, evaluation_fn, resolve_class_names
from ssd_torch.training.distributed import DistInfo, on_rank0, say, setup_distributed
from ssd_torch.training.interrupt import StopFlag, stop_on_signals
from ssd_torch.training.metrics_log import MetricsLogger
from ssd_torch.training.model_setup import build_model, build_optimizer, wrap_model
from ssd_torch.training.objective import build_objective
from ssd_torch.training.resume import Resumed, check_data, data_fingerprint, open_resume, resume_trainer
from ssd_torch.training.run_folder import (CHECKPOINT_DIR, CONFIG_FILE, CURVES_FILE, check_new_run,
                                           claim_run_folder, describe_removed, lock_run_folder,
                                           remove_previous_run)
from ssd_torch.training.schedule import build_lr_factor, build_scheduler, scaled_lr, schedule_lengths
from ssd_torch.training.step import NonFiniteGuard, Numerics, amp_settings
from ssd_torch.training.train_config import TrainConfig, save_config
from ssd_torch.training.hooks import StopAwareData
from ssd_torch.training.trainer import Feed, Outputs, RunMeta, SideJobs, Span, Trainer

__all__ = ["run_training"]


def run_training(cfg: TrainConfig, *, trust_checkpoint: bool = False, overwrite: bool = False,
                 accept_changes: bool = False) -> dict[str, Any]:
    """Train as ``cfg`` says; returns the trainer's summary plus ``run_dir``, ``class_names`` and
    ``world_size``. ``summary["stopped_by"]`` is the signal that stopped the run (0: it ran to its end).

    ``run.resume``: a checkpoint path, or ``"auto"`` (the run folder's latest checkpoint, if any);
    ``trust_checkpoint`` unpickles it in full (``checkpoint.read_checkpoint``); ``accept_changes`` applies
    settings that cannot normally change mid-run (``resume``). Without a resume, a folder holding an earlier
    run is refused unless ``overwrite`` (which removes only the files ssd-train writes, ``run_folder``)."""
    rt, r = cfg.runtime, cfg.run
    if overwrite and r.resume is not None:
        raise ConfigError("--overwrite starts a new run and --resume continues one: give only one of them")
    if rt.num_threads:
        torch.set_num_threads(rt.num_threads)
    info = setup_distributed(rt.device)
    device = resolve_device(rt.device, info.local_rank)
    cfg.model.weights_to_load()  # a VGG16 without backbone weights is refused before anything is written
    run_dir = Path(r.output_dir)
    with on_rank0(info, device, lambda: lock_run_folder(run_dir)) or contextlib.nullcontext():  # one run per folder
        return _run_locked(cfg, info, device, run_dir, trust_checkpoint, overwrite, accept_changes)


def _run_locked(cfg: TrainConfig, info: DistInfo, device: torch.device, run_dir: Path, trust_checkpoint: bool,
                overwrite: bool, accept_changes: bool) -> dict[str, Any]:
    if cfg.run.resume is None:
        on_rank0(info, device, lambda: check_new_run(run_dir, overwrite=overwrite))
    on_rank0(info, device, lambda: ensure_synthetic(cfg.data))  # the others wait in on_rank0's all-reduce
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, class_names=resolve_class_names(cfg.data)))
    class_names = list(categories_of(cfg.data.class_names))
    resumed = _resume_point(cfg, class_names, info, trust=trust_checkpoint, accept_changes=accept_changes)
    rt = cfg.runtime
    torch.use_deterministic_algorithms(rt.deterministic, warn_only=True)
    torch.manual_seed(rt.seed)  # the same initial weights on every rank (DDP also broadcasts them)
    built = build_model(cfg.model, class_names, resumed=resumed and resumed.model_config,
                        trust_checkpoint=trust_checkpoint)
    say(info, built.report)
    train_set, val_set = build_datasets(cfg.data, cfg.data.class_names, preprocess=built.config.preprocess)
    trainer = _build_trainer(cfg, built.model, built.config, train_set, val_set, class_names, device, info)
    if resumed is not None:
        check_data(resumed, trainer.outputs.meta.data_fingerprint, accept_changes, lambda text: say(info, text))
        resume_trainer(trainer, resumed, say=lambda text: say(info, text))
        if trainer.finished():  # nothing to do, nothing written (an evaluation again would add a second row)
            return {"step": trainer.step, "epoch": trainer.epoch, "best_map": trainer.best_map,
                    "last_metrics": trainer.last_metrics, "last_eval": {}, "skipped": trainer.guard.total,
                    "stopped_by": 0, "finished_before": True, "run_dir": str(run_dir), "class_names": class_names,
                    "world_size": info.world_size}
    summary = _train(trainer, cfg, info, f"training {built.config.name} on {len(train_set)} images", overwrite,
                     resumed)
    return {**summary, "run_dir": str(run_dir), "class_names": class_names, "world_size": info.world_size}


def _resume_point(cfg: TrainConfig, class_names: list[str], info: DistInfo, *, trust: bool,
                  accept_changes: bool) -> Resumed | None:
    """The checkpoint ``run.resume`` names, checked against ``cfg`` (None: a new run, or nothing to resume)."""
    if cfg.run.resume is None:
        return None
    checkpoints = CheckpointManager(Path(cfg.run.output_dir) / CHECKPOINT_DIR)
    resumed = open_resume(cfg.run.resume, checkpoints, cfg, class_names, trust=trust, accept_changes=accept_changes,
                          say=lambda text: say(info, text))
    if resumed is None:
        say(info, f"no checkpoint in {checkpoints.directory} yet: starting from scratch")
    return resumed


def _train(trainer: Trainer, cfg: TrainConfig, info: DistInfo, what: str, overwrite: bool,
           resumed: Resumed | None) -> dict[str, Any]:
    """With ``overwrite`` the earlier run's files go first (as late as possible: everything that can be refused
    has been); then the checkpoint folder is tidied (:func:`_tidy_checkpoints`), config.json written (the config
    in use), the logs rewound to the start step, fit under the signal handlers, curves.png at the end (also
    after a stop)."""
    logger, run_dir = trainer.outputs.logger, Path(cfg.run.output_dir)
    if info.rank == 0:
        removed = remove_previous_run(run_dir) if overwrite else []
        if removed:
            print(describe_removed(run_dir, removed))
        claim_run_folder(run_dir)  # the manifest claims what the run writes before it is written
        _tidy_checkpoints(trainer, resumed)
        save_config(cfg, run_dir / CONFIG_FILE)
        if logger is not None and cfg.run.resume is not None:
            logger.rewind(trainer.step)
    opt = trainer.optimizer.param_groups[0]
    say(info, f"{what}, {trainer.sampler.global_batch} per step, lr {opt['initial_lr']:.4g}, "
              f"{trainer.span.total_steps} steps ({trainer.sampler.steps_per_epoch} per epoch), device "
              f"{trainer.device}, world size {info.world_size}")
    try:
        with stop_on_signals(trainer.stop or StopFlag(), announce=info.rank == 0):
            summary = trainer.fit()
    finally:
        if logger is not None:
            logger.close()
    if info.rank == 0:
        from ssd_torch.evaluation.visualize import plot_training_curves
        plot_training_curves(run_dir, CURVES_FILE)
    return summary


def _tidy_checkpoints(trainer: Trainer, resumed: Resumed | None) -> None:
    """Rank 0, before training: remove the temp files of interrupted checkpoint writes; on a resume, protect
    the checkpoint resumed from against rotation and move the checkpoints of an abandoned later continuation
    aside (``CheckpointManager.set_aside``), saying so."""
    mgr = trainer.outputs.checkpoints
    if mgr is None:
        return
    leftovers = mgr.remove_leftovers()
    if leftovers:
        trainer.say(f"removed {len(leftovers)} temp file(s) of an interrupted checkpoint write: "
                    f"{', '.join(p.name for p in leftovers)}")
    if resumed is None:
        return
    mgr.protect(resumed.path)
    folder = mgr.set_aside(trainer.step)
    if folder is not None:
        trainer.say(f"the checkpoints after step {trainer.step} belong to the continuation this resume abandons: "
                    f"moved to {folder} (kept, not rotated; best.pt is replaced only by a better score)")


def _build_trainer(cfg: TrainConfig, model: torch.nn.Module, model_cfg: Any, train_set: Any, val_set: Any,
                   class_names: list[str], device: torch.device, info: DistInfo) -> Trainer:
    from ssd_torch.data.collate import collate_detection
    from ssd_torch.priors import default_boxes
    o, s, rt, r = cfg.optim, cfg.schedule, cfg.runtime, cfg.run
    sampler = StepSampler(len(train_set), o.batch_size, o.accumulation, info.world_size, info.rank, seed=rt.seed)
    sampler.require_steps()
    optimizer = build_optimizer(model, lr=scaled_lr(o.base_lr, sampler.global_batch, o.reference_batch),
                                momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov)
    lengths = schedule_lengths(iterations=s.iterations, milestones=s.milestones, epochs=s.epochs,
                               warmup_iterations=s.warmup_iterations, effective=sampler.global_batch,
                               reference_batch=o.reference_batch, steps_per_epoch=sampler.steps_per_epoch)
    factor = build_lr_factor(kind=s.kind, total_steps=lengths.total_steps, milestones=lengths.milestones,
                             gamma=s.gamma, warmup_steps=lengths.warmup_steps, warmup_factor=s.warmup_factor,
                             min_ratio=s.min_lr_ratio)
    amp_dtype, scaler = amp_settings(rt.amp, device)
    priors = default_boxes(model_cfg.prior_spec, device=device)
    match_fn, loss_fn = build_objective(cfg.loss, priors, model_cfg.variances)
    evaluate = evaluation_fn(cfg.data.dataset)  # the data's own metric: COCO AP for COCO data, VOC07 mAP else
    run_dir = Path(r.output_dir)
    stop = StopFlag()
    val_data = StopAwareData(val_set, stop)  # a signal during the final evaluation stops it (hooks.EvalHook)
    meta = RunMeta(model_config=model_cfg.to_dict(), class_names=tuple(class_names), train_config=cfg.to_dict(),
                   postprocess=cfg.postprocess.to_dict(),
                   data_fingerprint=data_fingerprint(train_set, cfg.data.train_split))
    # the outputs exist on rank 0 only (the hooks' rank rule is in Trainer._call)
    outputs = Outputs(meta=meta, print_fn=lambda text: say(info, text)) if info.rank != 0 else Outputs(
        meta=meta, logger=MetricsLogger(run_dir, tensorboard=r.tensorboard),
        checkpoints=CheckpointManager(run_dir / CHECKPOINT_DIR, keep_last=r.keep_last),
        # the one inference path, with what the checkpoints carry: the model's variances, this run's settings
        eval_fn=lambda m: evaluate(Predictor(m, model_cfg, class_names, cfg.postprocess, device=device,
                                             backend=cfg.loss.backend, amp_dtype=amp_dtype,
                                             channels_last=rt.channels_last), val_data, batch_size=r.eval_batch_size),
        eval_data=val_data, print_fn=lambda text: say(info, text))
    return Trainer(
        model=wrap_model(model, device, channels_last=rt.channels_last, compile_model=rt.compile, info=info),
        optimizer=optimizer, scheduler=build_scheduler(optimizer, factor), scaler=scaler, match_fn=match_fn,
        loss_fn=loss_fn, device=device, feed=Feed(SeededDataset(train_set, rt.seed), sampler, collate_detection,
                                                  cfg.data.num_workers),
        span=Span(lengths.total_steps, s.max_steps), numerics=Numerics(amp_dtype, rt.channels_last, o.grad_clip),
        jobs=SideJobs(r.log_every, r.eval_every, r.checkpoint_every, r.progress), outputs=outputs,
        guard=NonFiniteGuard(max_skips=r.nan_max_skips, window=r.nan_window, amp=rt.amp), rank=info.rank,
        stop=stop)
