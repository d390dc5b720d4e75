"""Resuming a run: find the checkpoint, list every setting that differs from the checkpoint's, refuse the
changes that cannot happen mid-run, restore the state.

A checkpoint stores the ``train_config`` it was trained with. On resume each differing field is listed
(``section.field: old -> new``). Fields in a section's ``FIXED_ON_RESUME`` (the model, the data order, the
schedule and LR, the objective) refuse to change unless ``accept_changes`` (``--resume-with-changes``); the
effective batch can never change (the data position would not map). An accepted change takes effect: the
trainer keeps the optimizer hyperparameters and the LR schedule of the CURRENT config
(``Trainer.load_state``), and ``config.json`` is rewritten with it. The class list can never change (the conf
heads' shape and meaning); the starting weights (backbone, ``model.init_from``) are not loaded again: the
checkpoint holds every weight, and its input convention (and the priors of a run started from ``init_from``)
are the run's (``model_setup.build_model``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ssd_torch.errors import ConfigError
from ssd_torch.modeling.predictor import config_and_classes
from ssd_torch.modeling.model_config import ModelConfig
from ssd_torch.checkpoint import read_checkpoint
from ssd_torch.training.checkpoint import CheckpointManager
from ssd_torch.training.train_config import TrainConfig
from ssd_torch.training.trainer import Trainer

__all__ = ["Change", "Resumed", "config_changes", "check_changes", "locate_checkpoint", "open_resume",
           "resume_trainer"]


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


@dataclass(frozen=True)
class Resumed:
    """The checkpoint a run continues from: its path, its dict, its ``ModelConfig`` and the settings that
    differ from it."""

    path: Path
    checkpoint: dict[str, Any]
    model_config: ModelConfig
    changes: list[Change]


def locate_checkpoint(resume: str, checkpoints: CheckpointManager) -> Path | None:
    """``resume`` as a path: ``"auto"`` is the latest checkpoint in ``checkpoints`` (None: none yet)."""
    return checkpoints.latest() if resume == "auto" else Path(resume)


def open_resume(resume: str, checkpoints: CheckpointManager, cfg: TrainConfig, class_names: Sequence[str], *,
                trust: bool, accept_changes: bool) -> Resumed | None:
    """Read the checkpoint to resume (:func:`locate_checkpoint`; None when ``"auto"`` finds none yet) and check
    it BEFORE anything is built: the config changes (:func:`check_changes`) and the class list, which must be
    the checkpoint's (``class_names``: this run's, ``"background"`` first)."""
    path = locate_checkpoint(resume, checkpoints)
    if path is None:
        return None
    ckpt = read_checkpoint(path, trust=trust)
    changes = config_changes(ckpt.get("train_config") or {}, cfg)
    check_changes(changes, accept_changes)
    model_config, saved_names = config_and_classes(ckpt, path)
    if saved_names != list(class_names):
        raise ConfigError(f"--resume: {path} was trained for the classes {saved_names[1:]}, but this run's data "
                          f"gives {list(class_names[1:])} (data.class_names); resume with the data and classes "
                          f"the run started with, or start a new run (--init-from {path} keeps the classes both "
                          f"have)")
    return Resumed(path, ckpt, model_config, changes)


def resume_trainer(trainer: Trainer, resumed: Resumed, *, say: Callable[[str], None]) -> None:
    """Restore the trainer's state from ``resumed`` (``Trainer.load_state``) and say what changed."""
    trainer.load_state(resumed.checkpoint)
    if resumed.changes:
        say(f"resuming with changed settings: {'; '.join(map(str, resumed.changes))}")
    say(f"resumed from {resumed.path} at step {trainer.step} (epoch {trainer.epoch}, step {trainer.step_in_epoch} "
        f"of the epoch)")
