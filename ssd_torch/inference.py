"""Load a trained SSD300 for inference from a checkpoint (ARCHITECTURE.md "Checkpoint format").

The file is read by the one checkpoint reader, ``ssd_torch.training.checkpoint.read_checkpoint`` (weights
only: loading never runs code). Four keys matter here: ``format``, ``model`` (the state dict),
``model_config`` (``ModelConfig.to_dict()``) and ``class_names`` (``"background"`` first,
``len == num_classes``); a fifth is optional: ``postprocess``, a dict of :class:`PostprocessConfig` fields
(``score_threshold``, ``top_k``, ``nms_threshold``, ``max_detections``, ``variances``) that the model should be
post-processed with; missing fields, or a missing key, take the contract's defaults (docs/CONTRACT.md "NMS and
post-processing"). Every way a file can fail to be such a checkpoint gets a :class:`CheckpointError`
(a ``ValueError``) that names the file and the problem, so that the CLIs can print it without a traceback.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ssd_torch.errors import CheckpointError
from ssd_torch.modeling.model_config import ModelConfig
from ssd_torch.nms import postprocess as _postprocess
from ssd_torch.training.checkpoint import read_checkpoint

__all__ = ["CheckpointError", "PostprocessConfig", "InferenceCheckpoint", "check_state_dict", "config_and_classes",
           "load_checkpoint_for_inference", "load_model_for_inference"]

_MAX_LISTED = 8  # keys named in a mismatch message; the rest are counted
_DEFAULTS = inspect.signature(_postprocess).parameters  # one source: ssd_torch.nms.postprocess's defaults


@dataclass(frozen=True)
class PostprocessConfig:
    """How raw outputs become detections (``ssd_torch.nms.postprocess``'s keywords; docs/CONTRACT.md "NMS and
    post-processing"). Defaults are ``postprocess``'s own: candidates with score > 0.01 (strict), the 400 best
    per class, NMS at IoU > 0.45, the 200 best per image, variances (0.1, 0.2)."""

    score_threshold: float = _DEFAULTS["score_threshold"].default
    top_k: int = _DEFAULTS["top_k"].default
    nms_threshold: float = _DEFAULTS["nms_threshold"].default
    max_detections: int = _DEFAULTS["max_detections"].default
    variances: tuple[float, float] = tuple(_DEFAULTS["variances"].default)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        v = self.variances
        if isinstance(v, (str, bytes)) or not hasattr(v, "__len__") or len(v) != 2:
            raise ValueError(f"postprocess.variances must be two positive numbers, got {v!r}")
        object.__setattr__(self, "variances", (float(v[0]), float(v[1])))
        checks = {"score_threshold": 0.0 <= self.score_threshold < 1.0,
                  "nms_threshold": 0.0 <= self.nms_threshold <= 1.0, "top_k": _is_int(self.top_k) and self.top_k >= 1,
                  "max_detections": _is_int(self.max_detections) and self.max_detections >= 1,
                  "variances": min(self.variances) > 0}
        limits = {"score_threshold": "in [0, 1)", "nms_threshold": "in [0, 1]", "top_k": "an int >= 1",
                  "max_detections": "an int >= 1", "variances": "two positive numbers"}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"postprocess.{name} must be {limits[name]}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values; :meth:`from_dict` inverts it."""
        return {**dataclasses.asdict(self), "variances": list(self.variances)}

    @classmethod
    def from_dict(cls, d: Any) -> "PostprocessConfig":
        """Fields from ``d`` (any subset; the rest default); unknown keys are a ValueError naming them."""
        if not isinstance(d, dict):
            raise ValueError(f"postprocess must be a dict, got {type(d).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown postprocess keys {unknown}; known keys are {known}")
        return cls(**d)

    def replace(self, **changes: Any) -> "PostprocessConfig":
        """A copy with the fields in ``changes`` that are not None replaced (validated)."""
        return self.from_dict({**self.to_dict(), **{k: v for k, v in changes.items() if v is not None}})

    def postprocess_kwargs(self) -> dict[str, Any]:
        """The keywords of ``ssd_torch.nms.postprocess``."""
        return dataclasses.asdict(self)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class InferenceCheckpoint(NamedTuple):
    """What inference needs from a checkpoint: the model (eval mode, on its device), its config (preprocessing,
    priors), the class names (``"background"`` first) and the post-processing settings."""

    model: torch.nn.Module
    config: ModelConfig
    class_names: list[str]
    postprocess: PostprocessConfig


def config_and_classes(ckpt: dict[str, Any], path: str | Path) -> tuple[ModelConfig, list[str]]:
    """The ``ModelConfig`` and class names (``"background"`` first) of a checkpoint dict read from ``path``
    (:func:`~ssd_torch.training.checkpoint.read_checkpoint`), checked against each other: the one reading of
    a checkpoint's model description (inference and ``ssd_torch.modeling.finetune``). A
    :class:`CheckpointError` names the file and the problem."""
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


def _postprocess_of(ckpt: dict[str, Any], path: Path) -> PostprocessConfig:
    """The checkpoint's optional ``postprocess`` dict as a :class:`PostprocessConfig` (defaults without one)."""
    try:
        return PostprocessConfig.from_dict(ckpt.get("postprocess") or {})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: invalid 'postprocess' ({e})") from e


def load_checkpoint_for_inference(path: str | Path, device: str | torch.device = "cpu", *,
                                  trust_checkpoint: bool = False) -> InferenceCheckpoint:
    """The model (eval mode, on ``device``), config, class names and post-processing settings of a checkpoint.

    The model maps ``x[B, 3, 300, 300]`` to ``(loc[B, P, 4], conf[B, P, C])`` (ssd_torch.modeling.model.SSD300).
    Raises :class:`CheckpointError` for a file that is not a checkpoint, a wrong format tag, missing keys, a
    class count that disagrees with the config, a state dict that does not match the config, or an invalid
    ``postprocess`` entry. ``trust_checkpoint``: unpickle in full (``torch.load`` without ``weights_only``),
    for an old file you trust.
    """
    from ssd_torch.modeling.model import model_from_config  # the model module is heavy; config errors come first

    path = Path(path)
    ckpt = read_checkpoint(path, trust=trust_checkpoint)
    cfg, names = config_and_classes(ckpt, path)
    post = _postprocess_of(ckpt, path)
    model = model_from_config(cfg)
    check_state_dict(model, ckpt["model"], f"checkpoint {path}")
    model.load_state_dict(ckpt["model"])
    return InferenceCheckpoint(model.to(device).eval(), cfg, names, post)


def load_model_for_inference(
    path: str | Path, device: str | torch.device = "cpu", *, trust_checkpoint: bool = False
) -> tuple[torch.nn.Module, ModelConfig, list[str]]:
    """``(model in eval mode on device, ModelConfig, class_names)``: :func:`load_checkpoint_for_inference`
    without the post-processing settings (same errors)."""
    loaded = load_checkpoint_for_inference(path, device, trust_checkpoint=trust_checkpoint)
    return loaded.model, loaded.config, loaded.class_names
