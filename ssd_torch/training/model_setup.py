"""The network and its optimizer for a run: the model from its config section (``ModelSection``), SGD with
weight decay on conv weights only, and the device / channels-last / compile / DDP wrapping."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ssd_torch.modeling.model_config import ModelConfig
from ssd_torch.training.checkpoint import unwrap_model
from ssd_torch.training.distributed import DistInfo

if TYPE_CHECKING:
    from ssd_torch.training.train_config import ModelSection

__all__ = ["build_model", "param_groups", "build_optimizer", "wrap_model"]


def build_model(section: "ModelSection", num_classes: int) -> tuple[nn.Module, ModelConfig]:
    """(SSD300, its ModelConfig) from a ``ssd_torch.modeling.model_config`` preset and the section's knobs; the
    backbone weights of :meth:`ModelSection.weights_to_load` are loaded, and their input convention becomes
    ``ModelConfig.preprocess``."""
    from ssd_torch.modeling.model import model_from_config
    from ssd_torch.modeling.model_config import PRESETS
    weights = section.weights_to_load()
    extra = {} if section.batch_norm is None else {"batch_norm": section.batch_norm}
    cfg = PRESETS[section.preset](num_classes=num_classes, **extra)
    overrides = {"head_bias_prior": section.head_bias_prior, "l2norm_scale": section.l2norm_scale}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    model = model_from_config(cfg)
    if weights:
        from ssd_torch.modeling.weights import load_vgg16_backbone
        report = load_vgg16_backbone(model, weights)
        cfg = dataclasses.replace(cfg, preprocess=report.preprocess)  # the weights fix the input convention
    return model, cfg


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
