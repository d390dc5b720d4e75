"""An imported torchvision ``ssd300_vgg16`` computes torchvision's function: the same input tensor from the same
image, the same raw head outputs, and the same post-processed detections as ``SSD.forward`` in eval mode.

The weights are random (``weights=None, weights_backbone=None``), each head then scaled so that its outputs are
of order one on the test image (random VGG features of a 0-255 input are in the hundreds, which would saturate the
softmax and make every box huge), and the classification biases set so that three classes are confident and the
others mostly below the 0.01 score threshold: a realistic, not degenerate, post-processing workload.

Resizing: torchvision resizes inside the model (``F.interpolate``, bilinear, ``align_corners=False``, no
antialiasing, on the normalised float image); we resize the 8-bit image with PIL (bilinear, antialiased when
shrinking, rounded to 8 bits) before normalising. They agree exactly where both are exact: at 300x300 (both the
identity) and for a 2x enlargement of an image whose pixels are multiples of 16 (every interpolated value, 9/16,
3/16 and 1/16 weights, is then an integer). For other sizes they differ by up to a few grey levels (shrinking
most: PIL averages over the whole footprint, torch samples 2x2 pixels), so detections agree only approximately.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.detection import ssd300_vgg16 as tv_ssd300_vgg16
from torchvision.models.detection.image_list import ImageList
from torchvision.transforms.functional import pil_to_tensor

from ssd_torch.coding import decode
from ssd_torch.data.transforms import SSDEvalTransform
from ssd_torch.modeling.importers import coco_class_names, import_state_dict
from ssd_torch.modeling.model import SSD300, model_from_config
from ssd_torch.nms import postprocess
from ssd_torch.priors import default_boxes

CONFIDENT = (1, 3, 18)  # person, car, dog: biased up so that confident detections exist
pytestmark = pytest.mark.slow  # two full VGG16 SSD300 networks, four forward passes (~8 s on 2 cores)


def _image(size: int, seed: int) -> Image.Image:
    """A smooth random RGB image (blocks of colour, bilinearly enlarged) of ``size x size``."""
    gen = np.random.default_rng(seed)
    small = Image.fromarray(gen.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    return small.resize((size, size), Image.BILINEAR)


def _to_float(image: Image.Image) -> torch.Tensor:
    """torchvision's model input: ``[3, H, W]`` float in [0, 1]."""
    return pil_to_tensor(image).float() / 255.0


@torch.no_grad()
def _tame_heads(tv: torch.nn.Module, features: list[torch.Tensor]) -> None:
    """Scale each head conv so that its outputs have std 0.5 (loc) / 0.7 (conf) on ``features``; background bias
    +6, the CONFIDENT classes +6.5."""
    heads = [(tv.head.regression_head.module_list, 0.5), (tv.head.classification_head.module_list, 0.7)]
    for module_list, target in heads:
        for conv, feature in zip(module_list, features):
            conv.weight.mul_(target / float(conv(feature).std()))
            conv.bias.zero_()
    for conv in tv.head.classification_head.module_list:
        bias = conv.bias.view(-1, 91)  # channel a * 91 + c is box a's class c
        bias[:, 0] = 6.0
        bias[:, list(CONFIDENT)] = 6.5


@dataclass
class Pair:
    tv: torch.nn.Module
    ours: SSD300
    cfg: object
    image: Image.Image
    x_tv: torch.Tensor  # torchvision's transform of the image, [1, 3, 300, 300]
    features: list[torch.Tensor]  # torchvision's backbone on x_tv
    head: dict[str, torch.Tensor]  # torchvision's head on them
    loc: torch.Tensor  # our network on x_tv
    conf: torch.Tensor


@pytest.fixture(scope="module")
def pair() -> Pair:
    torch.manual_seed(0)
    tv = tv_ssd300_vgg16(weights=None, weights_backbone=None).eval()
    image = _image(300, seed=1)
    with torch.no_grad():
        x_tv = tv.transform([_to_float(image)])[0].tensors
        features = list(tv.backbone(x_tv).values())
        _tame_heads(tv, features)
        head = tv.head(features)
    cfg, names, sd = import_state_dict("torchvision", tv.state_dict())
    assert names == coco_class_names() and cfg.num_classes == 91
    with torch.device("meta"):  # every tensor comes from torchvision's model
        ours = model_from_config(cfg)
    ours.load_state_dict(sd, assign=True)
    with torch.no_grad():
        loc, conf = ours.eval()(x_tv)
    return Pair(tv, ours, cfg, image, x_tv, features, head, loc, conf)


@pytest.mark.parametrize("size", [300, 150])
def test_preprocessing_equals_torchvision_transform(pair: Pair, size: int) -> None:
    """Our input tensor (PIL resize + the imported Preprocess) is torchvision's (GeneralizedRCNNTransform), where
    both resizes are exact: 300x300 and a 2x enlargement of an image of multiples of 16."""
    image = pair.image if size == 300 else Image.fromarray((np.asarray(_image(150, 2)) // 16 * 16).astype(np.uint8))
    want = pair.tv.transform([_to_float(image)])[0].tensors[0]
    got, _, _ = SSDEvalTransform(300, pair.cfg.preprocess)(image, np.zeros((0, 4)), np.zeros(0))
    assert want.shape == got.shape == (3, 300, 300)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-4)  # 0-255 scale: float32 rounding only


def test_raw_outputs_and_decoded_boxes_equal_torchvision(pair: Pair) -> None:
    """Head outputs, and every decoded box: our priors (TORCHVISION_COCO, centres past the border unclipped) and
    docs/CONTRACT.md decoding against torchvision's anchors and ``BoxCoder(weights=(10, 10, 5, 5))``."""
    head, loc, conf = pair.head, pair.loc, pair.conf
    with torch.no_grad():
        anchors = pair.tv.anchor_generator(ImageList(pair.x_tv, [(300, 300)]), pair.features)[0]
        tv_boxes = pair.tv.box_coder.decode_single(head["bbox_regression"][0], anchors)
    assert loc.shape == head["bbox_regression"].shape == (1, 8732, 4)
    assert conf.shape == head["cls_logits"].shape == (1, 8732, 91)
    torch.testing.assert_close(loc, head["bbox_regression"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(conf, head["cls_logits"], rtol=1e-4, atol=1e-4)
    assert 0.3 < float(loc.std()) < 0.8  # tamed: boxes stay near their priors, logits of order one
    ours_boxes = decode(loc[0], default_boxes(pair.cfg.prior_spec)) * 300.0
    torch.testing.assert_close(ours_boxes, tv_boxes, rtol=0, atol=1e-3)  # pixels


def test_detections_equal_torchvision_eval_forward(pair: Pair) -> None:
    """boxes within 0.5 px, the same labels, scores within 1e-4, in the same order (post-processing of both:
    softmax, decode with (10, 10, 5, 5) = variances (0.1, 0.2), clip, score > 0.01, top 400 per class, NMS 0.45,
    200 per image)."""
    with torch.no_grad():
        want = pair.tv([_to_float(pair.image)])[0]
        x, _, _ = SSDEvalTransform(300, pair.cfg.preprocess)(pair.image, np.zeros((0, 4)), np.zeros(0))
        loc, conf = pair.ours(x[None])
    dets = postprocess(loc, conf, default_boxes(pair.cfg.prior_spec))[0]
    boxes = dets.boxes * torch.tensor([300.0, 300.0, 300.0, 300.0])
    assert len(want["scores"]) == len(dets.scores) == 200
    assert float(want["scores"][0]) > 0.5 and set(want["labels"][:50].tolist()) <= set(CONFIDENT)
    assert torch.equal(dets.labels, want["labels"])
    torch.testing.assert_close(dets.scores, want["scores"], rtol=0, atol=1e-4)
    torch.testing.assert_close(boxes, want["boxes"], rtol=0, atol=0.5)
    assert float((boxes - want["boxes"]).abs().max()) < 1e-2  # in fact float rounding only
