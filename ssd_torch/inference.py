"""Load a trained SSD300 for inference from a checkpoint (ARCHITECTURE.md "Checkpoint format").

The file is read by the one checkpoint reader, ``ssd_torch.training.checkpoint.read_checkpoint`` (weights
only: loading never runs code). Four keys matter here: ``format``, ``model`` (the state dict),
``model_config`` (``ModelConfig.to_dict()``) and ``class_names`` (``"background"`` first,
``len == num_classes``). Every way a file can fail to be such a checkpoint gets a :class:`CheckpointError`
(a ``ValueError``) that names the file and the problem, so that the CLIs can print it without a traceback.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ssd_torch.errors import CheckpointError
from ssd_torch.modeling.model_config import ModelConfig
from ssd_torch.training.checkpoint import read_checkpoint

__all__ = ["CheckpointError", "check_state_dict", "load_model_for_inference"]

_MAX_LISTED = 8  # keys named in a mismatch message; the rest are counted


def _config_and_classes(ckpt: dict[str, Any], path: Path) -> tuple[ModelConfig, list[str]]:
    """The ``ModelConfig`` and class names of a checkpoint, checked against each other."""
    try:
        cfg = ModelConfig.from_dict(ckpt["model_config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: invalid model_config ({e})") from e
    names = ckpt["class_names"]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"checkpoint {path}: class_names must be a list of str, got {names!r}")
    if len(names) != cfg.num_classes:
        raise CheckpointError(f"checkpoint {path}: {len(names)} class names but model_config.num_classes = "
                              f"{cfg.num_classes} (class count mismatch)")
    if not names or names[0] != "background":
        raise CheckpointError(f"checkpoint {path}: class_names[0] must be 'background', got {names[:1]}")
    return cfg, list(names)


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def check_state_dict(model: torch.nn.Module, state: Any, source: str) -> None:
    """Raise :class:`CheckpointError` naming the keys when ``state`` does not fit ``model`` exactly.

    Missing keys, unexpected keys and shape mismatches (e.g. a conf head for another class count, or another
    preset's channel widths) are all reported, not just the first one.
    """
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: 'model' must be a state dict, got {type(state).__name__}")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {list(state[k].shape)} vs {list(v.shape)}" for k, v in expected.items()
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch (checkpoint vs model_config): {_listed(shapes)}")
    if problems:
        raise CheckpointError(f"{source}: the state dict does not match its model_config "
                              f"({'; '.join(problems)})")


def load_model_for_inference(
    path: str | Path, device: str | torch.device = "cpu", *, trust_checkpoint: bool = False
) -> tuple[torch.nn.Module, ModelConfig, list[str]]:
    """``(model in eval mode on device, ModelConfig, class_names)`` from a checkpoint file.

    The model maps ``x[B, 3, 300, 300]`` to ``(loc[B, P, 4], conf[B, P, C])`` (ssd_torch.modeling.model.SSD300).
    Raises :class:`CheckpointError` for a file that is not a checkpoint, a wrong format tag, missing keys, a
    class count that disagrees with the config, or a state dict that does not match the config.
    ``trust_checkpoint``: unpickle in full (``weights_only=False``), for an old file you trust.
    """
    from ssd_torch.modeling.model import model_from_config  # the model module is heavy; config errors come first

    path = Path(path)
    ckpt = read_checkpoint(path, trust=trust_checkpoint)
    cfg, names = _config_and_classes(ckpt, path)
    model = model_from_config(cfg)
    check_state_dict(model, ckpt["model"], f"checkpoint {path}")
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg, names
