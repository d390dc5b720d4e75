"""SSD augmentation: output contract, box/pixel consistency, flip, sanitising, crop rules, RNG discipline."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from ssd_torch.data.transforms import _GRAY as _LUMA
from ssd_torch.data.transforms import _hue_rotation
from ssd_torch.data.preprocess import CAFFE_BGR, IMAGENET, IMAGENET_MEAN, IMAGENET_STD, Preprocess
from ssd_torch.data.transforms import (CROP_OPTIONS, SSDEvalTransform, SSDTrainTransform,
                                       photometric_matrix, sample_iou_crop)

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """Undo the normalisation: ``[3, S, S]`` -> ``uint8[S, S, 3]``."""
    return ((image * STD + MEAN) * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


@st.composite
def image_and_boxes(draw: st.DrawFn) -> tuple[Image.Image, torch.Tensor, torch.Tensor]:
    w, h = draw(st.integers(40, 400)), draw(st.integers(40, 400))
    n = draw(st.integers(0, 5))
    rows = []
    for _ in range(n):
        x0, y0 = draw(st.floats(0, 0.9)), draw(st.floats(0, 0.9))
        rows.append([x0, y0, draw(st.floats(x0 + 0.02, 1.0)), draw(st.floats(y0 + 0.02, 1.0))])
    seed = draw(st.integers(0, 2**31 - 1))
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    labels = torch.tensor(draw(st.lists(st.integers(1, 20), min_size=n, max_size=n)), dtype=torch.int64)
    return Image.fromarray(arr), torch.tensor(rows, dtype=torch.float32).reshape(-1, 4), labels


def test_imagenet_preprocess_formula() -> None:
    img = Image.fromarray(np.array([[[0, 128, 255], [10, 20, 30]]], dtype=np.uint8))
    got = IMAGENET.to_tensor(img)
    raw = torch.tensor([[[0.0, 10.0]], [[128.0, 20.0]], [[255.0, 30.0]]])
    want = (raw / 255.0 - MEAN) / STD
    assert got.shape == (3, 1, 2) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_caffe_bgr_preprocess_hand_computed_pixel() -> None:
    """RGB pixel (200, 100, 50) -> BGR 0-255 minus (104, 117, 123): (50 - 104, 100 - 117, 200 - 123)."""
    img = Image.new("RGB", (1, 1), (200, 100, 50))
    assert CAFFE_BGR.to_tensor(img).flatten().tolist() == [-54.0, -17.0, 77.0]
    assert CAFFE_BGR.neutral_pixel() == (123, 117, 104)
    assert IMAGENET.neutral_pixel() == (124, 116, 104)


def test_preprocess_validates_and_round_trips() -> None:
    assert Preprocess.from_dict(CAFFE_BGR.to_dict()) == CAFFE_BGR
    with pytest.raises(ValueError, match="channel_order"):
        Preprocess("GBR")
    with pytest.raises(ValueError, match="pixel_scale"):
        Preprocess(pixel_scale=2.0)
    with pytest.raises(ValueError, match="std"):
        Preprocess(std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="unknown keys"):
        Preprocess.from_dict({"order": "RGB"})


def test_eval_transform_resizes_and_keeps_targets() -> None:
    img = Image.new("RGB", (500, 375), tuple(int(round(255 * m)) for m in IMAGENET_MEAN))
    boxes = np.array([[0.1, 0.2, 0.5, 0.9]])
    out, b, lab = SSDEvalTransform(size=300)(img, boxes, [3])
    assert out.shape == (3, 300, 300) and float(out.abs().max()) < 0.01  # the mean colour normalises to ~0
    assert b.dtype == torch.float32 and torch.equal(b, torch.tensor(boxes, dtype=torch.float32))
    assert lab.tolist() == [3] and lab.dtype == torch.int64


@given(image_and_boxes())
def test_train_output_contract(sample: tuple) -> None:
    img, boxes, labels = sample
    torch.manual_seed(len(labels))
    out, b, lab = SSDTrainTransform(size=300)(img, boxes, labels)
    assert out.shape == (3, 300, 300) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert b.shape == (lab.shape[0], 4) and b.dtype == torch.float32 and lab.dtype == torch.int64
    assert bool(((b >= 0) & (b <= 1)).all())
    assert bool(((b[:, 2] - b[:, 0]) * 300 >= 1).all()) and bool(((b[:, 3] - b[:, 1]) * 300 >= 1).all())
    assert set(lab.tolist()) <= set(labels.tolist()) and lab.shape[0] <= labels.shape[0]


@given(st.integers(0, 2**31 - 1), st.floats(0.05, 0.6), st.floats(0.05, 0.6), st.floats(0.0, 0.4),
       st.floats(0.0, 0.4))
def test_boxes_stay_on_their_pixels(seed: int, bw: float, bh: float, x0: float, y0: float) -> None:
    """Draw a white filled box on black, augment (geometry only), and compare the white pixels' extent with
    the transformed box: within 2 output pixels (bilinear resampling blurs by ~1 pixel)."""
    w, h = 320, 240
    img = Image.new("RGB", (w, h), (0, 0, 0))
    px = [x0 * w, y0 * h, (x0 + bw) * w, (y0 + bh) * h]
    ImageDraw.Draw(img).rectangle([round(px[0]), round(px[1]), round(px[2]) - 1, round(px[3]) - 1], fill=(255,) * 3)
    box = torch.tensor([[round(px[0]) / w, round(px[1]) / h, round(px[2]) / w, round(px[3]) / h]])
    torch.manual_seed(seed)
    out, b, lab = SSDTrainTransform(size=300, p_photometric=0.0)(img, box, [1])
    if lab.numel() == 0:
        return  # the crop dropped the box (its centre left the crop)
    white = _to_uint8(out).min(axis=2) > 200  # fill (mean colour) and black are both far below
    ys, xs = np.nonzero(white)
    if xs.size == 0:
        assert float((b[0, 2] - b[0, 0]) * 300) < 3 or float((b[0, 3] - b[0, 1]) * 300) < 3
        return
    extent = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32) / 300
    assert torch.allclose(extent, b[0], atol=2.0 / 300), (extent * 300, b[0] * 300)


def test_flip_is_a_mirror_and_an_involution() -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8))
    boxes = torch.tensor([[0.1, 0.2, 0.3, 0.9], [0.5, 0.0, 1.0, 0.4]])
    flip_only = SSDTrainTransform(size=300, p_expand=0.0, crop_options=(None,), p_photometric=0.0, p_flip=1.0)
    out, b, _ = flip_only(img, boxes, [1, 2])
    ref, _, _ = SSDEvalTransform(size=300)(img.transpose(Image.FLIP_LEFT_RIGHT), boxes, [1, 2])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(b, torch.tensor([[0.7, 0.2, 0.9, 0.9], [0.0, 0.0, 0.5, 0.4]]))
    twice, b2, _ = flip_only(img.transpose(Image.FLIP_LEFT_RIGHT), b, [1, 2])
    torch.testing.assert_close(b2, boxes)
    torch.testing.assert_close(twice, SSDEvalTransform(size=300)(img, boxes, [1, 2])[0], rtol=0, atol=1e-6)


def test_identity_settings_equal_the_eval_transform() -> None:
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    boxes = torch.tensor([[0.1, 0.1, 0.6, 0.7]])
    ident = SSDTrainTransform(p_expand=0.0, crop_options=(None,), p_photometric=0.0, p_flip=0.0)
    out, b, lab = ident(img, boxes, [4])
    ref, rb, _ = SSDEvalTransform()(img, boxes, [4])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert torch.equal(b, rb) and lab.tolist() == [4]


def test_degenerate_boxes_dropped_with_their_labels() -> None:
    """A box 0.2 % of the width shrinks below one output pixel under a 4x zoom-out: dropped, label too."""
    img = Image.new("RGB", (300, 300), (90, 90, 90))
    boxes = torch.tensor([[0.5, 0.5, 0.502, 0.8], [0.1, 0.1, 0.9, 0.9]])
    t = SSDTrainTransform(max_expand=4.0, p_expand=1.0, crop_options=(None,), p_flip=0.0)
    for seed in range(5):
        torch.manual_seed(seed)
        _, b, lab = t(img, boxes, [7, 3])
        assert lab.tolist() == [3] and b.shape == (1, 4)


def test_empty_boxes_pass_through() -> None:
    img = Image.new("RGB", (64, 48), (0, 0, 0))
    for seed in range(10):
        torch.manual_seed(seed)
        out, b, lab = SSDTrainTransform()(img, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
        assert out.shape == (3, 300, 300) and b.shape == (0, 4) and lab.shape == (0,)


def test_mismatched_labels_rejected() -> None:
    with pytest.raises(ValueError, match="2 boxes but 1 labels"):
        SSDTrainTransform()(Image.new("RGB", (8, 8)), torch.rand(2, 4), [1])


def test_randomness_only_from_torch() -> None:
    rng = np.random.default_rng(2)
    img = Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    boxes = torch.tensor([[0.2, 0.2, 0.6, 0.7], [0.5, 0.1, 0.9, 0.5]])
    t = SSDTrainTransform()
    py_state, np_state = random.getstate(), np.random.get_state()
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append([t(img, boxes, [1, 2]) for _ in range(5)])
    for (a, ab, al), (b, bb, bl) in zip(*runs):
        assert torch.equal(a, b) and torch.equal(ab, bb) and torch.equal(al, bl)
    assert random.getstate() == py_state
    assert all(np.array_equal(x, y) for x, y in zip(np.random.get_state()[1:2], np_state[1:2]))
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = SSDTrainTransform(generator=gen_a)(img, boxes, [1, 2])
    b = SSDTrainTransform(generator=gen_b)(img, boxes, [1, 2])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    outs = {SSDTrainTransform()(img, boxes, [1, 2])[0].sum().item() for _ in range(4)}
    assert len(outs) > 1  # it does augment


def _iou(box: torch.Tensor, rect: tuple) -> float:
    iw = max(0.0, min(float(box[2]), rect[2]) - max(float(box[0]), rect[0]))
    ih = max(0.0, min(float(box[3]), rect[3]) - max(float(box[1]), rect[1]))
    inter = iw * ih
    area = float((box[2] - box[0]) * (box[3] - box[1]))
    return inter / (area + (rect[2] - rect[0]) * (rect[3] - rect[1]) - inter)


@pytest.mark.parametrize("option", [0.1, 0.3, 0.5, 0.7, 0.9, float("-inf")])
def test_iou_crop_meets_its_option(option: float) -> None:
    boxes = torch.tensor([[10.0, 10.0, 90.0, 70.0], [50.0, 40.0, 95.0, 95.0], [0.0, 60.0, 30.0, 100.0]])
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        rect, keep = sample_iou_crop(boxes, 100.0, 100.0, options=(option,), generator=gen)
        w, h = rect[2] - rect[0], rect[3] - rect[1]
        assert 0 <= rect[0] and rect[2] <= 100 and 0 <= rect[1] and rect[3] <= 100
        assert 30 - 1e-9 <= w and 30 - 1e-9 <= h and 0.5 <= h / w <= 2.0
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        inside = (cx > rect[0]) & (cx < rect[2]) & (cy > rect[1]) & (cy < rect[3])
        assert torch.equal(keep, inside) and keep.any()
        if rect == (0.0, 0.0, 100.0, 100.0):
            continue  # the bounded fall-back after max_rounds options without a valid crop
        assert max(_iou(boxes[k], rect) for k in range(3) if keep[k]) >= option


def test_iou_crop_whole_image_and_fallback() -> None:
    boxes = torch.tensor([[10.0, 10.0, 12.0, 12.0]])
    rect, keep = sample_iou_crop(boxes, 100.0, 80.0, options=(None,))
    assert rect == (0.0, 0.0, 100.0, 80.0) and keep.tolist() == [True]
    # IoU >= 0.99 with a 2x2 box is impossible for a crop of >= 30 % per side: bounded fall-back, no hang
    rect, keep = sample_iou_crop(boxes, 100.0, 80.0, options=(0.99,), max_rounds=3)
    assert rect == (0.0, 0.0, 100.0, 80.0) and keep.tolist() == [True]
    rect, keep = sample_iou_crop(torch.zeros(0, 4), 100.0, 80.0, options=(0.9,))
    assert keep.shape == (0,) and rect[2] - rect[0] >= 30 - 1e-9
    assert CROP_OPTIONS[0] is None and CROP_OPTIONS[-1] == float("-inf")


def test_photometric_matrix_rules() -> None:
    ident = np.hstack([np.eye(3), np.zeros((3, 1))])
    np.testing.assert_allclose(photometric_matrix((100, 100, 100), p=0.0), ident)
    # every step on: a grey image stays grey except for the channel permutation, which keeps grey too;
    # saturation/hue leave grey alone, brightness/contrast move it along the grey axis
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        m = photometric_matrix((120.0, 120.0, 120.0), p=1.0, generator=gen)
        out = m[:, :3] @ np.array([120.0, 120.0, 120.0]) + m[:, 3]
        assert np.ptp(out) < 1e-6
    # the hue step is a rotation of the YIQ chroma plane: luma (Y) kept, a full turn is the identity
    colour = np.array([200.0, 30.0, 90.0])
    for turns in (-0.05, 0.03, 0.25):
        rot = _hue_rotation(turns)
        assert abs(_LUMA @ (rot @ colour) - _LUMA @ colour) < 1e-9
        assert np.linalg.norm(rot @ colour - colour) > 1.0
    np.testing.assert_allclose(_hue_rotation(1.0), np.eye(3), atol=1e-12)
    # contrast alone blends with the grey mean: a pixel equal to the mean grey level is a fixed point
    gen = torch.Generator().manual_seed(2)
    m = photometric_matrix((50.0, 100.0, 150.0), brightness=(1, 1), saturation=(1, 1), hue=(0, 0), p=1.0,
                           generator=gen)
    grey = float(_LUMA @ np.array([50.0, 100.0, 150.0]))
    np.testing.assert_allclose(m[:, :3] @ np.full(3, grey) + m[:, 3], np.full(3, grey), atol=1e-9)
