"""Command-line tools: ``ssd-train``, ``ssd-eval``, ``ssd-detect``, ``ssd-crosscheck``, ``ssd-export``,
``ssd-report``, ``ssd-import`` (a peer's trained SSD300 file -> our checkpoint).

Each tool is a module with ``main(argv=None) -> int``, a thin shell over library functions that tests call
directly. Shared here: :func:`run_cli`, which turns a user's mistake (any ``ssd_torch.errors.UserError``: a
missing file, a bad config value, a checkpoint for another class count, an unreadable image) into one line on
stderr and exit code 2 — no traceback. Set ``SSD_DEBUG=1`` to get the traceback anyway.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from ssd_torch.device import resolve_device
from ssd_torch.errors import UserError

__all__ = ["UserError", "run_cli", "resolve_device", "add_trust_flag", "EXIT_USER_ERROR"]

EXIT_USER_ERROR = 2


def run_cli(body: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None, prog: str) -> int:
    """Run ``body(argv)``; a :class:`UserError` becomes one line ``prog: error: ...`` on stderr and exit 2."""
    try:
        return body(argv)
    except UserError as e:
        if os.environ.get("SSD_DEBUG"):
            raise
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_USER_ERROR


def add_trust_flag(parser: argparse.ArgumentParser) -> None:
    """``--trust-checkpoint``: the one way to unpickle a checkpoint in full (see ``training.checkpoint``)."""
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load a checkpoint that needs more than tensors and plain containers (an old file "
                             "you trust); without it such a file is refused and nothing from it runs")
