"""Checkpoints of a run folder: keep-last-K rotation of ``step_XXXXXXXX.pt``, ``last.pt``, a separate
best-by-metric file, and the RNG state capture that exact resume needs. The file format itself (reader,
builder, atomic save) is ``ssd_torch.checkpoint``.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssd_torch.checkpoint import atomic_save

__all__ = ["capture_rng", "restore_rng", "CheckpointManager"]

_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


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


def _atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src``'s bytes to ``dst`` through a temp file in ``dst``'s folder and ``os.replace``."""
    from ssd_torch.files import atomic_write

    with src.open("rb") as source:
        atomic_write(dst, lambda f: shutil.copyfileobj(source, f))


class CheckpointManager:
    """``step_XXXXXXXX.pt`` files in ``directory``, the newest ``keep_last`` kept, plus ``last.pt`` (an
    independent copy of the newest: damaging one never damages the other) and ``best.pt`` (highest metric, never
    rotated away). The checkpoint a run resumed from is never rotated away (:meth:`protect`)."""

    NAMES = ("last.pt", "best.pt")
    #: the sub-folder a resume from an earlier checkpoint moves the later ones into (:meth:`set_aside`)
    ABANDONED = "abandoned-{time}"

    @classmethod
    def owns(cls, name: str) -> bool:
        """True for a file name this manager writes: ``step_<digits>.pt``, ``last.pt``, ``best.pt``, or the temp
        file of an interrupted write (:meth:`is_temp`)."""
        return bool(_STEP_FILE.match(name)) or name in cls.NAMES or cls.is_temp(name)

    @classmethod
    def is_temp(cls, name: str) -> bool:
        """The temp file of an interrupted write of one of our files (``ssd_torch.files.atomic_write``:
        ``.<name>.<random>.tmp``; ``.link`` of an earlier version)."""
        return name.startswith(".") and name.endswith((".tmp", ".link")) and name[1:].startswith(("step_", *cls.NAMES))

    def __init__(self, directory: str | Path, keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.protected: set[Path] = set()

    def step_files(self) -> list[Path]:
        """Rotated checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _STEP_FILE.match(p.name))]
        return [p for _, p in sorted(found)]

    def protect(self, path: str | Path) -> None:
        """Never rotate ``path`` away (the checkpoint this run resumed from)."""
        self.protected.add(Path(path).resolve())

    def save(self, ckpt: dict[str, Any]) -> Path:
        """Write ``step_<step>.pt`` and a copy as ``last.pt`` atomically, then delete all but the newest
        ``keep_last`` (never a protected file)."""
        path = atomic_save(ckpt, self.directory / f"step_{ckpt['step']:08d}.pt")
        _atomic_copy(path, self.directory / "last.pt")
        for old in self.step_files()[:-self.keep_last]:
            if old.resolve() not in self.protected:
                old.unlink(missing_ok=True)
        return path

    def save_best(self, ckpt: dict[str, Any]) -> Path:
        return atomic_save(ckpt, self.directory / "best.pt")

    def candidates(self) -> list[Path]:
        """What ``--resume auto`` tries, in order: ``last.pt``, then the step files newest first."""
        last = self.directory / "last.pt"
        return ([last] if last.is_file() else []) + self.step_files()[::-1]

    def latest(self) -> Path | None:
        """``last.pt`` if present, else the newest step file, else None."""
        found = self.candidates()
        return found[0] if found else None

    def set_aside(self, step: int) -> Path | None:
        """Move the step files after ``step`` (an abandoned continuation: the run resumes from an earlier
        checkpoint) and ``last.pt`` (a copy of the newest of them) into a new ``abandoned-<time>/`` sub-folder;
        returns it (None: nothing to move). Nothing is deleted; best.pt stays (it is replaced only by a better
        score)."""
        later = [p for p in self.step_files() if int(_STEP_FILE.match(p.name).group(1)) > step]
        if not later:
            return None
        folder = self.directory / self.ABANDONED.format(time=time.strftime("%Y%m%d-%H%M%S"))
        k = 1
        while folder.exists():
            folder, k = folder.with_name(f"{folder.name.split('.')[0]}.{k}"), k + 1
        folder.mkdir()
        last = self.directory / "last.pt"
        for p in later + ([last] if last.is_file() else []):
            os.replace(p, folder / p.name)
        return folder

    def remove_leftovers(self) -> list[Path]:
        """Delete the temp files of interrupted writes (a SIGKILL mid-save leaves one, checkpoint-sized);
        only names :meth:`is_temp` recognises. Returns what was removed."""
        if not self.directory.is_dir():
            return []
        found = sorted(p for p in self.directory.iterdir() if p.is_file() and self.is_temp(p.name))
        for p in found:
            p.unlink(missing_ok=True)
        return found
