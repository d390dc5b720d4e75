"""The network and its optimizer for a run: the model from its config section (``ModelSection``) with its starting
weights, SGD with weight decay on conv weights only, and the device / channels-last / compile / DDP wrapping."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import torch
from torch import nn

from ssd_torch.modeling.model_config import ModelConfig
from ssd_torch.checkpoint import unwrap_model
from ssd_torch.training.distributed import DistInfo

if TYPE_CHECKING:
    from ssd_torch.training.train_config import ModelSection

__all__ = ["BuiltModel", "build_model", "param_groups", "build_optimizer", "wrap_model"]


class BuiltModel(NamedTuple):
    """The network, the ``ModelConfig`` the run trains and saves with (priors and input convention included),
    and what the starting weights were, in words (printed by ``ssd-train``)."""

    model: nn.Module
    config: ModelConfig
    report: str


def _configured(section: "ModelSection", num_classes: int) -> ModelConfig:
    """The preset's ``ModelConfig`` with the section's knobs (BatchNorm, head bias, L2Norm scale, priors,
    variances)."""
    from reference.priors import PRESETS as PRIOR_PRESETS
    from ssd_torch.modeling.model_config import PRESETS

    extra = {} if section.batch_norm is None else {"batch_norm": section.batch_norm}
    cfg = dataclasses.replace(PRESETS[section.preset](num_classes=num_classes, **extra),
                              variances=tuple(section.variances))
    overrides = {"head_bias_prior": section.head_bias_prior, "l2norm_scale": section.l2norm_scale,
                 "prior_spec": None if section.priors is None else PRIOR_PRESETS[section.priors]}
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


def build_model(section: "ModelSection", class_names: Sequence[str], *, resumed: ModelConfig | None = None,
                trust_checkpoint: bool = False) -> BuiltModel:
    """SSD300 for ``class_names`` (``"background"`` first) from a ``ssd_torch.modeling.model_config`` preset and
    the section's knobs, with its starting weights:

    - ``resumed`` (the ``ModelConfig`` of the checkpoint a resumed run continues from): none are loaded — the
      checkpoint holds every weight — and the input convention is the checkpoint's, as are the priors of a run
      that started from ``init_from`` (so neither the backbone file nor the init checkpoint is needed again);
    - ``section.init_from``: ``ssd_torch.modeling.finetune.init_from_checkpoint`` (the returned config adopts the
      checkpoint's input convention and priors);
    - else the backbone weights of :meth:`ModelSection.weights_to_load`, whose input convention becomes
      ``ModelConfig.preprocess``.
    """
    from ssd_torch.modeling.model import model_from_config

    cfg = _configured(section, len(class_names))
    model = model_from_config(cfg)
    if resumed is not None:
        adopted = {"preprocess": resumed.preprocess}
        if section.init_from is not None:  # what init_from_checkpoint adopted from its source
            adopted.update(prior_spec=resumed.prior_spec, variances=resumed.variances)
        return BuiltModel(model, dataclasses.replace(cfg, **adopted),
                          "resuming: the starting weights are not loaded again (the checkpoint holds every weight); "
                          f"input: {resumed.preprocess.describe()}")
    if section.init_from is not None:
        from ssd_torch.modeling.finetune import init_from_checkpoint
        cfg, init = init_from_checkpoint(model, cfg, class_names, section.init_from,
                                         trust_checkpoint=trust_checkpoint)
        return BuiltModel(model, cfg, init.text())
    weights = section.weights_to_load()
    if not weights:
        return BuiltModel(model, cfg, f"{cfg.name}: initialised at random (no starting weights)")
    from ssd_torch.modeling.weights import load_backbone
    loaded = load_backbone(model, weights)
    return BuiltModel(model, dataclasses.replace(cfg, preprocess=loaded.preprocess), loaded.text())


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two SGD groups: conv / linear weights with ``weight_decay``; biases, BatchNorm and L2Norm scales
    (every parameter with < 2 dims) without (decaying a norm scale or a bias only fights the data)."""
    decay, no_decay = [], []
    for _, p in unwrap_model(model).named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, *, lr: float, momentum: float, weight_decay: float,
                    nesterov: bool = False) -> torch.optim.SGD:
    """SGD at peak LR ``lr`` (already scaled to the effective batch), weight decay as :func:`param_groups`."""
    return torch.optim.SGD(param_groups(model, weight_decay), lr=lr, momentum=momentum, nesterov=nesterov)


def wrap_model(model: nn.Module, device: torch.device, *, channels_last: bool, compile_model: bool,
               info: DistInfo) -> nn.Module:
    """The model on ``device`` (channels-last memory format, ``torch.compile``, DDP under torchrun as asked);
    ``checkpoint.unwrap_model`` gets the plain module back."""
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile_model:
        model = torch.compile(model)
    if info.world_size > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                    else None)
    return model
