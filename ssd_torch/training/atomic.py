"""``atomic_file``: write a file so that a crash or Ctrl-C mid-write leaves the previous version intact.

The data goes to a temp file in the SAME folder (``os.replace`` is atomic only within one filesystem), is
flushed and fsync'ed, then renamed over the final name. Temp names are ``.<name>.<random>.tmp``
(``run_folder`` recognises leftovers of a killed process by that pattern).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_file", "TEMP_PATTERN"]

#: glob of the temp files ``atomic_file`` creates (left behind only by a killed process)
TEMP_PATTERN = ".*.tmp"


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file next to ``path`` for writing (``mode`` "wb" or "w"); on normal exit it replaces
    ``path``, on any exception (KeyboardInterrupt included) it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"newline": ""} if "b" not in mode else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
