"""``PostprocessConfig``: how a model's raw outputs become detections (docs/CONTRACT.md "NMS and
post-processing"), the keywords of ``ssd_torch.nms.postprocess`` other than the box coder's variances, which
belong to the model (``ModelConfig.variances``).

One object travels with the weights: training writes it into every checkpoint (the ``postprocess`` section of
the training config), importers write their peer's values, and ``ssd_torch.modeling.predictor.Predictor``, the
one inference path, reads it back. It is also the ``postprocess`` section of ``TrainConfig`` (``SECTION``,
``FIXED_ON_RESUME``), so the same validation serves a config file, a ``--set`` flag and a checkpoint.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from ssd_torch.errors import ConfigError
from ssd_torch.nms import postprocess as _postprocess
from ssd_torch.plain import dataclass_fields

__all__ = ["PostprocessConfig"]

_DEFAULTS = inspect.signature(_postprocess).parameters  # one source: ssd_torch.nms.postprocess's defaults


@dataclass(frozen=True)
class PostprocessConfig:
    """Post-processing settings (docs/CONTRACT.md "NMS and post-processing").

    score_threshold: a class candidate needs a score > this (strict; compared through the ranking key,
        docs/CONTRACT.md "Ranking key"), in [0, 1].
    top_k: the best candidates kept per class before NMS (None: no cap, as lufficc/SSD).
    nms_threshold: NMS drops a box whose IoU with a kept box of its class is > this (strict), in [0, 1].
    max_detections: the best detections kept per image (None: no cap, as ssd.pytorch).
    clip_boxes: clamp decoded boxes to [0, 1] before NMS (torchvision and ours); False: NMS on the boxes as
        decoded (ssd.pytorch, lufficc/SSD), which may then lie partly outside the image.
    Defaults: ``ssd_torch.nms.postprocess``'s own.
    """

    SECTION: ClassVar[str] = "postprocess"
    FIXED_ON_RESUME: ClassVar[frozenset[str]] = frozenset()  # read at evaluation only: any value may change
    NOT_COMPARED: ClassVar[frozenset[str]] = frozenset()

    score_threshold: float = _DEFAULTS["score_threshold"].default
    top_k: int | None = _DEFAULTS["top_k"].default
    nms_threshold: float = _DEFAULTS["nms_threshold"].default
    max_detections: int | None = _DEFAULTS["max_detections"].default
    clip_boxes: bool = _DEFAULTS["clip_boxes"].default

    def __post_init__(self) -> None:
        from reference.nms import check_limit, score_floor  # the one rule of every layer

        checks = {"score_threshold": lambda v: _is_number(v) and score_floor(v) is not None,
                  "nms_threshold": lambda v: _is_number(v) and 0.0 <= v <= 1.0,
                  "top_k": lambda v: check_limit("top_k", v) or True,
                  "max_detections": lambda v: check_limit("max_detections", v) or True,
                  "clip_boxes": lambda v: isinstance(v, bool)}
        rules = {"score_threshold": "in [0, 1]", "nms_threshold": "in [0, 1]", "top_k": "null or an int >= 1",
                 "max_detections": "null or an int >= 1", "clip_boxes": "true or false"}
        for name, check in checks.items():
            try:
                ok = check(getattr(self, name))
            except ValueError:
                ok = False
            if not ok:
                raise ConfigError(f"postprocess.{name} must be {rules[name]}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (what a checkpoint's ``postprocess`` entry holds); :meth:`from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "PostprocessConfig":
        """Fields from ``d`` (any subset; the rest default); unknown keys are a ConfigError naming them."""
        return cls(**dataclass_fields(cls, d, "postprocess", ConfigError))

    def replace(self, **changes: Any) -> "PostprocessConfig":
        """A copy with the fields in ``changes`` that are not None replaced (validated)."""
        return self.from_dict({**self.to_dict(), **{k: v for k, v in changes.items() if v is not None}})

    def postprocess_kwargs(self) -> dict[str, Any]:
        """The keywords of ``ssd_torch.nms.postprocess`` (without ``variances``: the model's)."""
        return dataclasses.asdict(self)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
