"""How pixels become the network's input: a frozen :class:`Preprocess` spec that belongs to the MODEL.

Weights were trained on one input convention and only work with it: torchvision's ImageNet VGG16 expects RGB in
[0, 1] normalised by the ImageNet mean/std; the Caffe-converted reduced-fc VGG16 (ssd.pytorch's
``vgg16_reducedfc.pth``, ported by torchvision as ``IMAGENET1K_FEATURES``) and every SSD trained from it expect
0-255 pixels minus the Caffe mean pixel, no std division — in RGB order, as all three peers feed them. So the
spec is stored in ``ModelConfig.preprocess`` and every consumer (training and evaluation
transforms, ``ssd-detect``, ``ssd-eval``, ``ssd-crosscheck``, the ONNX sidecar) reads it from there.

For an 8-bit RGB pixel ``p`` (0..255) and input channel ``c``::

    x[c] = (p[order[c]] * pixel_scale / 255 - mean[c]) / std[c]

with ``order = (0, 1, 2)`` for RGB and ``(2, 1, 0)`` for BGR; ``mean`` and ``std`` are given in the input's
channel order and pixel scale, as the peers write them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

__all__ = ["Preprocess", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGENET", "CAFFE_RGB", "CAFFE_BGR", "TORCHVISION_SSD"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
_ORDERS = {"RGB": (0, 1, 2), "BGR": (2, 1, 0)}
_SCALES = (1.0, 255.0)


@dataclass(frozen=True)
class Preprocess:
    """Input convention of a model: ``channel_order`` ("RGB" | "BGR"), ``pixel_scale`` (1: pixels in [0, 1];
    255: pixels in [0, 255]), and per-channel ``mean`` / ``std`` in that order and scale (module formula)."""

    channel_order: str = "RGB"
    pixel_scale: float = 1.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _triple("mean", self.mean))
        object.__setattr__(self, "std", _triple("std", self.std))
        object.__setattr__(self, "pixel_scale", float(self.pixel_scale))
        if self.channel_order not in _ORDERS:
            raise ValueError(f"Preprocess.channel_order must be one of {sorted(_ORDERS)}, got {self.channel_order!r}")
        if self.pixel_scale not in _SCALES:
            raise ValueError(f"Preprocess.pixel_scale must be 1 or 255, got {self.pixel_scale!r}")
        if not all(s > 0 for s in self.std):
            raise ValueError(f"Preprocess.std must be positive, got {self.std}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists) for checkpoints and JSON sidecars; :meth:`from_dict` inverts it."""
        return {"channel_order": self.channel_order, "pixel_scale": self.pixel_scale, "mean": list(self.mean),
                "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: Any) -> "Preprocess":
        from ssd_torch.plain import dataclass_fields

        return cls(**dataclass_fields(cls, d, "Preprocess"))

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``RGB 0-255, minus mean [123, 117, 104], divided by std [1, 1, 1]``."""
        def fmt(values: tuple[float, ...]) -> str:
            return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"
        scale = "0-255" if self.pixel_scale == 255.0 else "in [0, 1]"
        text = f"{self.channel_order} {scale}, minus mean {fmt(self.mean)}, divided by std {fmt(self.std)}"
        gains = [self.pixel_scale / (255.0 * s) for s in self.std]
        if self.pixel_scale == 1.0 and all(abs(g - 1.0) < 1e-9 for g in gains):  # torchvision's Caffe-mean form
            text += f" (= 0-255 minus {fmt(tuple(m / s for m, s in zip(self.mean, self.std)))})"
        return text

    def neutral_pixel(self) -> tuple[int, int, int]:
        """The 8-bit RGB colour whose input is ~0 in every channel (the zoom-out fill, the paper's "mean")."""
        per_input = [m * 255.0 / self.pixel_scale for m in self.mean]
        rgb = [0.0, 0.0, 0.0]
        for c, src in enumerate(_ORDERS[self.channel_order]):
            rgb[src] = per_input[c]
        return tuple(int(round(min(max(v, 0.0), 255.0))) for v in rgb)  # type: ignore[return-value]

    def channel_affine(self) -> tuple[list[int], list[float], list[float]]:
        """The module formula on 0-255 RGB pixels as ``x[c] = (p[order[c]] - shift[c]) * scale[c]``: returns
        ``(order, shift, scale)`` (used by :meth:`to_tensor` and by graphs that take pixels, e.g. ONNX)."""
        shift = [m * 255.0 / self.pixel_scale for m in self.mean]
        scale = [self.pixel_scale / (255.0 * s) for s in self.std]
        return list(_ORDERS[self.channel_order]), shift, scale

    def to_tensor(self, image: Image.Image) -> torch.Tensor:
        """An RGB PIL image -> ``Tensor[3, H, W]`` float32 network input (module formula)."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        w, h = rgb.size
        hwc = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(h, w, 3)
        order, shift, scale = self.channel_affine()
        t = hwc.permute(2, 0, 1)[order].contiguous().to(torch.float32)  # uint8 copy first: 4x less traffic
        return t.sub_(torch.tensor(shift).view(3, 1, 1)).mul_(torch.tensor(scale).view(3, 1, 1))


def _triple(name: str, value: Any) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"Preprocess.{name} must be three numbers, got {value!r}") from None
    if len(out) != 3:
        raise ValueError(f"Preprocess.{name} must be three numbers, got {value!r}")
    return out  # type: ignore[return-value]


#: torchvision's ImageNet weights (``VGG16_Weights.IMAGENET1K_V1``: its ``ImageClassification`` transform's default
#: mean / std on RGB in [0, 1]) and the default of our own models.
IMAGENET = Preprocess()
#: The Caffe mean pixel (B 104, G 117, R 123) on 0-255 pixels, no std, fed in RGB order: what ssd.pytorch (``train.py``
#: and ``eval.py`` through ``VOCDetection.pull_item``: cv2's BGR image minus ``MEANS = (104, 117, 123)``, then
#: ``img[:, :, (2, 1, 0)]``) and lufficc/SSD (PIL RGB image minus ``INPUT.PIXEL_MEAN = [123, 117, 104]``) feed both
#: their trained SSD300 models and the ``vgg16_reducedfc.pth`` backbone they start from.
CAFFE_RGB = Preprocess("RGB", 255.0, (123.0, 117.0, 104.0), (1.0, 1.0, 1.0))
#: Caffe's own order, BGR 0-255 minus the mean pixel (weiliu89's Caffe SSD, opencv images): for weights converted
#: from a ``.caffemodel`` without swapping conv1_1's input channels. None of the peer files we import uses it.
CAFFE_BGR = Preprocess("BGR", 255.0, (104.0, 117.0, 123.0), (1.0, 1.0, 1.0))
#: torchvision's ``ssd300_vgg16`` (``GeneralizedRCNNTransform(image_mean=[0.48235, 0.45882, 0.40784],
#: image_std=[1/255] * 3)``) and its backbone ``VGG16_Weights.IMAGENET1K_FEATURES`` (the same numbers in its
#: transforms; a port of ssd.pytorch's ``vgg16_reducedfc.pth``): RGB 0-255 minus 255 x mean = (123.0, 117.0, 104.0)
#: to within 1e-3, written in torchvision's [0, 1] form so that the input is torchvision's to the last bit.
TORCHVISION_SSD = Preprocess("RGB", 1.0, (0.48235, 0.45882, 0.40784), (1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0))
