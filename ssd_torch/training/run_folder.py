"""The run folder: what ``ssd-train`` writes there, and the rules that keep an earlier run safe.

Layout (``run.output_dir``)::

    config.json                 the config this run uses (rewritten when a resume changes a field)
    metrics.csv epochs.csv eval.csv   the logs (``metrics_log.LOG_FILES``)
    curves.png                  loss / LR / mAP curves (written at the end and on a stop)
    checkpoints/step_XXXXXXXX.pt last.pt best.pt   (``checkpoint.CheckpointManager``)
    tb/events.out.tfevents.*    tensorboard scalars (when enabled)
    detections/*.png            the demo's pictures (``python -m ssd_torch.demo``)

A new run (no ``--resume``) refuses a folder that already holds any of these (:func:`check_new_run`).
``--overwrite`` removes exactly these files, recognised by name (:func:`owned_files`), and nothing else: a
user's own file in the folder (notes, another checkpoint name) stays. ``make demo`` instead keeps the previous
run under the first free name ``<folder>.1``, ``<folder>.2``, ... (:func:`keep_previous_run`).
"""
from __future__ import annotations

import fnmatch
from pathlib import Path

from ssd_torch.errors import ConfigError
from ssd_torch.training.checkpoint import CheckpointManager
from ssd_torch.training.metrics_log import LOG_FILES, TENSORBOARD_DIR

__all__ = ["CONFIG_FILE", "CURVES_FILE", "CHECKPOINT_DIR", "DETECTIONS_DIR", "owned_files", "check_new_run",
           "remove_previous_run", "keep_previous_run", "describe_removed"]

CONFIG_FILE = "config.json"
CURVES_FILE = "curves.png"
CHECKPOINT_DIR = "checkpoints"
DETECTIONS_DIR = "detections"
#: the temp file of an interrupted atomic write (``ssd_torch.files.atomic_write``: ``.<name>.<random>.tmp``)
TEMP_PATTERN = ".*.tmp"
#: top-level files, and (folder, glob) pairs of what the tools write inside sub-folders
_TOP_FILES = (CONFIG_FILE, CURVES_FILE, *(name for name, _ in LOG_FILES.values()))
_SUB_FILES = ((TENSORBOARD_DIR, "events.out.tfevents.*"), (DETECTIONS_DIR, "*.png"))


def owned_files(run_dir: str | Path) -> list[Path]:
    """The files in ``run_dir`` that ssd-train / the demo write, recognised by name (sorted)."""
    run_dir = Path(run_dir)
    found = [run_dir / n for n in _TOP_FILES if (run_dir / n).is_file()]
    found += [p for p in run_dir.glob(TEMP_PATTERN) if p.is_file() and p.name[1:].startswith(_TOP_FILES)]
    ckpt_dir = run_dir / CHECKPOINT_DIR
    if ckpt_dir.is_dir():
        found += [p for p in ckpt_dir.iterdir() if p.is_file() and CheckpointManager.owns(p.name)]
    for sub, pattern in _SUB_FILES:
        if (run_dir / sub).is_dir():
            found += [p for p in (run_dir / sub).iterdir() if p.is_file() and fnmatch.fnmatch(p.name, pattern)]
    return sorted(found)


def _names(run_dir: Path, files: list[Path]) -> str:
    return ", ".join(str(p.relative_to(run_dir)) for p in files)


def check_new_run(run_dir: str | Path) -> None:
    """Refuse (ConfigError) to start a new run in a folder that holds an earlier run's files."""
    run_dir = Path(run_dir)
    files = owned_files(run_dir)
    if files:
        shown = _names(run_dir, files[:4]) + (f" and {len(files) - 4} more" if len(files) > 4 else "")
        raise ConfigError(f"{run_dir} already holds a run ({shown}); nothing was changed: use --resume auto to "
                          f"continue it, another --output-dir, or --overwrite to replace it (removes only the "
                          f"files ssd-train writes)")


def remove_previous_run(run_dir: str | Path) -> list[Path]:
    """Delete :func:`owned_files` (then the sub-folders they leave empty); returns what was removed."""
    run_dir = Path(run_dir)
    files = owned_files(run_dir)
    for p in files:
        p.unlink()
    for sub in (CHECKPOINT_DIR, TENSORBOARD_DIR, DETECTIONS_DIR):
        folder = run_dir / sub
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return files


def keep_previous_run(run_dir: str | Path) -> Path | None:
    """Rename a non-empty ``run_dir`` to the first free ``<run_dir>.1``, ``.2``, ...; returns the new name
    (None when there was nothing to keep). Nothing is deleted."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return None
    k = 1
    while run_dir.with_name(f"{run_dir.name}.{k}").exists():
        k += 1
    kept = run_dir.with_name(f"{run_dir.name}.{k}")
    run_dir.rename(kept)
    return kept


def describe_removed(run_dir: str | Path, files: list[Path]) -> str:
    """The one line ``--overwrite`` prints."""
    return f"--overwrite: removed {len(files)} files of the previous run in {run_dir}: {_names(Path(run_dir), files)}"
