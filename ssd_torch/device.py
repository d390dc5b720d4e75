"""The one device resolver of every tool and of training: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

``auto`` is CUDA when torch can use it, else the CPU; ``cuda`` is the process's own GPU under DDP (``LOCAL_RANK``,
passed as ``local_rank``). A device that this machine lacks is a one-line :class:`ssd_torch.errors.ConfigError`.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ssd_torch.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["DEVICE_NAMES", "check_device_name", "resolve_device"]

#: What a device setting may say (``--device``, ``runtime.device``).
DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"(auto|cpu|cuda(:\d+)?)")


def check_device_name(name: object, what: str = "--device") -> None:
    """Raise :class:`ConfigError` unless ``name`` is one of :data:`DEVICE_NAMES` (the machine is not asked)."""
    if not isinstance(name, str) or not _DEVICE.fullmatch(name):
        raise ConfigError(f"{what} must be {DEVICE_NAMES}, got {name!r}")


def resolve_device(name: str = "auto", local_rank: int = 0, what: str = "--device") -> "torch.device":
    """The ``torch.device`` for ``name``; ``auto`` and ``cuda`` take GPU ``local_rank`` (DDP's ``LOCAL_RANK``).
    ``what`` names the setting in messages: ``"--device"`` for the tools, ``"device"`` for the Python API."""
    import torch

    check_device_name(name, what)
    said = f"--device {name}" if what.startswith("--") else f"{what}={name!r}"
    use = (lambda v: f"--device {v}") if what.startswith("--") else (lambda v: f"{what}={v!r}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"{said}: CUDA is not available on this machine (use {use('cpu')} or {use('auto')})")
    index = int(name.split(":")[1]) if ":" in name else local_rank
    if index >= torch.cuda.device_count():
        raise ConfigError(f"{said}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"cuda:0 .. cuda:{torch.cuda.device_count() - 1} (use one of them, or {use('cpu')})")
    return torch.device("cuda", index)
