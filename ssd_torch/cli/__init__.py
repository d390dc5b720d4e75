"""Command-line tools: ``ssd-eval``, ``ssd-detect``, ``ssd-crosscheck``, ``ssd-export``, ``ssd-report``.

Each tool is a module with ``main(argv=None) -> int``, a thin shell over functions that tests call directly.
Shared here: :class:`UserError` and :func:`run_cli`, which turns a user's mistake (a missing file, a checkpoint
for another class count, an unreadable image) into one line on stderr and exit code 2 — no traceback. Set
``SSD_DEBUG=1`` to get the traceback anyway.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

__all__ = ["UserError", "run_cli", "resolve_device", "EXIT_USER_ERROR"]

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input (names the problem and the file): printed without traceback."""


def run_cli(body: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None, prog: str) -> int:
    """Run ``body(argv)``; a :class:`UserError` or ``CheckpointError`` becomes ``prog: error: ...`` and exit 2."""
    from ssd_torch.inference import CheckpointError

    try:
        return body(argv)
    except (UserError, CheckpointError) as e:
        if os.environ.get("SSD_DEBUG"):
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR


def resolve_device(name: str) -> "torch.device":  # noqa: F821 - torch is imported lazily
    """``"auto"`` -> CUDA when available else CPU; anything else must name an available device."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"invalid --device {name!r} ({e})") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device
