"""The state-dict layouts of ssd.pytorch's and lufficc/SSD's SSD300, written out by hand from their sources
(ssd.pytorch ``ssd.py``: ``vgg``, ``add_extras``, ``multibox`` with ``base['300']``, ``extras['300']``,
``mbox['300']``; lufficc ``ssd/modeling/backbone/vgg.py`` and ``box_head/box_predictor.py``), independently of the
key map in ``ssd_torch.modeling.importers`` that the tests check against them."""
from __future__ import annotations

import torch

#: ssd.pytorch ``vgg`` list (cfg 64, 64, M, 128, 128, M, 256 x3, C, 512 x3, M, 512 x3, then pool5, fc6, ReLU, fc7):
#: index -> conv weight shape.
VGG = {0: (64, 3, 3, 3), 2: (64, 64, 3, 3), 5: (128, 64, 3, 3), 7: (128, 128, 3, 3), 10: (256, 128, 3, 3),
       12: (256, 256, 3, 3), 14: (256, 256, 3, 3), 17: (512, 256, 3, 3), 19: (512, 512, 3, 3),
       21: (512, 512, 3, 3), 24: (512, 512, 3, 3), 26: (512, 512, 3, 3), 28: (512, 512, 3, 3),
       31: (1024, 512, 3, 3), 33: (1024, 1024, 1, 1)}
#: ``add_extras([256, 'S', 512, 128, 'S', 256, 128, 256, 128, 256], 1024)``: 1x1 and 3x3 convs alternate.
EXTRAS = {0: (256, 1024, 1, 1), 1: (512, 256, 3, 3), 2: (128, 512, 1, 1), 3: (256, 128, 3, 3),
          4: (128, 256, 1, 1), 5: (256, 128, 3, 3), 6: (128, 256, 1, 1), 7: (256, 128, 3, 3)}
#: Source channels (vgg[21] conv4_3, vgg[-2] fc7, extras 1, 3, 5, 7) and boxes per cell (mbox 4, 6, 6, 6, 4, 4).
SOURCES = (512, 1024, 512, 256, 256, 256)
BOXES = (4, 6, 6, 6, 4, 4)


def _convs(prefix: str, shapes: dict[int, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    out = {}
    for idx, shape in shapes.items():
        out[f"{prefix}{idx}.weight"], out[f"{prefix}{idx}.bias"] = shape, shape[:1]
    return out


def _heads(loc: str, conf: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    return {**_convs(loc, {k: (4 * b, c, 3, 3) for k, (c, b) in enumerate(zip(SOURCES, BOXES))}),
            **_convs(conf, {k: (num_classes * b, c, 3, 3) for k, (c, b) in enumerate(zip(SOURCES, BOXES))})}


def ssd_pytorch_shapes(num_classes: int = 21) -> dict[str, tuple[int, ...]]:
    """``build_ssd('test', 300, num_classes).state_dict()``: key -> shape."""
    return {**_convs("vgg.", VGG), "L2Norm.weight": (512,), **_convs("extras.", EXTRAS),
            **_heads("loc.", "conf.", num_classes)}


def lufficc_shapes(num_classes: int = 21) -> dict[str, tuple[int, ...]]:
    """lufficc ``SSDDetector`` (backbone ``VGG``, box head ``SSDBoxPredictor``) ``state_dict()``: key -> shape."""
    return {**_convs("backbone.vgg.", VGG), **_convs("backbone.extras.", EXTRAS), "backbone.l2_norm.weight": (512,),
            **_heads("box_head.predictor.reg_headers.", "box_head.predictor.cls_headers.", num_classes)}


def random_state_dict(shapes: dict[str, tuple[int, ...]], seed: int, scale: float = 0.01) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=gen) * scale for k, s in shapes.items()}


def torchvision_shapes(num_classes: int = 91) -> dict[str, tuple[int, ...]]:
    """torchvision ``ssd300_vgg16(num_classes=...)`` ``state_dict()``: key -> shape, from torchvision's own module
    (built on the meta device: no memory, no download)."""
    from torchvision.models.detection import ssd300_vgg16

    with torch.device("meta"):
        model = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=num_classes)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
