"""Resuming a run: find the checkpoint, list every setting that differs from the checkpoint's, refuse the
changes that cannot happen mid-run, restore the state.

A checkpoint stores the ``train_config`` it was trained with. On resume each differing field is listed
(``section.field: old -> new``). Fields in a section's ``FIXED_ON_RESUME`` (the model, the data order, the
schedule and LR, the objective) refuse to change unless ``accept_changes`` (``--resume-with-changes``); the
effective batch can never change (the data position would not map). An accepted change takes effect: the
trainer keeps the optimizer hyperparameters and the LR schedule of the CURRENT config
(``Trainer.load_state``), and ``config.json`` is rewritten with it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ssd_torch.errors import ConfigError
from ssd_torch.training.checkpoint import CheckpointManager, read_checkpoint
from ssd_torch.training.train_config import TrainConfig
from ssd_torch.training.trainer import Trainer

__all__ = ["Change", "config_changes", "check_changes", "resume_trainer"]


@dataclass(frozen=True)
class Change:
    """One field whose value differs from the checkpoint's; ``fixed``: it cannot change mid-run."""

    field: str
    old: Any
    new: Any
    fixed: bool

    def __str__(self) -> str:
        return f"{self.field}: {json.dumps(self.old)} -> {json.dumps(self.new)}"


def config_changes(saved: dict[str, Any], cfg: TrainConfig) -> list[Change]:
    """The fields of ``cfg`` that differ from ``saved`` (a checkpoint's ``train_config`` dict); fields the
    saved config does not have (written by an older version) are not compared."""
    new = cfg.to_dict()
    changes = []
    for name, section in cfg.sections().items():
        old = saved.get(name)
        if not isinstance(old, dict):
            continue
        for key, value in new[name].items():
            if key in old and old[key] != value and key not in section.NOT_COMPARED:
                changes.append(Change(f"{name}.{key}", old[key], value, key in section.FIXED_ON_RESUME))
    return changes


def check_changes(changes: list[Change], accept_changes: bool) -> None:
    """Raise a one-line ConfigError listing the fixed changes, unless ``accept_changes``."""
    fixed = [c for c in changes if c.fixed]
    if fixed and not accept_changes:
        others = [c for c in changes if not c.fixed]
        raise ConfigError(
            f"--resume: these settings differ from the checkpoint's and cannot change mid-run: "
            f"{'; '.join(map(str, fixed))}" + (f" (also changed: {'; '.join(map(str, others))})" if others else "")
            + ". Pass --resume-with-changes to apply them anyway, or start a new run in another --output-dir")


def resume_trainer(trainer: Trainer, resume: str, checkpoints: CheckpointManager, cfg: TrainConfig, *,
                   trust: bool, accept_changes: bool, say: Callable[[str], None]) -> Path | None:
    """Load ``resume`` (a path, or ``"auto"``: the latest checkpoint in ``checkpoints``, if any) into
    ``trainer`` after checking the config changes; returns the checkpoint's path (None: none yet)."""
    path = checkpoints.latest() if resume == "auto" else Path(resume)
    if path is None:
        say(f"no checkpoint in {checkpoints.directory} yet: starting from scratch")
        return None
    ckpt = read_checkpoint(path, trust=trust)
    changes = config_changes(ckpt.get("train_config") or {}, cfg)
    check_changes(changes, accept_changes)
    trainer.load_state(ckpt)
    if changes:
        say(f"resuming with changed settings: {'; '.join(map(str, changes))}")
    say(f"resumed from {path} at step {trainer.step} (epoch {trainer.epoch}, step {trainer.step_in_epoch} of "
        f"the epoch)")
    return path
