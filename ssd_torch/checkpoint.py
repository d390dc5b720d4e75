"""Checkpoints: the ``ssd300-checkpoint/1`` format (ARCHITECTURE.md "Checkpoint format"), atomic writes,
keep-last-K rotation, a separate best-by-mAP file, and the RNG state capture that exact resume needs.

Atomic: ``torch.save`` into a temp file in the SAME folder (``os.replace`` is atomic only within one
filesystem), fsync, then ``os.replace`` onto the final name — a crash mid-write leaves the previous file intact.
"""
from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["FORMAT", "atomic_save", "build_checkpoint", "load_checkpoint", "capture_rng", "restore_rng",
           "CheckpointManager", "unwrap_model"]

FORMAT = "ssd300-checkpoint/1"
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temp file in the same folder + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Whatever went wrong (even KeyboardInterrupt), the previous checkpoint stays untouched.
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def capture_rng() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA, when initialised) RNG states."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng``."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint dict of ARCHITECTURE.md. ``class_names[0]`` must be ``"background"``; ``extra`` holds the
    engine's position (e.g. ``step_in_epoch``) and NaN-guard counters."""
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
            "rng": rng if rng is not None else capture_rng(), "train_config": train_config or {},
            "metrics": metrics or {}, "extra": extra or {}}


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check the format tag; a clear ValueError names the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        # weights_only=False: optimizer / RNG states hold numpy arrays and tuples (our own files only).
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"checkpoint {path} has format {got!r}, expected {FORMAT!r}")
    return ckpt


def _atomic_link(src: Path, dst: Path) -> None:
    """Point ``dst`` at ``src``'s content atomically: a hard link (no second write of a large file) renamed
    over ``dst``; a plain atomic copy where the filesystem has no hard links."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link")
    try:
        if tmp.exists():
            tmp.unlink()
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        if tmp.exists():
            tmp.unlink()
        atomic_save(torch.load(src, map_location="cpu", weights_only=False), dst)


class CheckpointManager:
    """``step_XXXXXXXX.pt`` files in ``directory``, the newest ``keep_last`` kept, plus ``last.pt`` (a copy of
    the newest) and ``best.pt`` (highest metric, never rotated away)."""

    def __init__(self, directory: str | Path, keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last

    def step_files(self) -> list[Path]:
        """Rotated checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _STEP_FILE.match(p.name))]
        return [p for _, p in sorted(found)]

    def save(self, ckpt: dict[str, Any]) -> Path:
        """Write ``step_<step>.pt`` and ``last.pt`` atomically, then delete all but the newest ``keep_last``."""
        path = atomic_save(ckpt, self.directory / f"step_{ckpt['step']:08d}.pt")
        _atomic_link(path, self.directory / "last.pt")
        for old in self.step_files()[:-self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def save_best(self, ckpt: dict[str, Any]) -> Path:
        return atomic_save(ckpt, self.directory / "best.pt")

    def latest(self) -> Path | None:
        """``last.pt`` if present, else the newest step file, else None."""
        last = self.directory / "last.pt"
        if last.is_file():
            return last
        files = self.step_files()
        return files[-1] if files else None
