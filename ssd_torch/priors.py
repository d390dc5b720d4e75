"""Default boxes (priors) of SSD300 on any device (docs/CONTRACT.md "Default boxes"; SSD paper §2.2).

The torch twin of ``reference.priors.default_boxes``: the layout comes from a ``reference.priors.PriorSpec``
(the presets ``SSD300``, ``SSD_PYTORCH_VOC``, ``LUFFICC_VOC``, ``TORCHVISION_COCO`` and ``PRESETS`` live
there, as do ``boxes_per_cell`` and ``num_priors``). Boxes are ``cxcywh`` normalised, ordered by feature map,
then cells row-major (row i, column j), then the per-cell order of docs/CONTRACT.md.
"""
from __future__ import annotations

import math

import torch

from reference.priors import SSD300, PriorSpec

__all__ = ["default_boxes"]


def _cell_sizes(s_k: float, s_next: float, aspect_ratios: tuple) -> list[tuple[float, float]]:
    """``(w, h)`` of one cell's boxes in docs/CONTRACT.md "Default boxes" order, computed in Python floats
    (float64) like the reference."""
    s_prime = math.sqrt(s_k * s_next)  # extra square box of scale s'_k = sqrt(s_k s_k+1) (paper §2.2)
    sizes = [(s_k, s_k), (s_prime, s_prime)]
    for ar in aspect_ratios:
        r = math.sqrt(ar)
        sizes.extend([(s_k * r, s_k / r), (s_k / r, s_k * r)])
    return sizes


def _map_boxes(spec: PriorSpec, k: int) -> torch.Tensor:
    """Priors of feature map ``k`` -> ``Tensor[f_k * f_k * n_k, 4]`` cxcywh float64 (CPU)."""
    f = spec.feature_maps[k]
    idx = torch.arange(f, dtype=torch.float64)
    if spec.steps is None:
        centres = (idx + 0.5) / f
    else:
        centres = (idx + 0.5) / (spec.image_size / spec.steps[k])  # as the peers write it: f_k = size / step
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")  # row-major: row i is y, column j is x
    sizes = torch.tensor(_cell_sizes(spec.scales[k], spec.scales[k + 1], spec.aspect_ratios[k]),
                         dtype=torch.float64)  # [n_k, 2]
    n = sizes.shape[0]
    centre = torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=-1)  # [f*f, 2]
    boxes = torch.cat([centre[:, None, :].expand(-1, n, 2), sizes[None].expand(f * f, n, 2)], dim=-1)
    return boxes.reshape(-1, 4)


def default_boxes(spec: PriorSpec = SSD300, device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """All priors of ``spec`` -> ``Tensor[P, 4]`` cxcywh normalised on ``device`` in ``dtype``.

    Computed in float64 on the CPU (a one-off, P = 8732 for SSD300) with the reference's arithmetic, then cast,
    so the float32 priors are the correctly rounded reference values.
    """
    if not isinstance(spec, PriorSpec):
        raise TypeError(f"spec must be a reference.priors.PriorSpec, got {type(spec).__name__}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating point dtype, got {dtype}")
    out = torch.cat([_map_boxes(spec, k) for k in range(len(spec.feature_maps))], dim=0)
    if spec.clip:
        # clip_centres=False (torchvision's DefaultBoxGenerator) clamps the sizes only
        first = 0 if spec.clip_centres else 2
        out[:, first:] = out[:, first:].clamp(0.0, 1.0)
    return out.to(device=device, dtype=dtype)
