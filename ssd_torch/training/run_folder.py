"""The run folder: what ``ssd-train`` writes there (``ssd_torch.run_files``: the one list of names), and the
rules that keep an earlier run and a user's files safe.

- One run per folder: :func:`lock_run_folder` (``ssd_torch.files.lock_folder``) for the life of the run; a
  second run into the same folder is refused naming the PID that holds it.
- Ownership: a run writes its manifest ``written.jsonl`` (``ssd_torch.files.Journal``), claiming the names of
  ``run_files`` before writing any of them (:func:`claim_run_folder`). A file is the run's own only when the
  manifest claims it: a user's ``config.json`` in a folder without our manifest is never ours, whatever its name.
- A new run (no ``--resume``) refuses a folder that holds an earlier run's files (:func:`check_new_run`), and,
  even with ``--overwrite``, a folder where a file it would write is not its own. ``--overwrite`` removes exactly
  the files the manifest claims (:func:`remove_previous_run`); anything else in the folder stays.
- ``make demo`` instead keeps the previous run under the first free name ``<folder>.1``, ``<folder>.2``, ...
  (:func:`keep_previous_run`).
"""
from __future__ import annotations

import os
from pathlib import Path

from ssd_torch.errors import ConfigError
from ssd_torch.files import LOCK_NAME, Claims, FolderLock, Journal, check_output_path, lock_folder
from ssd_torch.run_files import (CHECKPOINT_DIR, CONFIG_FILE, CURVES_FILE, DETECTIONS_DIR, MANIFEST_FILE,
                                 MANIFEST_FORMAT, RUN_FILES, RUN_PATTERNS, TENSORBOARD_DIR)

__all__ = ["CONFIG_FILE", "CURVES_FILE", "CHECKPOINT_DIR", "DETECTIONS_DIR", "manifest", "owned_files",
           "lock_run_folder", "check_new_run", "claim_run_folder", "remove_previous_run", "check_keepable",
           "keep_previous_run", "describe_removed"]

#: every name a run may write (claimed or not): the candidates of the ownership checks
_RUN_NAMES = Claims(frozenset(RUN_FILES), RUN_PATTERNS)
_SUB_DIRS = (CHECKPOINT_DIR, TENSORBOARD_DIR, DETECTIONS_DIR)


def manifest(run_dir: str | Path) -> Journal:
    """The run folder's manifest (``written.jsonl``)."""
    return Journal(Path(run_dir) / MANIFEST_FILE, MANIFEST_FORMAT)


def _at_run_names(run_dir: Path) -> list[Path]:
    """The files in ``run_dir`` whose names a run writes (temp files of interrupted writes included)."""
    found = [p for p in run_dir.iterdir() if p.is_file()] if run_dir.is_dir() else []
    for sub in _SUB_DIRS:
        if (run_dir / sub).is_dir():
            found += [p for p in (run_dir / sub).iterdir() if p.is_file()]
    found = [p for p in found if _RUN_NAMES.owns(p.relative_to(run_dir).as_posix())]
    return sorted(found, key=lambda p: (len(p.relative_to(run_dir).parts), p))  # top-level files first


def owned_files(run_dir: str | Path) -> list[Path]:
    """The files in ``run_dir`` that its manifest claims (top-level files first); [] without our manifest."""
    run_dir = Path(run_dir)
    claims = manifest(run_dir).claims()
    return [p for p in _at_run_names(run_dir) if claims.owns(p.relative_to(run_dir).as_posix())]


def lock_run_folder(run_dir: str | Path) -> FolderLock:
    """Create and lock the run folder for this run (``ssd_torch.files.lock_folder``); a folder that is a file,
    or lies under one, is refused first."""
    return lock_folder(run_dir, "ssd-train", "--output-dir")


def _names(run_dir: Path, files: list[Path], most: int = 4) -> str:
    shown = ", ".join(str(p.relative_to(run_dir)) for p in files[:most])
    return shown + (f" and {len(files) - most} more" if len(files) > most else "")


def check_new_run(run_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse (ConfigError) to start a new run in a folder that holds an earlier run's files (unless
    ``overwrite``), or files at names a run writes that its manifest does not claim (always)."""
    run_dir = Path(run_dir)
    journal = manifest(run_dir)
    ours = owned_files(run_dir)
    foreign = [p for p in _at_run_names(run_dir) if p not in ours]
    if journal.path.exists() and journal.header() is None:
        foreign.insert(0, journal.path)
    if foreign:
        raise ConfigError(f"{run_dir} holds {_names(run_dir, foreign)}, which ssd-train did not write ({MANIFEST_FILE} "
                          f"does not claim them) and a new run would replace; nothing was changed: move them away "
                          f"or choose another --output-dir (a run folder of an earlier ssd-train version: --resume "
                          f"auto continues it)")
    if ours and not overwrite:
        raise ConfigError(f"{run_dir} already holds a run ({_names(run_dir, ours)}); nothing was changed: use "
                          f"--resume auto to continue it, another --output-dir, or --overwrite to replace it "
                          f"(removes only the files ssd-train wrote, as listed in {MANIFEST_FILE})")


def claim_run_folder(run_dir: str | Path) -> None:
    """Create the run folder and make the manifest claim every name of ``run_files`` (a new run starts a new
    manifest; a resumed run keeps its manifest, or starts one in the folder of an earlier version)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    journal = manifest(run_dir)
    claims = journal.claims()
    if journal.header() is None or set(RUN_FILES) - claims.files or set(RUN_PATTERNS) - set(claims.patterns):
        journal.start({"tool": "ssd-train", "pid": os.getpid()}, RUN_FILES, RUN_PATTERNS)


def remove_previous_run(run_dir: str | Path) -> list[Path]:
    """Delete :func:`owned_files` (then the sub-folders they leave empty); returns what was removed."""
    run_dir = Path(run_dir)
    files = owned_files(run_dir)
    for p in files:
        p.unlink()
    for sub in _SUB_DIRS:
        folder = run_dir / sub
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return files


def check_keepable(run_dir: str | Path) -> Path:
    """Refuse (one line) a run folder that :func:`keep_previous_run` could not rename: a file or a path under
    one (``ssd_torch.files.check_output_path``), the working folder, or a folder above it."""
    run_dir = check_output_path(run_dir, "--output-dir", folder=True)
    cwd = Path.cwd().resolve()
    if run_dir.resolve() == cwd or run_dir.resolve() in cwd.parents:
        raise ConfigError(f"--output-dir {run_dir} is the working folder (or holds it): the demo keeps an earlier "
                          f"run by renaming its folder; choose a sub-folder, e.g. --output-dir runs/demo")
    return run_dir


def keep_previous_run(run_dir: str | Path) -> Path | None:
    """Rename a non-empty ``run_dir`` to the first free ``<run_dir>.1``, ``.2``, ...; returns the new name
    (None when there was nothing to keep). Nothing is deleted. Refused (one line) while another run holds the
    folder, and for the working folder or a folder above it (which cannot be renamed from inside)."""
    run_dir = check_keepable(run_dir)
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return None
    with lock_folder(run_dir, "demo", "--output-dir"):
        k = 1
        while run_dir.with_name(f"{run_dir.name}.{k}").exists():
            k += 1
        kept = run_dir.with_name(f"{run_dir.name}.{k}")
        run_dir.rename(kept)
        (kept / LOCK_NAME).unlink(missing_ok=True)  # the lock travelled with the folder; we still hold it
    return kept


def describe_removed(run_dir: str | Path, files: list[Path]) -> str:
    """The one line ``--overwrite`` prints."""
    return f"--overwrite: removed {len(files)} files of the previous run in {run_dir}: {_names(run_dir, files, 99)}"
