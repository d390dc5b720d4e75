"""One training run: build the components from a resolved ``TrainConfig`` and train (``run_training``).

The command line is ``ssd_torch.cli.train`` (``ssd-train``; under torchrun ``-m ssd_torch.cli.train``).
``--batch-size`` is PER PROCESS; the LR follows the effective batch (``schedule.py``). This module is the one
place where the config is unpacked into the components' keyword arguments.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn

from ssd_torch.data.preprocess import IMAGENET, Preprocess
from ssd_torch.training.checkpoint import CheckpointManager, read_checkpoint
from ssd_torch.training.engine import (MetricsLogger, NonFiniteGuard, SeededDataset, StepSampler, Trainer, param_groups)
from ssd_torch.training.schedule import (build_lr_factor, build_scheduler, effective_batch, scaled_lr, schedule_lengths)
from ssd_torch.training.train_config import TrainConfig, save_config

__all__ = ["DistInfo", "setup_distributed", "resolve_device", "build_datasets", "build_train_transform",
           "build_model", "build_optimizer", "run_training", "say"]


@dataclass(frozen=True)
class DistInfo:
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


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when available, else CPU; ``cuda`` gets the local rank's index."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("runtime.device='cuda' but CUDA is not available; use 'cpu' or 'auto'")
        return torch.device("cuda", local_rank)
    return torch.device(name)


class _FirstN(torch.utils.data.Dataset):
    """The first ``n`` items of a VOC-like dataset (keeps ``annotation`` and ``class_names`` for evaluation)."""

    def __init__(self, base: Any, n: int) -> None:
        self.base, self.n = base, min(n, len(base))
        self.class_names = base.class_names

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        return self.base[i]

    def annotation(self, i: int) -> Any:
        return self.base.annotation(i)

    def image_path(self, i: int) -> Any:
        return self.base.image_path(i)


def build_train_transform(augment: str, preprocess: Preprocess, size: int = 300) -> Any:
    """``ssd``: the full SSD augmentation; ``light``: photometric + flip (no zoom-out / crop); ``none``: resize.
    ``preprocess``: the model's input convention (``ModelConfig.preprocess``)."""
    from ssd_torch.data.transforms import SSDEvalTransform, SSDTrainTransform
    if augment == "ssd":
        return SSDTrainTransform(size=size, preprocess=preprocess)
    if augment == "light":
        return SSDTrainTransform(size=size, preprocess=preprocess, p_expand=0.0, crop_options=(None,))
    if augment == "none":
        return SSDEvalTransform(size=size, preprocess=preprocess)
    raise ValueError(f"unknown augmentation {augment!r}; use 'ssd', 'light' or 'none'")


def _ensure_synthetic(root: Path, num_trainval: int, num_test: int, seed: int, rank: int) -> None:
    """Generate the synthetic VOC tree at ``root`` unless a complete one with these parameters is there
    (rank 0 writes, the others wait)."""
    if rank == 0:
        from ssd_torch.data.synthetic import ensure_voc, is_complete
        if not is_complete(root, num_trainval, num_test, seed):
            print(f"generating the synthetic VOC tree in {root} ({num_trainval} trainval + {num_test} test)")
        ensure_voc(root, num_trainval, num_test, seed)  # in-process: safe from any __main__
    if dist.is_initialized():
        dist.barrier()


def dataset_class_names(dataset: str) -> list[str]:
    """The class names of a ``data.dataset`` kind, ``"background"`` first (the model's label space)."""
    from ssd_torch.data.synthetic import SYNTHETIC_CLASSES
    from ssd_torch.data.voc import VOC_CLASSES
    return ["background", *(SYNTHETIC_CLASSES if dataset == "synthetic" else VOC_CLASSES)]


def build_datasets(*, dataset: str, roots: Sequence[str], train_split: str, val_roots: Sequence[str],
                   val_split: str, augment: str, keep_difficult: bool, skip_bad: bool, synthetic_trainval: int,
                   synthetic_test: int, synthetic_seed: int, max_train_images: int | None,
                   max_val_images: int | None, preprocess: Preprocess = IMAGENET,
                   rank: int = 0) -> tuple[Any, Any, list[str]]:
    """(train set with the training transform, held-out set with the eval transform, class names with
    ``"background"`` first); both transforms apply the model's ``preprocess``."""
    from ssd_torch.data.transforms import SSDEvalTransform
    from ssd_torch.data.voc import VOCDataset
    names = dataset_class_names(dataset)[1:]
    if dataset == "synthetic":
        _ensure_synthetic(Path(roots[0]), synthetic_trainval, synthetic_test, synthetic_seed, rank)
    train = VOCDataset(list(roots), train_split, class_names=names,
                       transform=build_train_transform(augment, preprocess),
                       keep_difficult=keep_difficult, skip_bad=skip_bad)
    val = VOCDataset(list(val_roots), val_split, class_names=names, transform=SSDEvalTransform(preprocess=preprocess),
                     keep_difficult=True, skip_bad=skip_bad)
    if max_train_images is not None:
        train = _FirstN(train, max_train_images)
    if max_val_images is not None:
        val = _FirstN(val, max_val_images)
    return train, val, ["background", *names]


def build_model(*, preset: str, num_classes: int, batch_norm: bool | None, head_bias_prior: float | None,
                backbone_weights: str | None, l2norm_scale: float | None = None) -> tuple[nn.Module, Any]:
    """(SSD300, its ModelConfig) from a ``ssd_torch.modeling.model_config`` preset; VGG16 weights loaded when given."""
    import dataclasses
    from ssd_torch.modeling.model_config import PRESETS as MODEL_PRESETS
    from ssd_torch.modeling.model import model_from_config
    if preset == "ssd300_slim" and batch_norm is not None:
        cfg = MODEL_PRESETS[preset](num_classes=num_classes, batch_norm=batch_norm)
    else:
        cfg = MODEL_PRESETS[preset](num_classes=num_classes)
    if head_bias_prior is not None:
        cfg = dataclasses.replace(cfg, head_bias_prior=head_bias_prior)
    if l2norm_scale is not None:
        cfg = dataclasses.replace(cfg, l2norm_scale=l2norm_scale)
    model = model_from_config(cfg)
    if backbone_weights:
        from ssd_torch.modeling.weights import load_vgg16_backbone
        report = load_vgg16_backbone(model, backbone_weights)
        cfg = dataclasses.replace(cfg, preprocess=report.preprocess)  # the weights fix the input convention
    return model, cfg


def build_optimizer(model: nn.Module, *, lr: float, momentum: float, weight_decay: float,
                    nesterov: bool = False) -> torch.optim.SGD:
    """SGD, weight decay on conv weights only (``engine.param_groups``)."""
    return torch.optim.SGD(param_groups(model, weight_decay), lr=lr, momentum=momentum, nesterov=nesterov)


def _amp(amp: str, device: torch.device) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    if amp == "none":
        return None, None
    if amp == "bf16":
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler(device.type)


def _wrap(model: nn.Module, device: torch.device, *, channels_last: bool, compile_model: bool,
          info: DistInfo) -> nn.Module:
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile_model:
        model = torch.compile(model)
    if info.world_size > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                    else None)
    return model


def say(info: DistInfo, text: str) -> None:
    if info.rank == 0:
        from tqdm.auto import tqdm
        tqdm.write(text)


def run_training(cfg: TrainConfig, *, trust_checkpoint: bool = False) -> dict[str, Any]:
    """Train as ``cfg`` says; returns the trainer's summary plus ``run_dir``. Resumes from ``run.resume``
    (a checkpoint path, or ``"auto"`` = the run folder's latest checkpoint if any); ``trust_checkpoint``
    unpickles that checkpoint in full (``training.checkpoint.read_checkpoint``)."""
    rt, d, o, s, lc, r = cfg.runtime, cfg.data, cfg.optim, cfg.schedule, cfg.loss, cfg.run
    if rt.num_threads:
        torch.set_num_threads(rt.num_threads)
    info = setup_distributed(rt.device)
    device = resolve_device(rt.device, info.local_rank)
    torch.use_deterministic_algorithms(rt.deterministic, warn_only=True)
    run_dir = Path(r.output_dir)
    if info.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.json")
    torch.manual_seed(rt.seed)  # the same initial weights on every rank (DDP also broadcasts them)
    model, model_cfg = build_model(preset=cfg.model.preset, num_classes=len(dataset_class_names(d.dataset)),
                                   batch_norm=cfg.model.batch_norm, head_bias_prior=cfg.model.head_bias_prior,
                                   backbone_weights=cfg.model.backbone_weights,
                                   l2norm_scale=cfg.model.l2norm_scale)
    train_set, val_set, class_names = build_datasets(
        dataset=d.dataset, roots=d.roots, train_split=d.train_split, val_roots=d.val_roots, val_split=d.val_split,
        augment=d.augment, keep_difficult=d.keep_difficult, skip_bad=d.skip_bad,
        synthetic_trainval=d.synthetic_trainval, synthetic_test=d.synthetic_test, synthetic_seed=d.synthetic_seed,
        max_train_images=d.max_train_images, max_val_images=d.max_val_images, preprocess=model_cfg.preprocess,
        rank=info.rank)
    trainer = _build_trainer(cfg, model, model_cfg, train_set, val_set, class_names, device, info, run_dir)
    _resume(trainer, r.resume, run_dir, info, trust_checkpoint)
    say(info, f"training {model_cfg.name} on {len(train_set)} images, {trainer.sampler.global_batch} per step, "
               f"lr {trainer.optimizer.param_groups[0]['initial_lr']:.4g}, {trainer.total_steps} steps "
               f"({trainer.sampler.steps_per_epoch} per epoch), device {device}, world size {info.world_size}")
    try:
        summary = trainer.fit()
    finally:
        if trainer.logger is not None:
            trainer.logger.close()
    return {**summary, "run_dir": str(run_dir), "class_names": class_names}


def _build_trainer(cfg: TrainConfig, model: nn.Module, model_cfg: Any, train_set: Any, val_set: Any,
                   class_names: list[str], device: torch.device, info: DistInfo, run_dir: Path) -> Trainer:
    from ssd_torch.data.collate import collate_detection
    from ssd_torch.evaluation.evaluate import evaluate_model
    from ssd_torch.loss import multibox_loss_from_targets
    from ssd_torch.matching import match_batch
    from ssd_torch.priors import default_boxes
    rt, o, s, lc, r = cfg.runtime, cfg.optim, cfg.schedule, cfg.loss, cfg.run
    eff = effective_batch(o.batch_size, o.accumulation, info.world_size)
    optimizer = build_optimizer(model, lr=scaled_lr(o.base_lr, eff, o.reference_batch), momentum=o.momentum,
                                weight_decay=o.weight_decay, nesterov=o.nesterov)
    model = _wrap(model, device, channels_last=rt.channels_last, compile_model=rt.compile, info=info)
    sampler = StepSampler(len(train_set), o.batch_size, o.accumulation, info.world_size, info.rank, seed=rt.seed)
    lengths = schedule_lengths(iterations=s.iterations, milestones=s.milestones,
                               warmup_iterations=s.warmup_iterations, effective=eff,
                               reference_batch=o.reference_batch, epochs=s.epochs,
                               steps_per_epoch=sampler.steps_per_epoch)
    factor = build_lr_factor(kind=s.kind, total_steps=lengths.total_steps, milestones=lengths.milestones,
                             gamma=s.gamma, warmup_steps=lengths.warmup_steps, warmup_factor=s.warmup_factor,
                             min_ratio=s.min_lr_ratio)
    amp_dtype, scaler = _amp(rt.amp, device)
    priors = default_boxes(model_cfg.prior_spec, device=device)
    match_fn = functools.partial(match_batch, priors=priors, iou_threshold=lc.iou_threshold,
                                 variances=lc.variances, backend=lc.backend, validate=device.type == "cpu")
    eval_fn = functools.partial(evaluate_model, dataset=val_set, priors=priors, batch_size=r.eval_batch_size,
                                device=device, backend=lc.backend, amp_dtype=amp_dtype,
                                channels_last=rt.channels_last)
    return Trainer(
        model=model, optimizer=optimizer, scheduler=build_scheduler(optimizer, factor), scaler=scaler,
        match_fn=match_fn, loss_fn=functools.partial(multibox_loss_from_targets, neg_pos_ratio=lc.neg_pos_ratio),
        dataset=SeededDataset(train_set, rt.seed), sampler=sampler, collate_fn=collate_detection, device=device,
        total_steps=lengths.total_steps, stop_at=s.max_steps, amp_dtype=amp_dtype, channels_last=rt.channels_last,
        grad_clip=o.grad_clip, num_workers=cfg.data.num_workers, rank=info.rank,
        guard=NonFiniteGuard(max_skips=r.nan_max_skips, window=r.nan_window, amp=rt.amp),
        logger=MetricsLogger(run_dir, tensorboard=r.tensorboard) if info.rank == 0 else None,
        checkpoints=CheckpointManager(run_dir / "checkpoints", keep_last=r.keep_last),
        checkpoint_every=r.checkpoint_every, eval_fn=eval_fn, eval_every=r.eval_every,
        meta={"model_config": model_cfg.to_dict(), "class_names": class_names, "train_config": cfg.to_dict()},
        log_every=r.log_every, progress=r.progress, print_fn=lambda text: say(info, text))


def _resume(trainer: Trainer, resume: str | None, run_dir: Path, info: DistInfo, trust: bool) -> None:
    if resume is None:
        return
    path = trainer.checkpoints.latest() if resume == "auto" else Path(resume)
    if path is None:
        say(info, f"no checkpoint in {run_dir / 'checkpoints'} yet: starting from scratch")
        return
    trainer.load_state(read_checkpoint(path, trust=trust))
    say(info, f"resumed from {path} at step {trainer.step} (epoch {trainer.epoch}, "
               f"step {trainer.step_in_epoch} of the epoch)")
