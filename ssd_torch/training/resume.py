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
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence


from ssd_torch.labels import object_classes_of
from ssd_torch.errors import CheckpointError, ConfigError
from ssd_torch.modeling.predictor import config_and_classes
from ssd_torch.modeling.model_config import ModelConfig
from ssd_torch.checkpoint import read_checkpoint
from ssd_torch.training.checkpoint import CheckpointManager
from ssd_torch.training.train_config import TrainConfig
from ssd_torch.training.trainer import Trainer

__all__ = ["Change", "Resumed", "config_changes", "check_changes", "locate_checkpoint", "open_resume",
           "data_fingerprint", "data_change", "check_data", "best_score", "resume_trainer"]


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


def _read_auto(checkpoints: CheckpointManager, trust: bool, say: Callable[[str], None]) -> tuple[Path, dict] | None:
    """``--resume auto``: the newest checkpoint that loads (last.pt, then the step files newest first), saying
    which one was taken and why when it is not the first; None when there is none; a CheckpointError listing
    every failure when none loads."""
    failures = []
    for path in checkpoints.candidates():
        try:
            ckpt = read_checkpoint(path, trust=trust)
        except CheckpointError as e:
            failures.append(str(e))
            continue
        if failures:
            say(f"--resume auto: {'; '.join(failures)}; resuming from {path}, the newest checkpoint that loads")
        return path, ckpt
    if failures:
        raise CheckpointError(f"--resume auto: no checkpoint in {checkpoints.directory} loads: {'; '.join(failures)}")
    return None


def open_resume(resume: str, checkpoints: CheckpointManager, cfg: TrainConfig, class_names: Sequence[str], *,
                trust: bool, accept_changes: bool, say: Callable[[str], None] = print) -> Resumed | None:
    """Read the checkpoint to resume (``"auto"``: :func:`_read_auto`, None when there is none yet) and check
    it BEFORE anything is built: the config changes (:func:`check_changes`) and the class list, which must be
    the checkpoint's (``class_names``: this run's, ``"background"`` first)."""
    if resume == "auto":
        found = _read_auto(checkpoints, trust, say)
        if found is None:
            return None
        path, ckpt = found
    else:
        path = Path(resume)
        ckpt = read_checkpoint(path, trust=trust)
    changes = config_changes(ckpt.get("train_config") or {}, cfg)
    check_changes(changes, accept_changes)
    model_config, saved_names = config_and_classes(ckpt, path)
    if saved_names != list(class_names):
        raise ConfigError(f"--resume: {path} was trained for the classes {list(object_classes_of(saved_names))}, "
                          f"but this run's data gives {list(object_classes_of(class_names))} (data.class_names); "
                          f"resume with the data and classes the run started with, or start a new run (--init-from "
                          f"{path} keeps the classes both have)")
    return Resumed(path, ckpt, model_config, changes)


def data_fingerprint(dataset: Any, split: str = "") -> dict[str, Any] | None:
    """The training data's fingerprint record (``ssd_torch.data.fingerprint.fingerprint_record``: image ids and
    annotation content, no pixels); None for a dataset without ``annotation(i)``."""
    from ssd_torch.data.fingerprint import fingerprint_record

    return fingerprint_record(dataset, split) if hasattr(dataset, "annotation") else None


def data_change(old: dict[str, Any] | None, new: dict[str, Any] | None) -> str | None:
    """What changed between two fingerprint records, in one line (None: same data, or not recorded):
    ``ssd_torch.data.fingerprint.compare_fingerprints``."""
    from ssd_torch.data.fingerprint import compare_fingerprints

    if not isinstance(old, dict) or not isinstance(new, dict) or "ids_sha256" not in old:
        return None
    return compare_fingerprints(old, new)


def check_data(resumed: Resumed, fingerprint: dict[str, Any] | None, accept_changes: bool,
               say: Callable[[str], None]) -> None:
    """Refuse (ConfigError) to resume on training data that differs from the checkpoint's, unless
    ``accept_changes`` (then say what changed: the data order and position restart from the new data)."""
    change = data_change(resumed.checkpoint.get("extra", {}).get("data_fingerprint"), fingerprint)
    if change is None:
        return
    if not accept_changes:
        raise ConfigError(f"--resume: the training data changed since {resumed.path} was written ({change}): the "
                          f"run cannot continue exactly; restore the data, or pass --resume-with-changes to "
                          f"continue on the new data")
    say(f"resuming on changed training data ({change})")


def best_score(checkpoints: CheckpointManager) -> float:
    """The score of the run folder's best.pt (-inf when there is none or it cannot be read): a resumed run
    replaces best.pt only by a better model, whichever continuation wrote it."""
    best = checkpoints.directory / "best.pt"
    if not best.is_file():
        return -math.inf
    try:
        score = read_checkpoint(best, require_finite=False).get("metrics", {}).get("mAP")
    except CheckpointError:
        return -math.inf
    return float(score) if isinstance(score, (int, float)) and math.isfinite(score) else -math.inf


def resume_trainer(trainer: Trainer, resumed: Resumed, *, say: Callable[[str], None]) -> None:
    """Restore the trainer's state from ``resumed`` (``Trainer.load_state``; the best score is the higher of
    the checkpoint's and best.pt's), clamp a data position that the (accepted) new data no longer has, and say
    what changed."""
    trainer.load_state(resumed.checkpoint)
    if trainer.outputs.checkpoints is not None:
        trainer.best_map = max(trainer.best_map, best_score(trainer.outputs.checkpoints))
    if trainer.step_in_epoch >= trainer.sampler.steps_per_epoch:  # fewer images now (--resume-with-changes)
        say(f"the epoch of the checkpoint (step {trainer.step_in_epoch} of it) is longer than an epoch of the "
            f"changed data ({trainer.sampler.steps_per_epoch} steps): the next epoch begins")
        trainer.epoch, trainer.step_in_epoch = trainer.epoch + 1, 0
    if resumed.changes:
        say(f"resuming with changed settings: {'; '.join(map(str, resumed.changes))}")
    say(f"resumed from {resumed.path} at step {trainer.step} (epoch {trainer.epoch}, step {trainer.step_in_epoch} "
        f"of the epoch)")
