"""Writing output files without ever damaging a user's file (the rule: a tool replaces only what it wrote).

:func:`atomic_write` writes a temporary sibling and renames it over the target, so an interrupted write leaves
either the old file or the new one, never half of one. :func:`refuse_existing` is the one message of the
inference tools (``ssd-detect``, ``ssd-export``) for "this would replace files that are already there".
:func:`file_sha256` identifies a file by its content (a checkpoint in a cache key or a resumable run).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

from ssd_torch.errors import UserError

__all__ = ["atomic_write", "atomic_write_text", "refuse_existing", "file_sha256"]

_LISTED = 3  # existing files named in a refusal; the rest are counted


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temporary file next to ``path`` (same folder, so the rename is atomic), fsync it
    and rename it to ``path``. On any exception, KeyboardInterrupt included, the temporary file is removed
    and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write` of UTF-8 ``text``."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def refuse_existing(paths: Iterable[Path], what: str, way_out: str) -> None:
    """Raise a one-line :class:`UserError` naming the files of ``paths`` that exist: ``"<what> would replace
    a, b (+N more), which already exist; <way_out>"``. Nothing happens when none exists."""
    existing = [p for p in paths if p.exists()]
    if existing:
        shown = ", ".join(str(p) for p in existing[:_LISTED])
        more = f" (+{len(existing) - _LISTED} more)" if len(existing) > _LISTED else ""
        raise UserError(f"{what} would replace {shown}{more}, which already exist{'s' if len(existing) == 1 else ''}; "
                        f"{way_out}")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
