"""The checkpoint file format ``ssd300-checkpoint/1`` (ARCHITECTURE.md "Checkpoint format"): its one reader,
its one builder, the one ``torch.load`` of the project and atomic saves. The run-folder side (rotation, best
file, RNG capture) is ``ssd_torch.training.checkpoint``; what inference reads from a checkpoint is
``ssd_torch.modeling.predictor``.

Safe by construction: a checkpoint holds only tensors and plain containers (dict, list, tuple, str, numbers,
None) — RNG states included — so :func:`read_checkpoint` unpickles with ``torch.load(weights_only=True)``. A
file that needs anything else (a pickled callable, a NumPy array of an old checkpoint) is refused in one line
that names the type; nothing from it runs. ``trust=True`` (the tools' ``--trust-checkpoint``) is the explicit
way to load such a file anyway.

Atomic: ``torch.save`` into a temp file in the SAME folder (``os.replace`` is atomic only within one
filesystem), fsync, then ``os.replace`` onto the final name — a crash mid-write leaves the previous file intact.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from ssd_torch.errors import CheckpointError

__all__ = ["FORMAT", "REQUIRED_KEYS", "atomic_save", "build_checkpoint", "load_torch_file", "read_checkpoint",
           "unwrap_model"]

FORMAT = "ssd300-checkpoint/1"
#: What inference needs; training checkpoints add optimizer, scheduler, scaler, RNG and position.
REQUIRED_KEYS = ("format", "model", "model_config", "class_names")


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (``ssd_torch.files.atomic_write``: temp file in the same folder
    + ``os.replace``; whatever goes wrong, even KeyboardInterrupt, the previous checkpoint stays untouched)."""
    from ssd_torch.files import atomic_write

    return atomic_write(path, lambda f: torch.save(obj, f))


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def build_checkpoint(*, model: torch.nn.Module, model_config: dict[str, Any], class_names: list[str], step: int,
                     epoch: int, optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                     scaler: Any = None, rng: dict[str, Any] | None = None,
                     train_config: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
                     extra: dict[str, Any] | None = None,
                     postprocess: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint dict of ARCHITECTURE.md. ``class_names[0]`` must be ``"background"``; ``rng``: the RNG
    states that exact resume restores (``ssd_torch.training.checkpoint.capture_rng``; None for a file that is
    not resumed, e.g. an import); ``extra`` holds the engine's position (e.g. ``step_in_epoch``) and NaN-guard
    counters; ``postprocess``: the post-processing settings every inference path applies
    (``ssd_torch.modeling.postprocess_config.PostprocessConfig.to_dict``; None: the contract's defaults)."""
    if not class_names or class_names[0] != "background":
        raise ValueError(f"class_names must start with 'background', got {class_names[:3]}...")
    if model_config.get("num_classes") not in (None, len(class_names)):
        raise ValueError(f"model_config num_classes={model_config.get('num_classes')} but {len(class_names)} "
                         f"class names were given")
    return {"format": FORMAT, "model": unwrap_model(model).state_dict(), "model_config": model_config,
            "class_names": list(class_names), "step": int(step), "epoch": int(epoch),
            "optimizer": None if optimizer is None else optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "scaler": None if scaler is None or not scaler.is_enabled() else scaler.state_dict(),
            "rng": rng, "train_config": train_config or {},
            "metrics": metrics or {}, "extra": extra or {}, "postprocess": dict(postprocess or {})}


def _unsafe_globals(path: Path) -> list[str]:
    """The types a weights-only load of ``path`` would refuse (read without unpickling); [] if none or unknown."""
    try:
        return sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path))))
    except Exception:  # noqa: BLE001 - not a zip checkpoint (a legacy or junk file)
        return []


def load_torch_file(path: str | Path, *, trust: bool = False, map_location: str | torch.device = "cpu") -> Any:
    """Whatever ``path`` holds, by ``torch.load`` with ``weights_only=not trust``: the one loader of every
    ``.pt`` / ``.pth`` file (our checkpoints through :func:`read_checkpoint`, peers' state dicts through
    ``ssd_torch.modeling.weights.read_state_dict``). Every failure is a :class:`CheckpointError` naming the
    file; a file that needs more than tensors and plain containers is refused with the types named, and
    nothing from it runs."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as e:
        needed = [] if trust else _unsafe_globals(path)
        if needed:
            raise CheckpointError(
                f"checkpoint {path}: refused to load, it needs {', '.join(needed)}, which an SSD300 checkpoint "
                f"never holds; nothing from the file was executed (pass --trust-checkpoint only for a file you "
                f"trust, e.g. one written before weights-only checkpoints)") from None
        raise CheckpointError(f"checkpoint {path}: not a PyTorch checkpoint ({_first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - the weights-only unpickler fails on junk in many ways (KeyError...)
        raise CheckpointError(f"checkpoint {path}: not a PyTorch checkpoint ({_first_line(e)})") from None


def _first_line(e: Exception) -> str:
    """``Type: first line`` of an exception (torch's loader errors run to several paragraphs)."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def read_checkpoint(path: str | Path, *, trust: bool = False,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The one checkpoint reader: load ``path`` (weights only, unless ``trust``) and check the format tag and
    :data:`REQUIRED_KEYS`. Every failure is a :class:`CheckpointError` naming the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path}: file not found")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: not a file")
    ckpt = load_torch_file(path, trust=trust, map_location=map_location)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict with keys {list(REQUIRED_KEYS)}, "
                              f"got a {type(ckpt).__name__}")
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: format tag {ckpt.get('format')!r}, expected {FORMAT!r} (not "
                              f"written by ssd300; import a peer's file with ssd-import)")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path}: missing keys {missing}")
    return ckpt


