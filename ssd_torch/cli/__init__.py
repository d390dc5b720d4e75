"""Command-line tools: ``ssd-train``, ``ssd-eval``, ``ssd-detect``, ``ssd-crosscheck``, ``ssd-export``,
``ssd-report``, ``ssd-import`` (a peer's trained SSD300 file -> our checkpoint).

Each tool is a module with ``main(argv=None) -> int``, a thin shell over library functions that tests call
directly. Shared here: :func:`run_cli`, which turns a user's mistake (any ``ssd_torch.errors.UserError``: a
missing file, a bad config value, a checkpoint for another class count, an unreadable image) into one line on
stderr and exit code 2 — no traceback. A place that cannot take an output (a full disk or quota, a read-only
folder, a denied permission: ``ssd_torch.files.DISK_ERRNOS``, wherever it is met while writing) is one line too,
exit 2: what was being written and in which folder (``ssd_torch.files.disk_error_line``), what is safe on disk
and how to go on (per tool: :data:`AFTER_DISK_ERROR`). Set ``SSD_DEBUG=1`` to get the traceback anyway.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from ssd_torch.device import resolve_device
from ssd_torch.errors import UserError
from ssd_torch.files import disk_error_line

__all__ = ["UserError", "run_cli", "resolve_device", "add_trust_flag", "add_data_flags", "check_data_flags",
           "EXIT_USER_ERROR", "AFTER_DISK_ERROR"]

EXIT_USER_ERROR = 2
_FREE = "free space there (or make the folder writable), then"
#: per tool: what is safe after a disk error and how to go on (the end of :func:`run_cli`'s line)
AFTER_DISK_ERROR = {
    "ssd-train": f"the checkpoints written before are complete: {_FREE} continue the run with the same command "
                 "and --resume auto (in place of --overwrite, if given)",
    "demo": f"the checkpoints written before are complete: {_FREE} continue with the same command and --resume",
    "ssd-detect": f"the finished images are kept in detections.jsonl: {_FREE} run the same command with --resume",
    "ssd-eval": f"{_FREE} run the same command again (detections already cached are reused)",
    "ssd-export": f"{_FREE} run the same command with --overwrite (it replaces only the files it wrote)",
    "ssd-report": f"{_FREE} run the same command again, with --overwrite if it wrote a file",
}


def run_cli(body: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None, prog: str) -> int:
    """Run ``body(argv)``; a :class:`UserError`, or a disk error met while writing (module docstring), becomes
    one line ``prog: error: ...`` on stderr and exit 2."""
    try:
        return body(argv)
    except UserError as e:
        if os.environ.get("SSD_DEBUG"):
            raise
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as e:  # noqa: BLE001 - only a disk error is turned into a line; anything else goes on up
        line = disk_error_line(e)
        if line is None or os.environ.get("SSD_DEBUG"):
            raise
        after = AFTER_DISK_ERROR.get(prog, f"{_FREE} run the same command again")
        print(f"{prog}: error: {' '.join(line.split())}; {after}", file=sys.stderr)
        return EXIT_USER_ERROR


def add_trust_flag(parser: argparse.ArgumentParser) -> None:
    """``--trust-checkpoint``: the one way to unpickle a checkpoint in full (see ``ssd_torch.checkpoint``)."""
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load a checkpoint that needs more than tensors and plain containers (an old file "
                             "you trust); without it such a file is refused and nothing from it runs")


def add_data_flags(parser: argparse.ArgumentParser, *, required: bool, default_split: str, data_help: str) -> None:
    """``--data PATH...`` (VOC year folders, or one COCO instances ``.json``), ``--images DIR`` (COCO: the image
    folder) and ``--split S`` (VOC): the data flags of ``ssd-eval`` and ``ssd-crosscheck``
    (:func:`check_data_flags` applies their rules)."""
    parser.add_argument("--data", type=Path, nargs="+", required=required, default=None, metavar="PATH",
                        help=data_help)
    parser.add_argument("--images", type=Path, default=None, metavar="DIR",
                        help="COCO data: the folder that the file's file_name entries are relative to, e.g. "
                             "coco/val2017")
    parser.add_argument("--split", default=None, help=f"VOC data: ImageSets/Main split (default: {default_split})")


def check_data_flags(data: Sequence[Path], images: Optional[Path], split: Optional[str],
                     default_split: str) -> Optional[str]:
    """The rules of :func:`add_data_flags`' flags, each broken one a :class:`UserError`: COCO data is one
    ``.json`` with ``--images`` and no ``--split``; VOC data is existing folders, without ``--images``. Returns
    the VOC split (``default_split`` when not given), None for COCO data."""
    from ssd_torch.data.coco import is_coco_data

    if is_coco_data(data):
        if images is None:
            raise UserError(f"--data {data[0]} is a COCO annotation file: give --images DIR, the folder that its "
                            f"file_name entries are relative to (e.g. coco/val2017)")
        if split is not None:
            raise UserError("--split is for VOC data; a COCO annotation file is one split already")
        return None
    if images is not None:
        raise UserError("--images is for COCO data (--data instances.json); a VOC year folder holds its images")
    for root in data:
        if Path(root).suffix.lower() == ".json":
            raise UserError(f"--data {root}: a COCO annotation file is read alone (one --data file with --images "
                            f"DIR), not together with other data")
        if not Path(root).is_dir():
            raise UserError(f"data root {root} does not exist (expected a VOC year folder, e.g. VOCdevkit/VOC2007, "
                            f"or a COCO instances .json file)")
    return split or default_split
