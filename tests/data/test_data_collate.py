"""Padded batches: shapes, zero padding, counts, empty images and an all-empty batch (G_max = 0)."""
from __future__ import annotations

import pytest
import torch

from ssd_torch.data.collate import Batch, collate_detection


def _sample(n: int, fill: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    boxes = torch.full((n, 4), fill)
    return torch.full((3, 8, 8), fill), {"boxes": boxes, "labels": torch.arange(1, n + 1)}


def test_padding_and_counts() -> None:
    batch = collate_detection([_sample(2, 0.1), _sample(0, 0.2), _sample(3, 0.3)])
    assert isinstance(batch, Batch)
    assert batch.images.shape == (3, 3, 8, 8) and batch.boxes.shape == (3, 3, 4) and batch.labels.shape == (3, 3)
    assert batch.counts.tolist() == [2, 0, 3] and batch.counts.dtype == torch.int64
    assert batch.labels.dtype == torch.int64 and batch.boxes.dtype == torch.float32
    assert batch.labels.tolist() == [[1, 2, 0], [0, 0, 0], [1, 2, 3]]
    assert torch.equal(batch.boxes[0, :2], torch.full((2, 4), 0.1)) and not batch.boxes[0, 2:].any()
    assert not batch.boxes[1].any() and torch.equal(batch.boxes[2], torch.full((3, 4), 0.3))
    assert torch.equal(batch.images[1], torch.full((3, 8, 8), 0.2))


def test_all_empty_batch() -> None:
    batch = collate_detection([_sample(0, 0.0), _sample(0, 1.0)])
    assert batch.boxes.shape == (2, 0, 4) and batch.labels.shape == (2, 0) and batch.counts.tolist() == [0, 0]


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        collate_detection([])
    img, target = _sample(2, 0.5)
    target["labels"] = target["labels"][:1]
    with pytest.raises(ValueError, match="sample 0: 2 boxes but 1 labels"):
        collate_detection([(img, target)])
