"""Padded detection batches (docs/CONTRACT.md "Conventions": ``boxes[B, G_max, 4]``, ``labels[B, G_max]``,
``counts[B]``)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch

__all__ = ["Batch", "collate_detection"]


class Batch(NamedTuple):
    """A training/evaluation batch.

    ``images``: ``Tensor[B, 3, S, S]`` float32; ``boxes``: ``Tensor[B, G_max, 4]`` xyxy normalised, rows
    ``>= counts[b]`` are zero; ``labels``: ``Tensor[B, G_max]`` int64, padding 0 (= background);
    ``counts``: ``Tensor[B]`` int64, the number of real boxes per image. ``G_max = max(counts)`` (may be 0).
    """

    images: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    counts: torch.Tensor


def collate_detection(samples: Sequence[tuple[torch.Tensor, Mapping[str, torch.Tensor]]]) -> Batch:
    """Stack ``(image[3, S, S], {"boxes": [G_i, 4], "labels": [G_i]})`` samples into a zero-padded :class:`Batch`.

    Padding instead of a list keeps the loss/matching free of Python loops over images (docs/CONTRACT.md).
    """
    if len(samples) == 0:
        raise ValueError("collate_detection needs at least one sample")
    images = torch.stack([img for img, _ in samples])
    counts = torch.tensor([int(t["boxes"].shape[0]) for _, t in samples], dtype=torch.int64)
    g_max = int(counts.max())
    boxes = torch.zeros((len(samples), g_max, 4), dtype=torch.float32)
    labels = torch.zeros((len(samples), g_max), dtype=torch.int64)
    for b, (_, target) in enumerate(samples):
        g = int(counts[b])
        if target["labels"].shape[0] != g:
            raise ValueError(f"sample {b}: {g} boxes but {target['labels'].shape[0]} labels")
        boxes[b, :g] = target["boxes"].reshape(g, 4)
        labels[b, :g] = target["labels"]
    return Batch(images, boxes, labels, counts)
