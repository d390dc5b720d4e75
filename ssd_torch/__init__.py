"""PyTorch SSD300: model, batched targets, loss, post-processing, data, training and evaluation.

``ssd_torch.Detector`` (``ssd_torch.detector``) is the one-call inference API::

    detector = ssd_torch.Detector.from_checkpoint("best.pt")
    result = detector("photo.jpg")     # boxes (pixels, xyxy), scores, labels, class_names

It is imported on first use, so that ``import ssd_torch.<module>`` stays light.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Detector", "ImageDetections"]


def __getattr__(name: str) -> Any:  # PEP 562: lazy, the detector pulls in the model and torch
    if name in __all__:
        from ssd_torch import detector

        return getattr(detector, name)
    raise AttributeError(f"module 'ssd_torch' has no attribute {name!r}")
