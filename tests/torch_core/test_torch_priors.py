"""ssd_torch.priors vs reference.priors for every PriorSpec preset (float64 exact, float32 correctly rounded)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import reference.priors as rp
from ssd_torch.priors import default_boxes
from torch_cases import SMALL_SPEC

PRESETS = {name: spec for name, spec in vars(rp).items() if isinstance(spec, rp.PriorSpec)}


def test_presets_found() -> None:
    assert {"SSD300", "SSD_PYTORCH_VOC", "LUFFICC_VOC", "TORCHVISION_COCO"} <= set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_float64_equals_reference(name: str) -> None:
    spec = PRESETS[name]
    ours = default_boxes(spec, dtype=torch.float64)
    ref = rp.default_boxes(spec)
    assert ours.shape == (rp.num_priors(spec), 4)
    np.testing.assert_array_equal(ours.numpy(), ref)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_float32_is_rounded_reference(name: str) -> None:
    ours = default_boxes(PRESETS[name])
    assert ours.dtype == torch.float32
    np.testing.assert_array_equal(ours.numpy(), rp.default_boxes(PRESETS[name]).astype(np.float32))


def test_ssd300_count_and_first_cell() -> None:
    pri = default_boxes(rp.SSD300, dtype=torch.float64)
    assert pri.shape == (8732, 4)
    s, s_next = 0.1, 0.2  # first map of the SSD300 layout: 4 boxes per cell, centre (0.5/38, 0.5/38)
    r = 2 ** 0.5
    expected = [[0.5 / 38, 0.5 / 38, w, h] for w, h in
                [(s, s), ((s * s_next) ** 0.5,) * 2, (s * r, s / r), (s / r, s * r)]]
    torch.testing.assert_close(pri[:4], torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)


def test_unclipped_and_small_spec() -> None:
    spec = rp.PriorSpec(feature_maps=SMALL_SPEC.feature_maps, scales=SMALL_SPEC.scales,
                        aspect_ratios=SMALL_SPEC.aspect_ratios, clip=False)
    ours = default_boxes(spec, dtype=torch.float64)
    np.testing.assert_array_equal(ours.numpy(), rp.default_boxes(spec))
    assert float(ours[:, 2:].max()) > 1.0  # the unclipped table has sizes above 1


def test_dtype_and_device_arguments() -> None:
    pri = default_boxes(SMALL_SPEC, device="cpu", dtype=torch.float16)
    assert pri.dtype == torch.float16 and pri.device.type == "cpu"


def test_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="PriorSpec"):
        default_boxes({"feature_maps": (38,)})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating"):
        default_boxes(SMALL_SPEC, dtype=torch.int64)


def test_torchvision_preset_equals_ssd300_vgg16_default_box_generator() -> None:
    """TORCHVISION_COCO against the anchor generator of the real ``ssd300_vgg16`` (xyxy pixels at 300x300, as its
    forward returns them), so that scales, steps, per-cell order and clip semantics are all torchvision's."""
    from torchvision.models.detection import ssd300_vgg16
    from torchvision.models.detection.image_list import ImageList

    with torch.device("meta"):  # the generator holds no weights; the network itself is not needed
        generator = ssd300_vgg16(weights=None, weights_backbone=None).anchor_generator
    images = ImageList(torch.zeros(1, 3, 300, 300), [(300, 300)])
    maps = [torch.zeros(1, 1, f, f) for f in rp.TORCHVISION_COCO.feature_maps]
    theirs = generator(images, maps)[0]
    ours = default_boxes(rp.TORCHVISION_COCO, dtype=torch.float64)
    ours_xyxy = torch.cat([ours[:, :2] - 0.5 * ours[:, 2:], ours[:, :2] + 0.5 * ours[:, 2:]], dim=1) * 300
    assert theirs.shape == (8732, 4)
    torch.testing.assert_close(ours_xyxy.float(), theirs, rtol=0, atol=1e-4)  # float32 pixels: ~2e-5 apart
    assert float(theirs[:, 2].max()) > 300.0  # torchvision keeps centres past the border (unclipped cx)
