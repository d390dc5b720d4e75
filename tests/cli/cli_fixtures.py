"""Shared builders for the CLI tests: a tiny checkpoint (slim preset, few classes) written in the documented format."""
from __future__ import annotations

from pathlib import Path

import torch

from ssd_torch.modeling.model_config import ssd300_slim
from ssd_torch.modeling.model import model_from_config

try:  # the training helper's writer when present; else the documented dict (ARCHITECTURE.md "Checkpoint format")
    from ssd_torch.checkpoint import atomic_save, build_checkpoint
except ImportError:  # pragma: no cover - depends on the build order of the tree
    build_checkpoint = None


def tiny_checkpoint_dict(class_names: list[str], seed: int = 0, batch_norm: bool = True) -> dict:
    """A checkpoint dict of a randomly initialised slim SSD300 for ``class_names`` (background first)."""
    torch.manual_seed(seed)
    cfg = ssd300_slim(num_classes=len(class_names), batch_norm=batch_norm)
    model = model_from_config(cfg)
    if build_checkpoint is not None:
        return build_checkpoint(model=model, model_config=cfg.to_dict(), class_names=class_names, step=0, epoch=0)
    return {"format": "ssd300-checkpoint/1", "model": model.state_dict(), "model_config": cfg.to_dict(),
            "class_names": list(class_names), "step": 0, "epoch": 0, "optimizer": None, "scheduler": None,
            "scaler": None, "rng": {}, "train_config": {}, "metrics": {}}


def save_checkpoint(ckpt: dict, path: Path) -> Path:
    if build_checkpoint is not None:
        return atomic_save(ckpt, path)
    torch.save(ckpt, path)
    return path


def write_tiny_checkpoint(path: Path, class_names: list[str], seed: int = 0) -> Path:
    return save_checkpoint(tiny_checkpoint_dict(class_names, seed), path)
