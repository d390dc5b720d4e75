"""The SSD300 network (SSD paper §2.1, Fig. 2; the ssd.pytorch layout).

VGG16 base (pool3 in ceil mode so that 75 -> 38; pool5 3x3 stride 1 pad 1 keeps 19x19), fc6 as a 3x3 conv
with dilation 6 and fc7 as a 1x1 conv, L2Norm on conv4_3, extras conv8_2..conv11_2 (19 -> 10 / 5 / 3 / 1), and
one 3x3 loc and one 3x3 conf head per source map. Outputs follow the prior order of docs/CONTRACT.md "Default boxes":
maps in order, cells row-major, boxes of a cell in spec order — which is what permuting each head's NCHW
output to NHWC and flattening gives, because a head's output channel ``a * 4 + k`` (loc) or ``a * C + c``
(conf) belongs to box ``a`` of the cell.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from reference.priors import num_priors as _spec_num_priors
from ssd_torch.modeling.model_config import ModelConfig

__all__ = ["SSD300", "L2Norm", "model_from_config", "num_priors", "SSD300_FEATURE_MAPS"]

#: Feature-map sides of the six sources at a 300x300 input (conv4_3, fc7, conv8_2 .. conv11_2).
SSD300_FEATURE_MAPS: tuple[int, ...] = (38, 19, 10, 5, 3, 1)


class L2Norm(nn.Module):
    """Per-location L2 normalisation over channels times a learned per-channel scale (ParseNet; SSD §3.1).

    ``y[b, c, i, j] = weight[c] * x[b, c, i, j] / max(||x[b, :, i, j]||_2, eps)``. The norm is computed in
    float32 whatever the input dtype (under bf16/fp16 autocast a low-precision sum of 512 squares loses
    accuracy or overflows); the result is returned in the input dtype. ``eps`` keeps an all-zero location
    (common after ReLU) finite with a zero gradient. The peers differ only there: torchvision's
    ``F.normalize`` clamps the norm at 1e-12, ssd.pytorch and lufficc divide by ``norm + 1e-10``; for any norm
    above 1e-10 the first two are the same function and the third differs by a relative 1e-10 / norm, below
    float32 resolution (tests/model/test_model_torchvision_equivalence.py: bit-identical head outputs).
    """

    def __init__(self, channels: int, scale: float = 20.0, eps: float = 1e-10) -> None:
        super().__init__()
        self.eps = eps
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.weight, self.scale)

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        norm = torch.linalg.vector_norm(xf, ord=2, dim=1, keepdim=True).clamp_min(self.eps)
        out = xf / norm * self.weight.float().view(1, -1, 1, 1)
        return out.to(x.dtype)


def _conv_block(in_ch: int, out_ch: int, kernel: int, batch_norm: bool, **conv_kw: int) -> list[nn.Module]:
    """conv (+ BatchNorm) + ReLU; with BatchNorm the conv has no bias (BN's shift replaces it)."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel, bias=not batch_norm, **conv_kw)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.ReLU(inplace=True))
    return layers


def _vgg_stage(in_ch: int, widths: tuple[int, ...], batch_norm: bool) -> list[nn.Module]:
    """One VGG stage: 3x3 pad-1 convs (resolution kept)."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += _conv_block(in_ch, w, 3, batch_norm, padding=1)
        in_ch = w
    return layers


def _build_lower(base: tuple[tuple[int, ...], ...], batch_norm: bool, strided_stem: bool) -> nn.Sequential:
    """conv1_1 .. conv4_3 + ReLU: 300 -> 150 -> 75 -> 38 (pool3 in ceil mode, as ssd.pytorch).

    ``strided_stem``: conv1_1 has stride 2 and pool1 is dropped, so stage 1 already runs at 150x150; the
    source maps keep their sizes (38 / 19 / ...) while the costliest full-resolution layers disappear.
    """
    layers: list[nn.Module] = []
    in_ch = 3
    for k, widths in enumerate(base[:4]):
        if k > 1 or (k == 1 and not strided_stem):
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=(k == 3)))
        if k == 0 and strided_stem:
            layers += _conv_block(in_ch, widths[0], 3, batch_norm, stride=2, padding=1)
            layers += _vgg_stage(widths[0], widths[1:], batch_norm)
        else:
            layers += _vgg_stage(in_ch, widths, batch_norm)
        in_ch = widths[-1]
    return nn.Sequential(*layers)


def _build_upper(base: tuple[tuple[int, ...], ...], fc: tuple[int, int], batch_norm: bool) -> nn.Sequential:
    """pool4, conv5_x, pool5 (3x3 s1 p1), fc6 (3x3, dilation 6), fc7 (1x1): 38 -> 19, kept at 19."""
    layers: list[nn.Module] = [nn.MaxPool2d(2, 2)]
    layers += _vgg_stage(base[3][-1], base[4], batch_norm)
    layers.append(nn.MaxPool2d(3, 1, padding=1))
    # Dilation 6 = 2 x 3: pool5 no longer halves the map (x2) and fc6 is decimated to every 3rd tap (x3).
    layers += _conv_block(base[4][-1], fc[0], 3, batch_norm, padding=6, dilation=6)
    layers += _conv_block(fc[0], fc[1], 1, batch_norm)
    return nn.Sequential(*layers)


def _build_extras(in_ch: int, extras: tuple[tuple[int, int], ...], batch_norm: bool) -> nn.ModuleList:
    """conv8..conv11: 1x1 bottleneck then 3x3 (stride 2 pad 1 for 19 -> 10 -> 5, valid for 5 -> 3 -> 1)."""
    blocks = []
    for k, (mid, out) in enumerate(extras):
        strided = k < 2
        layers = _conv_block(in_ch, mid, 1, batch_norm)
        layers += _conv_block(mid, out, 3, batch_norm, stride=2 if strided else 1, padding=1 if strided else 0)
        blocks.append(nn.Sequential(*layers))
        in_ch = out
    return nn.ModuleList(blocks)


class SSD300(nn.Module):
    """SSD300: ``forward(x Tensor[B, 3, 300, 300]) -> (loc Tensor[B, P, 4], conf Tensor[B, P, C])``.

    ``loc`` are the encoded offsets of docs/CONTRACT.md "Encoding" (relative to cxcywh priors), ``conf`` raw logits;
    P = 8732 for 4/6/6/6/4/4 boxes per cell. Arguments (all explicit; ``model_from_config`` unpacks a
    ``ModelConfig``): ``base_channels`` 5 VGG stages of conv widths, ``fc_channels`` (fc6, fc7) widths,
    ``extra_channels`` 4 (1x1, 3x3) widths, ``head_boxes`` boxes per cell of the six sources,
    ``l2norm_scale`` the L2Norm init, ``batch_norm`` BN after every backbone / extra conv, ``strided_stem``
    conv1_1 with stride 2 instead of pool1 (same map sizes, ~4x cheaper stage 1),
    ``head_bias_prior`` initial background probability (None: zero conf biases), ``feature_maps`` the
    expected source sides (checked in ``forward``).
    """

    def __init__(self, num_classes: int, base_channels: tuple[tuple[int, ...], ...],
                 extra_channels: tuple[tuple[int, int], ...], head_boxes: tuple[int, ...],
                 l2norm_scale: float = 20.0, *, fc_channels: tuple[int, int] = (1024, 1024),
                 batch_norm: bool = False, strided_stem: bool = False, head_bias_prior: float | None = None,
                 feature_maps: tuple[int, ...] = SSD300_FEATURE_MAPS, image_size: int = 300) -> None:
        super().__init__()
        _check_arguments(num_classes, base_channels, fc_channels, extra_channels, head_boxes, feature_maps)
        self.num_classes = int(num_classes)
        self.head_boxes = tuple(int(b) for b in head_boxes)
        self.feature_maps = tuple(int(f) for f in feature_maps)
        self.image_size = int(image_size)
        self.num_priors = sum(f * f * b for f, b in zip(self.feature_maps, self.head_boxes))
        self.lower = _build_lower(base_channels, batch_norm, strided_stem)
        self.l2norm = L2Norm(base_channels[3][-1], l2norm_scale)
        self.upper = _build_upper(base_channels, fc_channels, batch_norm)
        self.extras = _build_extras(fc_channels[1], extra_channels, batch_norm)
        sources = [base_channels[3][-1], fc_channels[1]] + [out for _, out in extra_channels]
        self.loc_heads = nn.ModuleList(nn.Conv2d(c, b * 4, 3, padding=1) for c, b in zip(sources, self.head_boxes))
        self.conf_heads = nn.ModuleList(nn.Conv2d(c, b * self.num_classes, 3, padding=1)
                                        for c, b in zip(sources, self.head_boxes))
        self.reset_parameters(head_bias_prior)

    def reset_parameters(self, head_bias_prior: float | None = None) -> None:
        """Kaiming-normal (fan_out, ReLU) for backbone / extras convs, Xavier-uniform for the heads (as
        ssd.pytorch), zero biases, BN at identity, L2Norm at its scale.

        ``head_bias_prior = p`` sets the background conf bias to ``log(p (C - 1) / (1 - p))`` (others 0), so
        that softmax starts at ``P(background) = p`` at every prior (Lin et al., focal loss §3.3): with ~8700
        mostly-background priors the early conf loss then is not dominated by confident false positives.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for head in list(self.loc_heads) + list(self.conf_heads):
            nn.init.xavier_uniform_(head.weight)
            nn.init.zeros_(head.bias)
        self.l2norm.reset_parameters()
        if head_bias_prior is not None:
            self._init_background_bias(head_bias_prior)

    def _init_background_bias(self, p: float) -> None:
        if not 0.0 < p < 1.0:
            raise ValueError(f"head_bias_prior must be a probability in (0, 1), got {p!r}")
        bias = math.log(p * (self.num_classes - 1) / (1.0 - p))
        with torch.no_grad():
            for head in self.conf_heads:
                # channel a * C + 0 is the background logit of box a
                head.bias.view(-1, self.num_classes)[:, 0] = bias

    def sources(self, x: Tensor) -> list[Tensor]:
        """The six source maps ``[B, C_k, f_k, f_k]``: L2Norm(conv4_3), fc7, conv8_2 .. conv11_2."""
        conv4_3 = self.lower(x)
        out = [self.l2norm(conv4_3)]
        y = self.upper(conv4_3)
        out.append(y)
        for block in self.extras:
            y = block(y)
            out.append(y)
        return out

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x[B, 3, S, S]`` (S = image_size, normalised image) -> ``(loc[B, P, 4], conf[B, P, C])``."""
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (self.image_size, self.image_size):
            raise ValueError(f"SSD300 expects input [B, 3, {self.image_size}, {self.image_size}], "
                             f"got {list(x.shape)}")
        b = x.shape[0]
        locs, confs = [], []
        for k, (src, loc_head, conf_head) in enumerate(zip(self.sources(x), self.loc_heads, self.conf_heads)):
            if src.shape[-1] != self.feature_maps[k] or src.shape[-2] != self.feature_maps[k]:
                raise ValueError(f"source map {k} is {list(src.shape[-2:])}, expected {self.feature_maps[k]}")
            # NCHW -> NHWC puts the (box, coordinate) channels of one cell last: rows = cells row-major.
            locs.append(loc_head(src).permute(0, 2, 3, 1).reshape(b, -1, 4))
            confs.append(conf_head(src).permute(0, 2, 3, 1).reshape(b, -1, self.num_classes))
        return torch.cat(locs, dim=1), torch.cat(confs, dim=1)

    def vgg_convs(self) -> list[nn.Conv2d]:
        """The 15 convs that VGG16 weights map to, in order: conv1_1 .. conv5_3, fc6, fc7."""
        return [m for m in list(self.lower) + list(self.upper) if isinstance(m, nn.Conv2d)]


def _check_arguments(num_classes: int, base: tuple, fc: tuple, extras: tuple, head_boxes: tuple,
                     feature_maps: tuple) -> None:
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + 1 class), got {num_classes}")
    if len(base) != 5 or any(len(s) == 0 for s in base):
        raise ValueError(f"base_channels needs 5 non-empty VGG stages, got {base}")
    if len(fc) != 2:
        raise ValueError(f"fc_channels needs (fc6, fc7) widths, got {fc}")
    if len(extras) != 4 or any(len(e) != 2 for e in extras):
        raise ValueError(f"extra_channels needs 4 (1x1, 3x3) width pairs, got {extras}")
    if len(head_boxes) != 6 or len(feature_maps) != 6:
        raise ValueError(f"head_boxes and feature_maps need 6 entries (one per source), "
                         f"got {head_boxes} and {feature_maps}")


def model_from_config(cfg: ModelConfig) -> SSD300:
    """Build the network that ``cfg`` describes (the one place a ``ModelConfig`` is unpacked)."""
    return SSD300(num_classes=cfg.num_classes, base_channels=cfg.base_channels, extra_channels=cfg.extra_channels,
                  head_boxes=cfg.head_boxes, l2norm_scale=cfg.l2norm_scale, fc_channels=cfg.fc_channels,
                  batch_norm=cfg.batch_norm, strided_stem=cfg.strided_stem, head_bias_prior=cfg.head_bias_prior,
                  feature_maps=tuple(cfg.prior_spec.feature_maps), image_size=cfg.image_size)


def num_priors(model_or_cfg: SSD300 | ModelConfig) -> int:
    """P, the rows of the model's outputs (8732); build the priors themselves with
    ``ssd_torch.priors.default_boxes(cfg.prior_spec)``."""
    if isinstance(model_or_cfg, ModelConfig):
        return _spec_num_priors(model_or_cfg.prior_spec)
    return model_or_cfg.num_priors
