"""Model configuration: a frozen ``ModelConfig`` plus the ``ssd300_vgg16`` and ``ssd300_slim`` presets.

The config is the single description of a network that checkpoints store (``to_dict`` / ``from_dict``);
``ssd_torch.modeling.model.model_from_config`` is the one place that unpacks it into ``SSD300``'s keyword arguments.
Both presets share the contract's prior layout (``reference.priors.SSD300``: maps 38/19/10/5/3/1 at 300x300,
4/6/6/6/4/4 boxes per cell, 8732 priors); they differ only in channel widths and normalisation.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from reference.coding import check_variances
from reference.priors import SSD300 as SSD300_SPEC
from reference.priors import PriorSpec, boxes_per_cell, num_priors
from ssd_torch.data.preprocess import IMAGENET, Preprocess
from ssd_torch.plain import dataclass_fields
from ssd_torch.plain import plain as _plain

__all__ = ["ModelConfig", "ssd300_vgg16", "ssd300_slim", "PRESETS", "VGG16_BASE", "VGG16_EXTRAS"]

#: VGG16 conv widths, one tuple per stage (conv1_x .. conv5_x); a 2x2 max-pool follows stages 1-4.
VGG16_BASE: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
#: ssd.pytorch extras conv8..conv11 as (1x1 bottleneck width, 3x3 output width).
VGG16_EXTRAS: tuple[tuple[int, int], ...] = ((256, 512), (128, 256), (128, 256), (128, 256))
#: The only feature-map sizes the fixed SSD300 topology produces from a 300x300 input.
_SSD300_MAPS = (38, 19, 10, 5, 3, 1)


def _int_tuple(name: str, value: Any) -> tuple[int, ...]:
    """``value`` as a tuple of positive ints, or a ValueError naming the field."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"ModelConfig.{name} must be a sequence of positive ints, got {value!r}")
    out = tuple(value)
    if not out or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in out):
        raise ValueError(f"ModelConfig.{name} must be a non-empty sequence of positive ints, got {value!r}")
    return out


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build an ``SSD300`` (SSD paper §2.1, Fig. 2; docs/CONTRACT.md "Default boxes").

    name: preset name (informational, stored in checkpoints).
    num_classes: C including background (label 0); VOC: 21.
    image_size: input side in pixels; the topology is the SSD300 one, so only 300 is accepted.
    prior_spec: the default-box layout (a ``reference.priors.PriorSpec``); ``feature_maps`` must be
        38/19/10/5/3/1 (what the network produces) and its boxes per cell must equal ``head_boxes``.
    base_channels: conv widths per VGG stage (5 stages; 2x2 pools after stages 1-4, pool3 in ceil mode).
    fc_channels: widths of fc6 (3x3 conv, dilation 6) and fc7 (1x1 conv).
    extra_channels: 4 pairs (1x1 width, 3x3 width) for conv8..conv11 (maps 10, 5, 3, 1).
    head_boxes: boxes per cell of each source map (4, 6, 6, 6, 4, 4).
    l2norm_scale: initial per-channel scale of the L2Norm on conv4_3 (SSD paper §3.1 / ParseNet: 20).
    batch_norm: BatchNorm after every backbone and extra conv (the VGG16 preset: False).
    strided_stem: conv1_1 with stride 2 replaces pool1 (same map sizes; stage 1 runs at 150x150, not 300x300).
    head_bias_prior: if set, the initial softmax probability of background at every prior (conf biases
        initialised so that softmax gives it; e.g. 0.99). None: zero biases, as ssd.pytorch.
    preprocess: the input convention the weights expect (``ssd_torch.data.preprocess``); every consumer reads
        it from here. A ``model_config`` without it reads as the default (ImageNet RGB).
    variances: the box coder's ``(v0, v1)`` (docs/CONTRACT.md "Encoding"): the loss encodes its targets and
        the one inference path decodes with these, so they travel with the weights. torchvision's
        ``BoxCoder(weights=(10, 10, 5, 5))`` is ``(0.1, 0.2)``. A ``model_config`` without them reads as
        ``(0.1, 0.2)``.
    """

    name: str
    num_classes: int
    prior_spec: PriorSpec = SSD300_SPEC
    image_size: int = 300
    base_channels: tuple[tuple[int, ...], ...] = VGG16_BASE
    fc_channels: tuple[int, int] = (1024, 1024)
    extra_channels: tuple[tuple[int, int], ...] = VGG16_EXTRAS
    head_boxes: tuple[int, ...] = (4, 6, 6, 6, 4, 4)
    l2norm_scale: float = 20.0
    batch_norm: bool = False
    strided_stem: bool = False
    head_bias_prior: float | None = None
    preprocess: Preprocess = IMAGENET
    variances: tuple[float, float] = (0.1, 0.2)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # normalise lists (e.g. from JSON) to tuples: hashable, truly frozen
        set_(self, "base_channels", tuple(_int_tuple(f"base_channels[{i}]", s)
                                          for i, s in enumerate(_seq("base_channels", self.base_channels))))
        set_(self, "fc_channels", _int_tuple("fc_channels", self.fc_channels))
        set_(self, "extra_channels", tuple(_int_tuple(f"extra_channels[{i}]", s)
                                           for i, s in enumerate(_seq("extra_channels", self.extra_channels))))
        set_(self, "head_boxes", _int_tuple("head_boxes", self.head_boxes))
        set_(self, "l2norm_scale", float(self.l2norm_scale))
        try:
            set_(self, "variances", check_variances(self.variances))
        except TypeError as e:
            raise ValueError(f"ModelConfig.variances: {e}") from e
        except ValueError as e:
            raise ValueError(f"ModelConfig.{e}") from e
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"ModelConfig.name must be a non-empty str, got {self.name!r}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ValueError(f"ModelConfig.num_classes must be an int >= 2 (background + 1), got {self.num_classes!r}")
        if self.image_size != 300:
            raise ValueError(f"ModelConfig.image_size must be 300 (fixed SSD300 topology), got {self.image_size!r}")
        if not isinstance(self.prior_spec, PriorSpec):
            raise TypeError(f"ModelConfig.prior_spec must be a reference.priors.PriorSpec, got {type(self.prior_spec)}")
        if tuple(self.prior_spec.feature_maps) != _SSD300_MAPS:
            raise ValueError(f"ModelConfig.prior_spec.feature_maps must be {_SSD300_MAPS} (what the SSD300 network "
                             f"produces at 300x300), got {self.prior_spec.feature_maps}")
        if list(self.head_boxes) != boxes_per_cell(self.prior_spec):
            raise ValueError(f"ModelConfig.head_boxes {self.head_boxes} must equal the prior spec's boxes per cell "
                             f"{tuple(boxes_per_cell(self.prior_spec))}")
        lengths = {"base_channels": (len(self.base_channels), 5), "fc_channels": (len(self.fc_channels), 2),
                   "extra_channels": (len(self.extra_channels), 4)}
        for field, (got, want) in lengths.items():
            if got != want:
                raise ValueError(f"ModelConfig.{field} needs {want} entries, got {got}")
        if any(len(pair) != 2 for pair in self.extra_channels):
            raise ValueError(f"ModelConfig.extra_channels entries must be (1x1 width, 3x3 width), "
                             f"got {self.extra_channels}")
        for flag in ("batch_norm", "strided_stem"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"ModelConfig.{flag} must be a bool, got {getattr(self, flag)!r}")
        if not self.l2norm_scale > 0:
            raise ValueError(f"ModelConfig.l2norm_scale must be > 0, got {self.l2norm_scale}")
        if not isinstance(self.preprocess, Preprocess):
            raise TypeError(f"ModelConfig.preprocess must be a Preprocess, got {type(self.preprocess).__name__}")
        p = self.head_bias_prior
        if p is not None and not (isinstance(p, (int, float)) and not isinstance(p, bool) and 0.0 < p < 1.0):
            raise ValueError(f"ModelConfig.head_bias_prior must be None or a probability in (0, 1), got {p!r}")

    @property
    def num_priors(self) -> int:
        """P, the number of priors (rows of the model's outputs); 8732 for both presets."""
        return num_priors(self.prior_spec)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (lists, numbers, strings, None) for checkpoints; ``from_dict`` inverts it exactly."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["prior_spec"] = {f.name: _plain(getattr(self.prior_spec, f.name)) for f in dataclasses.fields(PriorSpec)}
        d["preprocess"] = self.preprocess.to_dict()
        return {k: _plain(v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Inverse of ``to_dict``; unknown or missing keys (also inside ``prior_spec``) raise ValueError."""
        kwargs = dataclass_fields(cls, d, "ModelConfig.from_dict")
        spec = kwargs.get("prior_spec", None)
        if isinstance(spec, dict):
            kwargs["prior_spec"] = PriorSpec(**dataclass_fields(PriorSpec, spec, "ModelConfig.prior_spec"))
        elif spec is not None and not isinstance(spec, PriorSpec):
            raise TypeError(f"ModelConfig.prior_spec must be a dict (from to_dict), got {type(spec).__name__}")
        if isinstance(kwargs.get("preprocess"), dict):
            kwargs["preprocess"] = Preprocess.from_dict(kwargs["preprocess"])
        return cls(**kwargs)


def _seq(name: str, value: Any) -> tuple:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"ModelConfig.{name} must be a sequence, got {value!r}")
    return tuple(value)


def ssd300_vgg16(num_classes: int = 21) -> ModelConfig:
    """The paper / ssd.pytorch SSD300 (VGG16 base, no BatchNorm): 26,285,486 parameters for VOC (C = 21)."""
    return ModelConfig(name="ssd300_vgg16", num_classes=num_classes)


#: Narrow widths for the slim preset: one conv per stage, 1/4-1/8 of VGG16's widths, so that a training step
#: (batch 16, 300x300) takes well under a second on a 2-core CPU; with ``strided_stem`` nothing runs at 300x300.
SLIM_BASE: tuple[tuple[int, ...], ...] = ((16,), (16,), (32,), (64,), (64,))
SLIM_FC: tuple[int, int] = (64, 64)
SLIM_EXTRAS: tuple[tuple[int, int], ...] = ((32, 64), (16, 32), (16, 32), (16, 32))


def ssd300_slim(num_classes: int = 21, batch_norm: bool = True) -> ModelConfig:
    """Same geometry as ``ssd300_vgg16`` (maps 38/19/10/5/3/1, 8732 priors) with narrow channels for CPU training.

    BatchNorm after every conv (fast convergence from scratch) and a stride-2 conv1_1 instead of pool1.
    ``batch_norm=False`` gives a network without batch statistics (e.g. for gradient-accumulation tests,
    where a batch split in micro-batches must give the same gradient as the whole batch).
    """
    return ModelConfig(name="ssd300_slim", num_classes=num_classes, base_channels=SLIM_BASE, fc_channels=SLIM_FC,
                       extra_channels=SLIM_EXTRAS, batch_norm=batch_norm, strided_stem=True)


PRESETS: dict[str, Callable[..., ModelConfig]] = {"ssd300_vgg16": ssd300_vgg16, "ssd300_slim": ssd300_slim}
