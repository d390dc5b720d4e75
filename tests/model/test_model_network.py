"""SSD300 network: shapes, parameter count, prior order of the outputs, initialisation, formats, overfitting."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reference.priors import SSD300 as SPEC
from reference.priors import default_boxes
from ssd_torch.modeling.model_config import ssd300_slim, ssd300_vgg16
from ssd_torch.modeling.model import SSD300, model_from_config, num_priors

MAPS = (38, 19, 10, 5, 3, 1)
BOXES = (4, 6, 6, 6, 4, 4)


@pytest.fixture(scope="module")
def slim() -> SSD300:
    torch.manual_seed(0)
    return model_from_config(ssd300_slim(num_classes=5)).eval()


def _offsets() -> list[int]:
    """First output row of each map: sum of f^2 * boxes of the maps before it."""
    out, acc = [], 0
    for f, n in zip(MAPS, BOXES):
        out.append(acc)
        acc += f * f * n
    return out


def test_vgg16_parameter_count_matches_hand_count() -> None:
    # VGG16 convs (k*k*in*out + out): conv1 1,792 + 36,928; conv2 73,856 + 147,584;
    # conv3 295,168 + 2 * 590,080; conv4 1,180,160 + 2 * 2,359,808; conv5 3 * 2,359,808   -> 14,714,688
    # fc6 3*3*512*1024 + 1024 = 4,719,616;  fc7 1024*1024 + 1024 = 1,049,600;  L2Norm 512
    # extras: 262,400 + 1,180,160; 65,664 + 295,168; 32,896 + 295,168; 32,896 + 295,168     -> 2,459,520
    # heads (loc 4b + conf 21b outputs = 25b per source, 3x3): 512*9*100+100 = 460,900; 1024*9*150+150 =
    # 1,382,550; 512*9*150+150 = 691,350; 256*9*150+150 = 345,750; 256*9*100+100 = 230,500 (x2) -> 3,341,550
    hand = 14_714_688 + 4_719_616 + 1_049_600 + 512 + 2_459_520 + 3_341_550
    assert hand == 26_285_486
    model = model_from_config(ssd300_vgg16(num_classes=21))
    assert sum(p.numel() for p in model.parameters()) == hand
    assert abs(hand / 1e6 - 26.3) < 0.05
    assert len(model.vgg_convs()) == 15


@pytest.mark.slow
def test_vgg16_forward_shapes_at_300() -> None:
    model = model_from_config(ssd300_vgg16(num_classes=21)).eval()
    with torch.no_grad():
        sources = model.sources(torch.zeros(1, 3, 300, 300))
        assert [tuple(s.shape[1:]) for s in sources] == [(512, 38, 38), (1024, 19, 19), (512, 10, 10),
                                                         (256, 5, 5), (256, 3, 3), (256, 1, 1)]
        loc, conf = model(torch.rand(1, 3, 300, 300))
    assert loc.shape == (1, 8732, 4) and conf.shape == (1, 8732, 21)
    assert num_priors(model) == num_priors(ssd300_vgg16()) == 8732


@pytest.mark.parametrize("batch_norm", [True, False])
def test_slim_forward_shapes_and_maps(batch_norm: bool) -> None:
    model = model_from_config(ssd300_slim(num_classes=7, batch_norm=batch_norm)).eval()
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == batch_norm
    with torch.no_grad():
        sizes = [tuple(s.shape[-2:]) for s in model.sources(torch.zeros(2, 3, 300, 300))]
        loc, conf = model(torch.rand(2, 3, 300, 300))
    assert sizes == [(f, f) for f in MAPS]
    assert loc.shape == (2, 8732, 4) and conf.shape == (2, 8732, 7)
    assert torch.isfinite(loc).all() and torch.isfinite(conf).all()


@pytest.mark.parametrize("strided_stem", [True, False])
def test_strided_stem_keeps_the_map_sizes(strided_stem: bool) -> None:
    cfg = dataclasses.replace(ssd300_slim(num_classes=3), strided_stem=strided_stem,
                              base_channels=((4,), (4,), (4,), (4,), (4,)))
    model = model_from_config(cfg).eval()
    first = model.vgg_convs()[0]
    assert first.stride == ((2, 2) if strided_stem else (1, 1))
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.lower) == (2 if strided_stem else 3)
    with torch.no_grad():
        assert [tuple(s.shape[-2:]) for s in model.sources(torch.zeros(1, 3, 300, 300))] == [(f, f) for f in MAPS]


def test_wrong_input_shape_raises(slim: SSD300) -> None:
    for shape in [(1, 3, 301, 300), (1, 1, 300, 300), (3, 300, 300)]:
        with pytest.raises(ValueError, match="expects input"):
            slim(torch.zeros(shape))


def _replace_output(module: nn.Module, value: torch.Tensor) -> torch.utils.hooks.RemovableHandle:
    return module.register_forward_hook(lambda mod, inp, out: value.to(out.dtype))


def _forward_with(model: SSD300, handles: list[torch.utils.hooks.RemovableHandle]) -> tuple[torch.Tensor, ...]:
    """``model`` on two blank 300x300 images with the head-replacing ``handles`` in place, then removed."""
    try:
        with torch.no_grad():
            return model(torch.zeros(2, 3, 300, 300))
    finally:
        for h in handles:
            h.remove()


def test_loc_rows_follow_the_reference_prior_order(slim: SSD300) -> None:
    """Each loc head emits, per cell and box, the prior the docs/CONTRACT.md formula gives for (map, row, col, box)
    in NCHW channel a*4 + coord; the flattened output must then equal reference.priors.default_boxes."""
    handles = []
    for k, (f, head) in enumerate(zip(MAPS, slim.loc_heads)):
        s, s_next = SPEC.scales[k], SPEC.scales[k + 1]
        sizes = [(s, s), (math.sqrt(s * s_next),) * 2]
        for ar in SPEC.aspect_ratios[k]:
            sizes += [(s * math.sqrt(ar), s / math.sqrt(ar)), (s / math.sqrt(ar), s * math.sqrt(ar))]
        centre = (torch.arange(f, dtype=torch.float32) + 0.5) / f
        out = torch.empty(2, 4 * len(sizes), f, f)
        for a, (w, h) in enumerate(sizes):
            out[:, 4 * a + 0] = centre.view(1, f)  # x varies along columns j
            out[:, 4 * a + 1] = centre.view(f, 1)  # y varies along rows i
            out[:, 4 * a + 2], out[:, 4 * a + 3] = w, h
        handles.append(_replace_output(head, out))
    loc, _ = _forward_with(slim, handles)
    expected = default_boxes(dataclasses.replace(SPEC, clip=False))
    np.testing.assert_allclose(loc[0].double().numpy(), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(loc[1].double().numpy(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_hot_head_output_lands_on_its_prior_row(slim: SSD300, seed: int) -> None:
    """A single non-zero head output at (box a, coord/class c, row i, col j) of map k, image 1, must appear
    exactly at output row offset_k + (i * f + j) * boxes_k + a, column c of image 1 (docs/CONTRACT.md order)."""
    gen = torch.Generator().manual_seed(seed)
    c_num = slim.num_classes
    handles, want_loc, want_conf = [], {}, {}
    for k, (f, n) in enumerate(zip(MAPS, BOXES)):
        i, j, a, c, cls = (int(torch.randint(hi, (1,), generator=gen)) for hi in (f, f, n, 4, c_num))
        row = _offsets()[k] + (i * f + j) * n + a
        loc_out, conf_out = torch.zeros(2, 4 * n, f, f), torch.zeros(2, c_num * n, f, f)
        loc_out[1, 4 * a + c, i, j] = k + 1
        conf_out[1, c_num * a + cls, i, j] = k + 1
        want_loc[(1, row, c)], want_conf[(1, row, cls)] = k + 1, k + 1
        handles += [_replace_output(slim.loc_heads[k], loc_out), _replace_output(slim.conf_heads[k], conf_out)]
    loc, conf = _forward_with(slim, handles)
    for out, want in ((loc, want_loc), (conf, want_conf)):
        got = {tuple(int(v) for v in idx): float(out[tuple(idx)]) for idx in out.nonzero()}
        assert got == want


def test_initialisation(slim: SSD300) -> None:
    assert torch.equal(slim.l2norm.weight, torch.full((64,), 20.0))
    for head in list(slim.loc_heads) + list(slim.conf_heads):
        assert torch.count_nonzero(head.bias) == 0 and head.weight.abs().sum() > 0
    for m in slim.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.count_nonzero(m.bias) == 0


@pytest.mark.parametrize("p", [0.5, 0.99])
def test_head_bias_prior_gives_that_background_probability(p: float) -> None:
    cfg = dataclasses.replace(ssd300_slim(num_classes=5), head_bias_prior=p)
    model = model_from_config(cfg)
    for head, n in zip(model.conf_heads, BOXES):
        probs = torch.softmax(head.bias.detach().view(n, 5).double(), dim=1)
        torch.testing.assert_close(probs[:, 0], torch.full((n,), p, dtype=torch.float64), rtol=0, atol=1e-6)
        torch.testing.assert_close(probs[:, 1:], torch.full((n, 4), (1 - p) / 4, dtype=torch.float64),
                                   rtol=0, atol=1e-6)
    for head in model.loc_heads:
        assert torch.count_nonzero(head.bias) == 0


def test_channels_last_and_bf16_autocast(slim: SSD300) -> None:
    x = torch.rand(2, 3, 300, 300, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref_loc, ref_conf = slim(x)
        cl = model_from_config(ssd300_slim(num_classes=5)).eval()
        cl.load_state_dict(slim.state_dict())
        cl = cl.to(memory_format=torch.channels_last)
        loc, conf = cl(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(loc, ref_loc, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(conf, ref_conf, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loc16, conf16 = cl(x.contiguous(memory_format=torch.channels_last))
    assert loc16.shape == ref_loc.shape and conf16.shape == ref_conf.shape
    # bf16 keeps ~3 significant digits; through ~12 layers the error stays a small fraction of the spread.
    for got, ref in ((loc16, ref_loc), (conf16, ref_conf)):
        assert torch.isfinite(got).all()
        assert (got.float() - ref).abs().max() < 0.1 * ref.std() + 0.05


@pytest.mark.slow
def test_overfits_one_tiny_batch() -> None:
    """Adam on one fixed batch drives MSE(loc) + CE(conf) clearly down. The labels depend on the box index
    (learnable by the heads) and on the image (bright image: classes 0-2, dark image: 3-5), so the CE can
    only fall below ln 2 if the backbone learns to tell the two images apart."""
    torch.manual_seed(0)
    model = model_from_config(ssd300_slim(num_classes=6, batch_norm=False))
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 300, 300, generator=gen) * 0.5
    x[0] += 0.5
    box_index = torch.cat([torch.arange(n).repeat(f * f) for f, n in zip(MAPS, BOXES)])  # [8732]
    labels = torch.stack([box_index % 3, 3 + box_index % 3])
    loc_t = torch.stack([torch.randn(6, 4, generator=gen)[box_index] for _ in range(2)])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(18):
        loc, conf = model(x)
        mse, ce = F.mse_loss(loc, loc_t), F.cross_entropy(conf.reshape(-1, 6), labels.reshape(-1))
        opt.zero_grad()
        (mse + ce).backward()
        opt.step()
        history.append((float(mse.detach()), float(ce.detach())))
    assert all(math.isfinite(a) and math.isfinite(b) for a, b in history)
    assert sum(history[-1]) < 0.2 * sum(history[0]), history
    assert history[-1][1] < 0.5 < math.log(2), history
