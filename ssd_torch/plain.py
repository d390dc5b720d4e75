"""``plain``: nested tuples -> lists, the one conversion that lets a config dict survive JSON and
``torch.load(weights_only=True)`` unchanged (``ModelConfig.to_dict``, ``TrainConfig.to_dict``)."""
from __future__ import annotations

from typing import Any

__all__ = ["plain"]


def plain(value: Any) -> Any:
    """``value`` with every tuple or list (nested, also inside dicts) turned into a list."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value
