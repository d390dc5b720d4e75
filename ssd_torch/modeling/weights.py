"""Load ImageNet VGG16 weights into the SSD300 backbone (SSD paper §3, "Base network").

:func:`load_backbone(model, source) <load_backbone>` takes ``model.backbone_weights``, one of:

* a local file in torchvision's ``vgg16`` layout: ``features.N.weight/bias`` (13 convs) and ``classifier.0/3/6``
  (fc6, fc7, fc8). fc6 and fc7 are converted to SSD's dilated fc6 / 1x1 fc7 by decimation (``reduce_fc6``,
  ``reduce_fc7``); fc8 (the 1000-way classifier) is ignored.
* ``torchvision:IMAGENET1K_V1`` or ``torchvision:IMAGENET1K_FEATURES``: the same layout, read through
  torchvision's weights API from the torch hub cache (``$TORCH_HOME/hub/checkpoints``), which downloads the file
  there when online. Offline and not cached: one line naming the cache folder and the expected file name.
* ssd.pytorch's ``vgg16_reducedfc.pth``: keys ``0.weight`` .. ``33.bias`` of its ``vgg`` ``nn.ModuleList``
  (convs at indices 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28; fc6 at 31, fc7 at 33, already reduced).

``IMAGENET1K_FEATURES`` is torchvision's port of ssd.pytorch's reduced-fc weights; its ``classifier`` is filled
with NaN (torchvision's own note: only ``features`` holds values), so the reduced fc6 / fc7 cannot be rebuilt
from it: they keep the model's initialisation and train from scratch, as in torchvision's ``ssd300_vgg16``
(which Xavier-initialises them). A local torchvision-layout file whose fc6 / fc7 decimate to all-NaN is that
file and is read the same way.

Each source fixes the input convention its weights were trained with (``LoadReport.preprocess``, to be stored in
``ModelConfig.preprocess``): ``IMAGENET1K_V1`` RGB in [0, 1] with the ImageNet mean / std (``IMAGENET``);
``IMAGENET1K_FEATURES`` torchvision's Caffe-mean form (``TORCHVISION_SSD``); ssd.pytorch's reduced-fc file the
Caffe mean pixel on 0-255 RGB (``CAFFE_RGB``, what ssd.pytorch, lufficc/SSD and torchvision all feed it).
Only the full-width VGG16 backbone without BatchNorm (preset ``ssd300_vgg16``) can take these weights.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from ssd_torch.data.preprocess import CAFFE_RGB, IMAGENET, TORCHVISION_SSD, Preprocess
from ssd_torch.errors import CheckpointError, ConfigError
from ssd_torch.modeling.model_config import VGG16_BASE

__all__ = ["LoadReport", "load_backbone", "reduce_fc6", "reduce_fc7", "VGG_CONV_NAMES",
           "TORCHVISION_SOURCES", "hub_file", "read_state_dict", "mismatch_problems", "listed"]

#: Names of the 15 backbone convs, in order.
VGG_CONV_NAMES: tuple[str, ...] = tuple(f"conv{s + 1}_{i + 1}" for s, stage in enumerate(VGG16_BASE)
                                        for i in range(len(stage))) + ("fc6", "fc7")
#: Indices of the 13 convs in torchvision's ``features`` and ssd.pytorch's ``vgg`` (same for both), then fc6, fc7.
_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_SSD_FC_INDICES = (31, 33)
_FC_WIDTH = 1024
#: ``torchvision:NAME`` sources: the ``VGG16_Weights`` member and the layout its file has.
TORCHVISION_SOURCES = {"IMAGENET1K_V1": "torchvision", "IMAGENET1K_FEATURES": "torchvision-features"}
_TORCHVISION_PREFIX = "torchvision:"
_MAX_LISTED = 8  # keys named in one message; the rest are counted


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_backbone` did. ``source``: what was asked for (a path or ``torchvision:NAME``);
    ``path``: the file read; ``layout``: "torchvision", "torchvision-features" (conv1_1 .. conv5_3 only) or
    "ssd.pytorch"; ``loaded``: model parameter names that were overwritten; ``converted``: source keys decimated
    (fc6 / fc7); ``ignored``: source keys not used; ``untouched``: model parameters left at their initialisation
    (L2Norm, extras, heads; fc6 / fc7 too for "torchvision-features"); ``preprocess``: the input convention these
    weights were trained with, which the model's ``ModelConfig.preprocess`` must be set to; ``notes``: sentences
    for the log."""

    path: str
    layout: str
    loaded: tuple[str, ...]
    converted: tuple[str, ...]
    ignored: tuple[str, ...]
    untouched: tuple[str, ...]
    preprocess: Preprocess
    source: str = ""
    notes: tuple[str, ...] = ()

    def text(self) -> str:
        """A few printable lines: source, layout, counts, the input convention and the notes."""
        lines = [f"backbone weights: {self.source or self.path} ({self.layout} layout, file {self.path})",
                 f"  loaded {len(self.loaded)} tensors, decimated {len(self.converted)} (fc6/fc7), ignored "
                 f"{len(self.ignored)}, left at initialisation {len(self.untouched)}",
                 f"  input: {self.preprocess.describe()}"]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def listed(keys: Iterable[Any]) -> str:
    """``['a', 'b', ...] (+N more)``: at most ``_MAX_LISTED`` names, for one-line messages."""
    keys = list(keys)
    more = f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return f"{keys[:_MAX_LISTED]}{more}"


def mismatch_problems(sd: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]],
                      optional: Mapping[str, tuple[int, ...]] | None = None, *, floating: bool = True) -> list[str]:
    """Every way ``sd`` differs from ``expected`` (key -> shape; ``optional`` keys may be absent): missing,
    unexpected, wrongly shaped and (with ``floating``: weights files hold no integer tensors, unlike a BatchNorm
    model's ``num_batches_tracked``) non-floating tensors, each part naming the keys. [] when it fits."""
    known = {**expected, **(optional or {})}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(known))
    wrong = [f"{k}: {list(v.shape)} (expected {list(known[k])})" for k, v in sorted(sd.items())
             if k in known and tuple(v.shape) != tuple(known[k])]
    not_float = sorted(k for k, v in sd.items() if floating and not v.is_floating_point())
    return [f"{name}: {listed(items)}" for name, items in
            (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong),
             ("non-floating tensors", not_float)) if items]


def _conv_shapes() -> list[tuple[int, ...]]:
    """Weight shapes of the 15 reduced convs: VGG16's 3x3 convs, fc6 [1024, 512, 3, 3], fc7 [1024, 1024, 1, 1]."""
    shapes, in_ch = [], 3
    for stage in VGG16_BASE:
        for w in stage:
            shapes.append((w, in_ch, 3, 3))
            in_ch = w
    return shapes + [(_FC_WIDTH, in_ch, 3, 3), (_FC_WIDTH, _FC_WIDTH, 1, 1)]


def _expected(layout: str) -> dict[str, tuple[int, ...]]:
    """Every key of a ``layout`` state dict ("torchvision" or "ssd.pytorch") and its shape."""
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


#: The input convention of each layout (module docstring).
_PREPROCESS = {"torchvision": IMAGENET, "torchvision-features": TORCHVISION_SSD, "ssd.pytorch": CAFFE_RGB}
#: Keys that may be present but are not used (torchvision's 1000-way fc8).
_OPTIONAL = {"torchvision": {"classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,)}, "ssd.pytorch": {}}
_CLASSIFIER = ("classifier.0.weight", "classifier.0.bias", "classifier.3.weight", "classifier.3.bias")
_FEATURES_NOTE = ("fc6/fc7 are not in these weights (torchvision's IMAGENET1K_FEATURES filled its classifier with "
                  "NaN): they keep their initialisation and train from scratch, as in torchvision's ssd300_vgg16")


def reduce_fc6(weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """VGG16 fc6 ``[4096, 512*7*7]`` -> SSD fc6 conv ``[1024, 512, 3, 3]`` by decimation (SSD §3; DeepLab-LargeFOV).

    Output units 0, 4, 8, ..., 4092 (every 4th) are kept, and of the 7x7 kernel the taps at rows and columns
    0, 3, 6 (every 3rd: the centre tap 3 and the two outermost ones). Why: keeping every 3rd tap leaves a 3x3
    kernel whose taps are 3 VGG-pool5 pixels apart, i.e. dilation 3 at pool5's resolution, so it still spans the
    original 7x7 window; SSD's pool5 (3x3, stride 1) no longer halves the map, so one VGG pool5 pixel is 2 SSD
    pixels and the dilation becomes 2 x 3 = 6 — which is why fc6 is a 3x3 conv with dilation 6.
    """
    # rows first, then a view of the kept rows: only the 1024 x 512 x 3 x 3 result is ever copied
    w = weight[0::4].unflatten(1, (512, 7, 7))[:, :, 0::3, 0::3]
    return w.contiguous(), bias[0::4].contiguous()


def reduce_fc7(weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """VGG16 fc7 ``[4096, 4096]`` -> SSD fc7 1x1 conv ``[1024, 1024, 1, 1]``: every 4th output unit (0, 4, ...)
    and every 4th input unit — the inputs are fc6's outputs, of which ``reduce_fc6`` kept every 4th."""
    w = weight[0::4, 0::4].reshape(_FC_WIDTH, _FC_WIDTH, 1, 1)
    return w.contiguous(), bias[0::4].contiguous()


def read_state_dict(path: str | os.PathLike, *, trust: bool = False, container_key: str | None = None
                    ) -> dict[str, Tensor]:
    """A ``{str: Tensor}`` state dict from ``path`` (CPU; weights only unless ``trust``), or a
    :class:`CheckpointError` naming the file. ``container_key``: also accept ``{container_key: state_dict, ...}``
    (lufficc's checkpoints hold the model under ``"model"``). A ``module.`` prefix on every key (a model saved
    inside ``DataParallel``) is removed."""
    from ssd_torch.checkpoint import load_torch_file  # the one loader and its refusal message

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    obj = load_torch_file(path, trust=trust)
    if container_key is not None and isinstance(obj, Mapping) and isinstance(obj.get(container_key), Mapping):
        obj = obj[container_key]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: expected a non-empty state dict (str -> Tensor), got "
                              f"{type(obj).__name__}{' (empty)' if isinstance(obj, Mapping) else ''}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: not a state dict (str -> Tensor); offending keys {listed(bad)}")
    if all(k.startswith("module.") for k in obj):
        return {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def hub_file(name: str) -> Path:
    """Where torchvision's weights API caches ``VGG16_Weights.<name>``: ``<torch hub dir>/checkpoints/<file>``."""
    from torchvision.models import VGG16_Weights

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(VGG16_Weights[name].url).path)


def _fetch_torchvision(name: str) -> Path:
    """The cached file of ``VGG16_Weights.<name>``, downloaded first through the weights API when absent."""
    if name not in TORCHVISION_SOURCES:
        raise ConfigError(f"backbone weights '{_TORCHVISION_PREFIX}{name}': unknown torchvision VGG16 weights; "
                          f"known: {[_TORCHVISION_PREFIX + n for n in TORCHVISION_SOURCES]}")
    from torchvision.models import VGG16_Weights

    path = hub_file(name)
    if not path.is_file():
        try:  # downloads into the hub cache (hash-checked); the file is then read below by our own reader
            VGG16_Weights[name].get_state_dict(progress=True, check_hash=True, weights_only=True)
        except (OSError, RuntimeError) as e:  # URLError / socket errors are OSErrors; a bad hash a RuntimeError
            reason = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
            raise CheckpointError(
                f"backbone weights '{_TORCHVISION_PREFIX}{name}': {path.name} is not in the torch hub cache "
                f"{path.parent} and could not be downloaded ({reason}); copy {path.name} into {path.parent} (or "
                f"point TORCH_HOME at a cache that has it), or give the file's path instead") from None
    return path


def _detect_layout(sd: Mapping[str, Tensor], path: str) -> str:
    if any(k.startswith(("features.", "classifier.")) for k in sd):
        return "torchvision"
    if all(k.split(".", 1)[0].isdigit() for k in sd):
        return "ssd.pytorch"
    raise CheckpointError(f"{path}: neither a torchvision VGG16 state dict (features.N / classifier.N keys) nor "
                          f"ssd.pytorch's vgg16_reducedfc.pth (N.weight keys); first keys: {sorted(sd)[:6]}")


def _check_keys(sd: Mapping[str, Tensor], layout: str, path: str) -> None:
    """CheckpointError naming every missing, unexpected and wrongly shaped key."""
    problems = mismatch_problems(sd, _expected(layout), _OPTIONAL[layout])
    if problems:
        raise CheckpointError(f"{path}: not a complete {layout} VGG16 state dict; " + "; ".join(problems))


def _reduced_params(sd: Mapping[str, Tensor], layout: str) -> tuple[list[tuple[Tensor, Tensor]], list[str], str]:
    """The (weight, bias) pairs in SSD layout (15, or 13 for features-only weights), the source keys that were
    converted, and the layout found ("torchvision-features" when fc6 / fc7 decimate to all-NaN)."""
    prefix = "features." if layout == "torchvision" else ""
    pairs = [(sd[f"{prefix}{i}.weight"], sd[f"{prefix}{i}.bias"]) for i in _CONV_INDICES]
    if layout == "ssd.pytorch":
        return pairs + [(sd[f"{i}.weight"], sd[f"{i}.bias"]) for i in _SSD_FC_INDICES], [], layout
    fc = [reduce_fc6(sd["classifier.0.weight"], sd["classifier.0.bias"]),
          reduce_fc7(sd["classifier.3.weight"], sd["classifier.3.bias"])]
    if all(bool(torch.isnan(t).all()) for pair in fc for t in pair):
        return pairs, [], "torchvision-features"
    return pairs + fc, list(_CLASSIFIER), layout


def _check_finite(pairs: list[tuple[Tensor, Tensor]], path: str) -> None:
    bad = [f"{VGG_CONV_NAMES[i]}.{part}" for i, pair in enumerate(pairs)
           for part, t in zip(("weight", "bias"), pair) if not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{path}: non-finite values (NaN/inf) in {listed(bad)}; the file is damaged")


def _backbone_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The model's 15 VGG convs, or a ConfigError if it is not the full-width VGG16 backbone without BN."""
    convs = model.vgg_convs() if hasattr(model, "vgg_convs") else []
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    got = [tuple(c.weight.shape) for c in convs]
    strides_ok = all(c.stride == (1, 1) for c in convs)
    if has_bn or got != _conv_shapes() or not strides_ok or any(c.bias is None for c in convs):
        raise ConfigError("VGG16 backbone weights need the full-width VGG16 backbone without BatchNorm and without "
                          f"a strided stem (preset ssd300_vgg16); this model has BatchNorm={has_bn}, stride-1 convs="
                          f"{strides_ok}, conv weight shapes {got[:3]}... (expected {_conv_shapes()[:3]}...)")
    return convs


def _resolve(source: str | os.PathLike) -> tuple[Path, str | None]:
    """(file to read, the torchvision layout it must have or None for a local file of either layout)."""
    text = os.fspath(source)
    if text.startswith(_TORCHVISION_PREFIX):
        name = text[len(_TORCHVISION_PREFIX):]
        return _fetch_torchvision(name), TORCHVISION_SOURCES.get(name)
    return Path(text), None


def load_backbone(model: nn.Module, source: str | os.PathLike, *, trust: bool = False) -> LoadReport:
    """Copy ImageNet VGG16 weights from ``source`` (a local file or ``torchvision:NAME``, module docstring) into
    ``model``'s conv1_1 .. fc7 (in place) and say what was done, including the input convention to adopt.

    ``model``: an ``SSD300`` built from ``ssd300_vgg16`` (anything else -> ConfigError before any file is read).
    The file is read weights-only (``trust``: unpickle in full); a file that is not a state dict, or one with
    missing / unexpected / wrongly shaped keys or non-finite values, raises :class:`CheckpointError` naming the
    file and the keys, and leaves the model unchanged.
    """
    convs = _backbone_convs(model)
    path, wanted = _resolve(source)
    spath = str(path)
    sd = read_state_dict(path, trust=trust)
    layout = _detect_layout(sd, spath)
    _check_keys(sd, layout, spath)
    pairs, converted, layout = _reduced_params(sd, layout)
    if wanted is not None and layout != wanted:
        raise CheckpointError(f"{spath}: the torch hub cache holds a {layout} file under the name of {source} "
                              f"(expected {wanted}: fc6/fc7 of IMAGENET1K_FEATURES are NaN, of IMAGENET1K_V1 not); "
                              f"delete it so that it is downloaded again")
    _check_finite(pairs, spath)
    with torch.no_grad():
        for conv, (w, b) in zip(convs, pairs):
            conv.weight.copy_(w)
            conv.bias.copy_(b)
    names = {id(p): n for n, p in model.named_parameters()}
    loaded = tuple(names[id(p)] for c in convs[:len(pairs)] for p in (c.weight, c.bias))
    untouched = tuple(n for n, _ in model.named_parameters() if n not in set(loaded))
    optional = _OPTIONAL.get(layout, _OPTIONAL["torchvision"])
    ignored = sorted(k for k in sd if k in optional or (layout == "torchvision-features" and k in _CLASSIFIER))
    notes = (_FEATURES_NOTE,) if layout == "torchvision-features" else ()
    return LoadReport(path=spath, layout=layout, loaded=loaded, converted=tuple(converted), ignored=tuple(ignored),
                      untouched=untouched, preprocess=_PREPROCESS[layout], source=os.fspath(source), notes=notes)
