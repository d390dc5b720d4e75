"""The ranking key of the exported detector: per-class log-probabilities that keep their resolution near 1
(docs/CONTRACT.md "Exported detector").

For the logits ``x`` of one prior: ``m = max x``, ``j*`` the first argmax, ``S' = sum_{j != j*} exp(x[j] - m)``,
``logp[c] = (x[c] - m) - log1p(S')``. A softmax probability of 0.9999999 rounds to 1.0 in float32 and ties with
every other near-certain box; ``logp`` keeps them apart (the ranking contract that ``ssd_torch.nms`` is moving to).

:func:`class_log_scores` is the ONE place the graph takes its key from. When ``ssd_torch.nms.class_log_scores``
exists (helper A's ranking change), replace its definition by ``from ssd_torch.nms import class_log_scores``
(one line), provided that function exports ``log1p`` as exactly as :func:`log1p_exportable` does.
"""
from __future__ import annotations

import torch

__all__ = ["class_log_scores", "log1p_exportable"]


def log1p_exportable(s: torch.Tensor) -> torch.Tensor:
    """``log1p(s)`` for ``s >= 0``, to a few float32 ulps, from ops that survive ONNX export.

    ``torch.log1p`` exports as ``Log(Add(1, s))``, which returns 0 for every ``s < 6e-8``: exactly the
    near-certain boxes whose order the key exists for. ``log(u) * s / (u - 1)`` with ``u = 1 + s`` (Goldberg's
    trick) cancels the rounding error of ``u``; where ``u == 1``, ``log1p(s) = s`` to float32 precision. Float32
    throughout (no float64: TensorRT has none)."""
    u = 1.0 + s
    d = u - 1.0
    ratio = torch.where(d == 0, torch.ones_like(s), s / torch.where(d == 0, torch.ones_like(d), d))
    return torch.where(d == 0, s, torch.log(u) * ratio)


def class_log_scores(conf: torch.Tensor) -> torch.Tensor:
    """``logp[..., C]`` of logits ``conf[..., C]`` (see the module docstring), float32 or wider."""
    x = conf.to(torch.promote_types(conf.dtype, torch.float32))
    m = x.max(dim=-1, keepdim=True).values
    first = x.argmax(dim=-1, keepdim=True)  # first index of the max: torch and ONNX ArgMax agree
    shifted = x - m
    others = torch.arange(x.shape[-1], device=x.device) != first
    # summing only the non-argmax terms (not sum - 1) keeps S' exact when it is tiny
    rest = torch.where(others, shifted.exp(), torch.zeros_like(shifted)).sum(dim=-1, keepdim=True)
    return shifted - log1p_exportable(rest)
