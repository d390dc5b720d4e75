"""Checkpoints: the ``ssd300-checkpoint/1`` format (ARCHITECTURE.md "Checkpoint format"), its one reader,
atomic writes, keep-last-K rotation, a separate best-by-mAP file, and the RNG state capture that exact resume
needs.

Safe by construction: a checkpoint holds only tensors and plain containers (dict, list, tuple, str, numbers,
None) — RNG states included — so :func:`read_checkpoint` unpickles with ``torch.load(weights_only=True)``. A
file that needs anything else (a pickled callable, a NumPy array of an old checkpoint) is refused in one line
that names the type; nothing from it runs. ``trust=True`` (the tools' ``--trust-checkpoint``) is the explicit
way to load such a file anyway.

Atomic: ``torch.save`` into a temp file in the SAME folder (``os.replace`` is atomic only within one
filesystem), fsync, then ``os.replace`` onto the final name — a crash mid-write leaves the previous file intact.
"""
from __future__ import annotations

import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssd_torch.errors import CheckpointError

__all__ = ["FORMAT", "REQUIRED_KEYS", "atomic_save", "build_checkpoint", "load_torch_file", "read_checkpoint",
           "capture_rng", "restore_rng", "CheckpointManager", "unwrap_model"]

FORMAT = "ssd300-checkpoint/1"
#: What inference needs; training checkpoints add optimizer, scheduler, scaler, RNG and position.
REQUIRED_KEYS = ("format", "model", "model_config", "class_names")
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (``ssd_torch.files.atomic_write``: temp file in the same folder
    + ``os.replace``; whatever goes wrong, even KeyboardInterrupt, the previous checkpoint stays untouched)."""
    from ssd_torch.files import atomic_write

    return atomic_write(path, lambda f: torch.save(obj, f))


def capture_rng() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA, when initialised) RNG states, as tensors and plain containers only
    (so that the checkpoint loads with ``weights_only=True``)."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state(saved: Any) -> Any:
    """The argument of ``np.random.set_state`` from :func:`capture_rng`'s form (or an old checkpoint's tuple)."""
    if not isinstance(saved, dict):
        return saved
    key = saved["key"].numpy() if isinstance(saved["key"], torch.Tensor) else np.asarray(saved["key"])
    return {"bit_generator": saved["bit_generator"], "state": {"key": key.astype(np.uint32), "pos": saved["pos"]},
            "has_gauss": saved["has_gauss"], "gauss": saved["gauss"]}


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng``."""
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
    np.random.set_state(_numpy_state(state["numpy"]))
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


def _unsafe_globals(path: Path) -> list[str]:
    """The types a weights-only load of ``path`` would refuse (read without unpickling); [] if none or unknown."""
    try:
        return sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path))))
    except Exception:  # not a zip checkpoint (a legacy or junk file)
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
        _atomic_copy(src, dst)


def _atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src``'s bytes to ``dst`` through a temp file in ``dst``'s folder and ``os.replace``."""
    from ssd_torch.files import atomic_write

    with src.open("rb") as source:
        atomic_write(dst, lambda f: shutil.copyfileobj(source, f))


class CheckpointManager:
    """``step_XXXXXXXX.pt`` files in ``directory``, the newest ``keep_last`` kept, plus ``last.pt`` (a copy of
    the newest) and ``best.pt`` (highest metric, never rotated away)."""

    NAMES = ("last.pt", "best.pt")

    @classmethod
    def owns(cls, name: str) -> bool:
        """True for a file name this manager writes: ``step_<digits>.pt``, ``last.pt``, ``best.pt``, or the temp
        file of an interrupted write (``.<name>.<...>.tmp`` / ``.link``)."""
        return bool(_STEP_FILE.match(name)) or name in cls.NAMES or (
            name.startswith(".") and name.endswith((".tmp", ".link")) and name[1:].startswith(("step_", *cls.NAMES)))

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
