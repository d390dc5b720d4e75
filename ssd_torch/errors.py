"""The error contract shared by the library and every command-line tool.

A :class:`UserError` is a problem with the user's input, not a bug: its message is one line that names the
problem, the file (or flag) and the fix. ``ssd_torch.cli.run_cli`` prints it as ``<tool>: error: <message>``
and exits 2, without a traceback. The subclasses are also ``ValueError`` so that library callers can catch
them as such.
"""
from __future__ import annotations

import os
from typing import Optional, Union

__all__ = ["UserError", "ConfigError", "CheckpointError", "DatasetError"]


class UserError(Exception):
    """A problem with the user's input; ``str(err)`` is one line naming the problem, the file and the fix."""


class ConfigError(UserError, ValueError):
    """An invalid configuration value, file or override (the message names the field)."""


class CheckpointError(UserError, ValueError):
    """A file that is not a usable SSD300 checkpoint, or one that is refused (the message names the file)."""


class DatasetError(UserError, ValueError):
    """A bad data file: ``str(err)`` is ``"<path>: <problem>"``; ``err.path`` and ``err.reason`` hold the parts.

    ``DatasetError(message)`` (one argument) is accepted too, so that ``DataLoader`` can re-raise a worker's
    error in the main process as a ``DatasetError`` whose message still names the file.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], reason: Optional[str] = None) -> None:
        super().__init__(str(path) if reason is None else f"{path}: {reason}")
        self.path = str(path)
        self.reason = "" if reason is None else reason
