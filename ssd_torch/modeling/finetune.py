"""Start a training run from a trained checkpoint, for other classes (the paper's COCO-pretrained recipe, SSD §3.4).

:func:`init_from_checkpoint` copies a checkpoint of ours (an imported peer file too: ``ssd-import``) into a freshly
built model: the backbone, L2Norm and extras whole; the loc heads where their shapes match (they do not depend on
the classes); and, of the conf heads, the rows of every class whose name the source also has, background
included. COCO -> VOC keeps all 20 VOC classes (with COCO's names airplane, motorcycle, couch, tv,
dining table and potted plant for aeroplane, motorbike, sofa, tvmonitor, diningtable, pottedplant). Rows of
classes the source lacks keep the model's fresh initialisation. Unlike ``--resume`` (the same run, exactly:
optimizer, schedule, data position, RNG), only weights are taken, and the run starts at step 0.

The returned ``ModelConfig`` adopts what the copied weights need: the source's input convention always (the
backbone was trained on it) and, whenever the heads are kept, its priors and box-coder variances (the loc heads
learned offsets from those priors, scaled by those variances: docs/CONTRACT.md "Encoding").
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from ssd_torch.labels import check_categories
from ssd_torch.errors import CheckpointError, ConfigError
from ssd_torch.modeling.model_config import ModelConfig
from ssd_torch.modeling.weights import listed, mismatch_problems

__all__ = ["InitReport", "init_from_checkpoint", "canonical_class_name", "class_row_map"]

#: COCO's (and torchvision's) names of the VOC classes whose spelling differs beyond spaces and case.
_ALIASES = {"airplane": "aeroplane", "motorcycle": "motorbike", "couch": "sofa", "tv": "tvmonitor"}
_NO_CLASS = "n/a"  # torchvision's placeholder for the 11 unused COCO ids: never a match
_HEADS = ("loc_heads.", "conf_heads.")


def canonical_class_name(name: str) -> str:
    """Lower case, without spaces, hyphens and underscores, COCO spellings mapped to VOC's: ``"Dining Table"``,
    ``"diningtable"`` -> ``"diningtable"``; ``"airplane"`` -> ``"aeroplane"``; ``"__background__"`` ->
    ``"background"``."""
    key = "".join(ch for ch in name.lower() if ch not in " -_")
    return _ALIASES.get(key, key)


def class_row_map(target: Sequence[str], source: Sequence[str]) -> dict[int, int]:
    """``{target index: source index}`` for the target classes the source has (by canonical name; the first
    source entry wins), background (index 0 in both) included."""
    first: dict[str, int] = {}
    for j, name in enumerate(source):
        first.setdefault(canonical_class_name(name), j)
    return {i: first[c] for i, name in enumerate(target)
            if (c := canonical_class_name(name)) in first and name.lower() != _NO_CLASS}


@dataclass(frozen=True)
class InitReport:
    """What :func:`init_from_checkpoint` took. ``kept``: parts copied whole; ``mapped``: (target class, source
    class) conf-head rows copied; ``reinitialised``: what keeps the fresh initialisation; ``adopted``: config
    fields taken from the source."""

    source: str
    source_model: str
    kept: tuple[str, ...]
    mapped: tuple[tuple[str, str], ...]
    reinitialised: tuple[str, ...]
    adopted: tuple[str, ...]

    def text(self) -> str:
        renamed = [f"{t}<-{s}" for t, s in self.mapped if t != s]
        same = len(self.mapped) - len(renamed)
        rows = f"{len(self.mapped)} class rows from the source ({same} same name" + (
            f"; {', '.join(renamed)})" if renamed else ")")
        return "\n".join([f"init from {self.source} ({self.source_model})",
                          f"  kept: {', '.join(self.kept) or 'nothing'}",
                          f"  conf heads: {rows}",
                          f"  re-initialised: {', '.join(self.reinitialised) or 'nothing'}",
                          f"  adopted: {'; '.join(self.adopted) or 'nothing'}"])


def _read(path: str | os.PathLike, trust: bool) -> tuple[ModelConfig, list[str], Mapping[str, Tensor]]:
    from ssd_torch.modeling.predictor import config_and_classes  # the checkpoint's config and names, cross-checked
    from ssd_torch.checkpoint import read_checkpoint

    ckpt = read_checkpoint(path, trust=trust)
    cfg, names = config_and_classes(ckpt, path)
    if not isinstance(ckpt["model"], Mapping):
        raise CheckpointError(f"checkpoint {path}: 'model' must be a state dict, got {type(ckpt['model']).__name__}")
    return cfg, names, ckpt["model"]


def _check_body(model_sd: Mapping[str, Tensor], src: Mapping[str, Tensor], src_cfg: ModelConfig,
                model_cfg: ModelConfig, path: str) -> dict[str, Tensor]:
    """The source's tensors outside the heads, or a CheckpointError when they do not fit the model."""
    want = {k: tuple(v.shape) for k, v in model_sd.items() if not k.startswith(_HEADS)}
    body = {k: v for k, v in src.items() if not k.startswith(_HEADS)}
    problems = mismatch_problems(body, want, floating=False)
    if problems:
        raise CheckpointError(f"checkpoint {path}: its network ({src_cfg.name}) differs from this run's "
                              f"({model_cfg.name}) outside the heads: {'; '.join(problems)}; initialising from a "
                              f"checkpoint needs the same backbone and extras (model preset)")
    return body


def _same_shapes(model_sd: Mapping[str, Tensor], src: Mapping[str, Tensor], prefix: str) -> bool:
    keys = [k for k in model_sd if k.startswith(prefix)]
    return all(k in src and src[k].shape == model_sd[k].shape for k in keys)


def _copy_rows(model: nn.Module, src: Mapping[str, Tensor], rows: dict[int, int], src_classes: int) -> None:
    """conf head k, box a: output channel ``a * C + c`` (docs/CONTRACT.md order) -> target row ``a * C_t + t``
    takes source row ``a * C_s + s`` for each ``t -> s`` in ``rows``, weight and bias."""
    with torch.no_grad():
        for k, head in enumerate(model.conf_heads):
            c_t = head.out_channels // model.head_boxes[k]
            t_idx = torch.tensor([a * c_t + t for a in range(model.head_boxes[k]) for t in rows])
            s_idx = torch.tensor([a * src_classes + s for a in range(model.head_boxes[k]) for s in rows.values()])
            head.weight[t_idx] = src[f"conf_heads.{k}.weight"][s_idx].to(head.weight)
            head.bias[t_idx] = src[f"conf_heads.{k}.bias"][s_idx].to(head.bias)


def _adopted(model_cfg: ModelConfig, src_cfg: ModelConfig, heads_kept: bool) -> tuple[ModelConfig, list[str]]:
    changes = {"preprocess": src_cfg.preprocess}
    if heads_kept:
        changes.update(prior_spec=src_cfg.prior_spec, variances=src_cfg.variances)
    notes = [f"{field} of the source" + (" (unchanged)" if getattr(model_cfg, field) == value else
                                          f" (was {_short(getattr(model_cfg, field))})")
             + f": {_short(value)}" for field, value in changes.items()]
    return dataclasses.replace(model_cfg, **changes), notes


def _short(value: object) -> str:
    if hasattr(value, "describe"):
        return value.describe()  # a Preprocess
    if isinstance(value, tuple):
        return str(value)  # variances
    spec = value
    return f"scales {list(spec.scales)}, steps {list(spec.steps) if spec.steps else 'none'}, clip {spec.clip}" + (
        "" if spec.clip_centres or not spec.clip else " (w, h only)")


def init_from_checkpoint(model: nn.Module, model_cfg: ModelConfig, class_names: Sequence[str],
                         path: str | os.PathLike, *, trust_checkpoint: bool = False) -> tuple[ModelConfig, InitReport]:
    """Copy the weights of the checkpoint ``path`` into ``model`` (built from ``model_cfg`` for ``class_names``,
    background first; in place) as the module docstring says; returns the config to train and save with, and
    the report. The source must have the same network outside the heads (else :class:`CheckpointError`)."""
    spath = os.fspath(path)
    try:
        check_categories(class_names, f"init from {spath}", model_cfg.num_classes)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    src_cfg, src_names, src = _read(spath, trust_checkpoint)
    model_sd = model.state_dict()
    body = _check_body(model_sd, src, src_cfg, model_cfg, spath)
    model.load_state_dict(body, strict=False)
    kept = ["backbone, L2Norm and extras"]
    reinit = []
    loc_ok = _same_shapes(model_sd, src, "loc_heads.")
    if loc_ok:
        model.load_state_dict({k: v for k, v in src.items() if k.startswith("loc_heads.")}, strict=False)
        kept.append("loc heads")
    else:
        reinit.append("loc heads (other boxes per cell)")
    rows = class_row_map(class_names, src_names) if loc_ok else {}
    if rows:
        _copy_rows(model, src, rows, src_cfg.num_classes)
    missing = [n for i, n in enumerate(class_names) if i not in rows]
    if missing:
        reinit.append(f"conf rows of {listed(missing)}")
    cfg, adopted = _adopted(model_cfg, src_cfg, heads_kept=loc_ok)
    report = InitReport(source=spath, source_model=f"{src_cfg.name}, {src_cfg.num_classes} classes",
                        kept=tuple(kept), mapped=tuple((class_names[t], src_names[s]) for t, s in rows.items()),
                        reinitialised=tuple(reinit), adopted=tuple(adopted))
    return cfg, report
