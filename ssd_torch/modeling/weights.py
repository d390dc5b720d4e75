"""Load ImageNet VGG16 weights into the SSD300 backbone from a local file (SSD paper §3, "Base network").

Two layouts are accepted:

* torchvision's ``vgg16`` state dict: ``features.N.weight/bias`` (13 convs) and ``classifier.0/3/6`` (fc6, fc7,
  fc8). fc6 and fc7 are converted to SSD's dilated fc6 / 1x1 fc7 by decimation (see ``reduce_fc6`` and
  ``reduce_fc7``); fc8 (the 1000-way classifier) is ignored.
* ssd.pytorch's ``vgg16_reducedfc.pth``: keys ``0.weight`` .. ``33.bias`` of its ``vgg`` ``nn.ModuleList``
  (convs at indices 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28; fc6 at 31, fc7 at 33, already reduced).

Only the full-width VGG16 backbone without BatchNorm (preset ``ssd300_vgg16``) can take these weights.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn

from ssd_torch.data.preprocess import CAFFE_BGR, IMAGENET, Preprocess
from ssd_torch.modeling.model_config import VGG16_BASE

__all__ = ["LoadReport", "load_vgg16_backbone", "reduce_fc6", "reduce_fc7", "VGG_CONV_NAMES"]

#: Names of the 15 backbone convs, in order.
VGG_CONV_NAMES: tuple[str, ...] = tuple(f"conv{s + 1}_{i + 1}" for s, stage in enumerate(VGG16_BASE)
                                        for i in range(len(stage))) + ("fc6", "fc7")
#: Indices of the 13 convs in torchvision's ``features`` and ssd.pytorch's ``vgg`` (same for both), then fc6, fc7.
_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_SSD_FC_INDICES = (31, 33)
_FC_WIDTH = 1024


@dataclass(frozen=True)
class LoadReport:
    """What ``load_vgg16_backbone`` did. ``layout``: "torchvision" or "ssd.pytorch"; ``loaded``: model
    parameter names that were overwritten; ``converted``: source keys decimated (fc6 / fc7); ``ignored``:
    source keys not used (torchvision's fc8); ``untouched``: model parameters left at their initialisation
    (L2Norm, extras, heads); ``preprocess``: the input convention these weights were trained with, which the
    model's ``ModelConfig.preprocess`` must be set to."""

    path: str
    layout: str
    loaded: tuple[str, ...]
    converted: tuple[str, ...]
    ignored: tuple[str, ...]
    untouched: tuple[str, ...]
    preprocess: Preprocess


def _conv_shapes() -> list[tuple[int, ...]]:
    """Weight shapes of the 15 reduced convs: VGG16's 3x3 convs, fc6 [1024, 512, 3, 3], fc7 [1024, 1024, 1, 1]."""
    shapes, in_ch = [], 3
    for stage in VGG16_BASE:
        for w in stage:
            shapes.append((w, in_ch, 3, 3))
            in_ch = w
    return shapes + [(_FC_WIDTH, in_ch, 3, 3), (_FC_WIDTH, _FC_WIDTH, 1, 1)]


def _expected(layout: str) -> dict[str, tuple[int, ...]]:
    """Every key of a ``layout`` state dict and its shape."""
    shapes = _conv_shapes()
    out: dict[str, tuple[int, ...]] = {}
    prefix = "features." if layout == "torchvision" else ""
    for idx, shape in zip(_CONV_INDICES, shapes):
        out[f"{prefix}{idx}.weight"], out[f"{prefix}{idx}.bias"] = shape, shape[:1]
    if layout == "torchvision":
        out.update({"classifier.0.weight": (4096, 512 * 7 * 7), "classifier.0.bias": (4096,),
                    "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,)})
    else:
        for idx, shape in zip(_SSD_FC_INDICES, shapes[13:]):
            out[f"{idx}.weight"], out[f"{idx}.bias"] = shape, shape[:1]
    return out


#: The input convention of each layout: torchvision's ImageNet VGG16 is RGB in [0, 1] with the ImageNet
#: mean/std; ssd.pytorch's reduced-fc file is the Caffe conversion (BGR, 0-255, minus the mean pixel).
_PREPROCESS = {"torchvision": IMAGENET, "ssd.pytorch": CAFFE_BGR}
#: Keys that may be present but are not used (torchvision's 1000-way fc8).
_OPTIONAL = {"torchvision": {"classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,)}, "ssd.pytorch": {}}


def reduce_fc6(weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """VGG16 fc6 ``[4096, 512*7*7]`` -> SSD fc6 conv ``[1024, 512, 3, 3]`` by decimation (SSD §3; DeepLab-LargeFOV).

    Output units 0, 4, 8, ..., 4092 (every 4th) are kept, and of the 7x7 kernel the taps at rows and columns
    0, 3, 6 (every 3rd: the centre tap 3 and the two outermost ones). Why: keeping every 3rd tap leaves a 3x3
    kernel whose taps are 3 VGG-pool5 pixels apart, i.e. dilation 3 at pool5's resolution, so it still spans the
    original 7x7 window; SSD's pool5 (3x3, stride 1) no longer halves the map, so one VGG pool5 pixel is 2 SSD
    pixels and the dilation becomes 2 x 3 = 6 — which is why fc6 is a 3x3 conv with dilation 6.
    """
    w = weight.reshape(4096, 512, 7, 7)[0::4, :, 0::3, 0::3]
    return w.contiguous(), bias[0::4].contiguous()


def reduce_fc7(weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """VGG16 fc7 ``[4096, 4096]`` -> SSD fc7 1x1 conv ``[1024, 1024, 1, 1]``: every 4th output unit (0, 4, ...)
    and every 4th input unit — the inputs are fc6's outputs, of which ``reduce_fc6`` kept every 4th."""
    w = weight[0::4, 0::4].reshape(_FC_WIDTH, _FC_WIDTH, 1, 1)
    return w.contiguous(), bias[0::4].contiguous()


def _read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """``torch.load`` (weights only, CPU) -> a ``{str: Tensor}`` dict, or a ValueError naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VGG16 weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a weights file"
        raise ValueError(f"{path}: not a readable PyTorch state dict ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{path}: expected a non-empty state dict (str -> Tensor), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{path}: not a state dict (str -> Tensor); offending keys {bad[:10]}")
    return dict(obj)


def _detect_layout(sd: Mapping[str, Tensor], path: str) -> str:
    if any(k.startswith(("features.", "classifier.")) for k in sd):
        return "torchvision"
    if all(k.split(".", 1)[0].isdigit() for k in sd):
        return "ssd.pytorch"
    raise ValueError(f"{path}: neither a torchvision VGG16 state dict (features.N / classifier.N keys) nor "
                     f"ssd.pytorch's vgg16_reducedfc.pth (N.weight keys); first keys: {sorted(sd)[:6]}")


def _check_keys(sd: Mapping[str, Tensor], layout: str, path: str) -> None:
    """ValueError naming every missing, unexpected and wrongly shaped key."""
    expected, known = _expected(layout), {**_expected(layout), **_OPTIONAL[layout]}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(known))
    wrong = [f"{k}: {list(v.shape)} (expected {list(known[k])})" for k, v in sorted(sd.items())
             if k in known and tuple(v.shape) != known[k]]
    not_float = sorted(k for k, v in sd.items() if not v.is_floating_point())
    problems = [f"{name}: {items}" for name, items in
                (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong),
                 ("non-floating tensors", not_float)) if items]
    if problems:
        raise ValueError(f"{path}: not a complete {layout} VGG16 state dict; " + "; ".join(problems))


def _reduced_params(sd: Mapping[str, Tensor], layout: str) -> tuple[list[tuple[Tensor, Tensor]], list[str]]:
    """The 15 (weight, bias) pairs in SSD layout, and the source keys that were converted."""
    prefix = "features." if layout == "torchvision" else ""
    pairs = [(sd[f"{prefix}{i}.weight"], sd[f"{prefix}{i}.bias"]) for i in _CONV_INDICES]
    if layout == "ssd.pytorch":
        return pairs + [(sd[f"{i}.weight"], sd[f"{i}.bias"]) for i in _SSD_FC_INDICES], []
    pairs.append(reduce_fc6(sd["classifier.0.weight"], sd["classifier.0.bias"]))
    pairs.append(reduce_fc7(sd["classifier.3.weight"], sd["classifier.3.bias"]))
    return pairs, ["classifier.0.weight", "classifier.0.bias", "classifier.3.weight", "classifier.3.bias"]


def _backbone_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The model's 15 VGG convs, or a ValueError if it is not the full-width VGG16 backbone without BN."""
    convs = model.vgg_convs() if hasattr(model, "vgg_convs") else []
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    got = [tuple(c.weight.shape) for c in convs]
    strides_ok = all(c.stride == (1, 1) for c in convs)
    if has_bn or got != _conv_shapes() or not strides_ok or any(c.bias is None for c in convs):
        raise ValueError("load_vgg16_backbone needs the full-width VGG16 backbone without BatchNorm and without a "
                         f"strided stem (preset ssd300_vgg16); this model has BatchNorm={has_bn}, stride-1 convs="
                         f"{strides_ok}, conv weight shapes {got[:3]}... (expected {_conv_shapes()[:3]}...)")
    return convs


def load_vgg16_backbone(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Copy ImageNet VGG16 weights from the local file ``path`` into ``model``'s conv1_1 .. fc7 (in place).

    ``model``: an ``SSD300`` built from ``ssd300_vgg16`` (anything else -> ValueError before the file is read).
    The file is loaded with ``torch.load(path, map_location="cpu", weights_only=True)``; a file that is not a
    state dict, or one with missing / unexpected / wrongly shaped keys, raises ValueError naming the file and
    the keys, and leaves the model unchanged.
    """
    convs = _backbone_convs(model)
    spath = os.fspath(path)
    sd = _read_state_dict(spath)
    layout = _detect_layout(sd, spath)
    _check_keys(sd, layout, spath)
    pairs, converted = _reduced_params(sd, layout)
    with torch.no_grad():
        for conv, (w, b) in zip(convs, pairs):
            conv.weight.copy_(w)
            conv.bias.copy_(b)
    names = {id(p): n for n, p in model.named_parameters()}
    loaded = tuple(names[id(p)] for c in convs for p in (c.weight, c.bias))
    untouched = tuple(n for n, _ in model.named_parameters() if n not in set(loaded))
    ignored = tuple(sorted(k for k in sd if k in _OPTIONAL[layout]))
    return LoadReport(path=spath, layout=layout, loaded=loaded, converted=tuple(converted), ignored=ignored,
                      untouched=untouched, preprocess=_PREPROCESS[layout])
