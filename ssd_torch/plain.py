"""Config dicts: ``plain`` (nested tuples -> lists, the one conversion that lets a config dict survive JSON and
``torch.load(weights_only=True)`` unchanged: ``ModelConfig.to_dict``, ``TrainConfig.to_dict``) and
``dataclass_fields`` (the one dict-to-dataclass key check of ``ModelConfig``, its ``PriorSpec``,
``Preprocess``, ``PostprocessConfig`` and ``TrainConfig``'s sections)."""
from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["plain", "dataclass_fields"]


def dataclass_fields(cls: type, d: Any, what: str, error: type[Exception] = ValueError) -> dict[str, Any]:
    """``d`` as the keyword arguments of the dataclass ``cls``: a dict with no unknown key and every required
    field; else ``error`` (``TypeError`` for a non-dict when ``error`` is ``ValueError``) naming ``what``."""
    if not isinstance(d, dict):
        raise (TypeError if error is ValueError else error)(
            f"{what} must be a dict (a JSON object), got {type(d).__name__}")
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    unknown = sorted(set(d) - names, key=str)
    if unknown:
        raise error(f"{what}: unknown keys {unknown}; known keys are {sorted(names)}")
    required = {f.name for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    missing = sorted(required - set(d))
    if missing:
        raise error(f"{what}: missing required keys {missing}")
    return dict(d)


def plain(value: Any) -> Any:
    """``value`` with every tuple or list (nested, also inside dicts) turned into a list."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value
