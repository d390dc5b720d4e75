"""What a training step optimises: the matcher and the MultiBox loss, built from the loss section
(``LossConfig``) the same way for ``ssd-train`` and for the training benchmark (``benchmarks/bench_gpu_train``).

``match_fn(boxes[B,G,4] xyxy normalised, labels[B,G], counts[B]) -> (labels[B,P], loc_targets[B,P,4])``
(docs/CONTRACT.md "Matching", "Encoding"); ``loss_fn(loc[B,P,4], conf[B,P,C], labels, loc_targets) -> LossParts``
divided by max(N, 1) (docs/CONTRACT.md "Loss"; ``loss.min_negatives`` hard negatives for an image without
positives, 0 = the paper's rule). ``step.train_step`` takes both.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    from ssd_torch.training.train_config import LossConfig

__all__ = ["build_objective"]


def build_objective(loss: "LossConfig", priors: torch.Tensor,
                    variances: tuple[float, float]) -> tuple[Callable, Callable]:
    """(match_fn, loss_fn) for ``priors[P, 4]`` cxcywh on their device, encoding with the model's
    ``variances`` (``ModelConfig.variances``: the ones every checkpoint carries and inference decodes with);
    the value checks of ``match_batch`` run on the CPU only (on CUDA they would synchronise every step)."""
    from ssd_torch.loss import multibox_loss_from_targets
    from ssd_torch.matching import match_batch
    match_fn = functools.partial(match_batch, priors=priors, iou_threshold=loss.iou_threshold,
                                 variances=variances, backend=loss.backend,
                                 validate=priors.device.type == "cpu")
    loss_fn = functools.partial(multibox_loss_from_targets, neg_pos_ratio=loss.neg_pos_ratio,
                                min_negatives=loss.min_negatives)
    return match_fn, loss_fn
