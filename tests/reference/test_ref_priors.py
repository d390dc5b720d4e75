"""reference.priors: the SSD300 counts and scale table, prior order, the peers' stride layouts (ssd.pytorch and
lufficc against their PriorBox formula, hand-computed cells), clip semantics, spec validation."""
from __future__ import annotations

import dataclasses
import math
from itertools import product

import numpy as np
import pytest

from reference.priors import (LUFFICC_VOC, PRESETS, SSD300, SSD_PYTORCH_VOC, TORCHVISION_COCO, PriorSpec,
                              boxes_per_cell, default_boxes, num_priors)

PER_MAP = [5776, 2166, 600, 150, 36, 4]  # 38²·4, 19²·6, 10²·6, 5²·6, 3²·4, 1²·4
OFFSETS = np.cumsum([0] + PER_MAP)  # first prior of each map
UNCLIPPED = dataclasses.replace(SSD300, clip=False)


def test_counts() -> None:
    assert boxes_per_cell(SSD300) == [4, 6, 6, 6, 4, 4]
    assert [f * f * n for f, n in zip(SSD300.feature_maps, boxes_per_cell(SSD300))] == PER_MAP
    assert num_priors(SSD300) == 8732 == sum(PER_MAP)
    assert default_boxes(SSD300).shape == (8732, 4)
    for spec in PRESETS.values():
        assert default_boxes(spec).shape == (8732, 4) and num_priors(spec) == 8732


def test_scale_table_third_map() -> None:
    """docs/CONTRACT.md "Default boxes": k is 0-based, so k = 2 is the third map (10x10, s = 0.375) and its ar = 2
    box is 0.375·√2 = 0.53 by 0.265. Its first cell starts at prior 5776 + 2166 = 7942."""
    cell = default_boxes(UNCLIPPED)[OFFSETS[2]:OFFSETS[2] + 6]
    np.testing.assert_allclose(cell[:, :2], 0.05)  # centre of cell (0, 0) of a 10x10 map
    np.testing.assert_allclose(cell[0, 2:], [0.375, 0.375])
    np.testing.assert_allclose(cell[1, 2:], [0.4541, 0.4541], atol=1e-4)  # sqrt(0.375 · 0.55)
    np.testing.assert_allclose(cell[2, 2:], [0.53, 0.265], atol=1e-3)  # ar = 2
    np.testing.assert_allclose(cell[3, 2:], [0.265, 0.53], atol=1e-3)  # ar = 1/2
    np.testing.assert_allclose(cell[4, 2:], [0.6495, 0.2165], atol=1e-4)  # ar = 3: 0.375·√3, 0.375/√3
    np.testing.assert_allclose(cell[5, 2:], [0.2165, 0.6495], atol=1e-4)


def test_scale_table_last_map_unclipped_and_clipped() -> None:
    """The sixth map (1x1, s = 0.9): its ar = 2 box is 0.9·√2 = 1.2728 wide unclipped, 1.0 clipped."""
    last = default_boxes(UNCLIPPED)[OFFSETS[5]:]
    np.testing.assert_allclose(last[:, :2], 0.5)
    np.testing.assert_allclose(last[:, 2:], [[0.9, 0.9], [0.9487, 0.9487], [1.2728, 0.6364], [0.6364, 1.2728]],
                               atol=1e-4)  # the extra box is sqrt(0.9 · s_7 = 1.0)
    clipped = default_boxes(SSD300)[OFFSETS[5]:]
    np.testing.assert_allclose(clipped[2:, 2:], [[1.0, 0.6364], [0.6364, 1.0]], atol=1e-4)


def test_contract_unclipped_widths_above_one() -> None:
    """docs/CONTRACT.md "Default boxes" names the unclipped ar = 2 widths above 1, by hand: the 3x3 map (k = 4,
    s = 0.725) 0.725 · 1.41421356 = 1.02530483, the 1x1 map (k = 5, s = 0.9) 0.9 · 1.41421356 = 1.27279221."""
    d = default_boxes(UNCLIPPED)
    assert d[OFFSETS[4] + 2, 2] == pytest.approx(1.02530483, abs=1e-8)  # cell (0, 0), third box: ar = 2
    assert d[OFFSETS[5] + 2, 2] == pytest.approx(1.27279221, abs=1e-8)
    assert (d[OFFSETS[4]:OFFSETS[5], 2] > 1.0).sum() == 9  # one ar = 2 box per cell of the 3x3 map
    assert default_boxes(SSD300)[OFFSETS[4] + 2, 2] == 1.0


def test_first_map_order_row_major() -> None:
    d = default_boxes(SSD300)
    np.testing.assert_allclose(d[0], [0.5 / 38, 0.5 / 38, 0.1, 0.1])
    np.testing.assert_allclose(d[1], [0.5 / 38, 0.5 / 38, math.sqrt(0.02), math.sqrt(0.02)])
    np.testing.assert_allclose(d[2, 2:], [0.1 * math.sqrt(2), 0.1 / math.sqrt(2)])
    np.testing.assert_allclose(d[4, :2], [1.5 / 38, 0.5 / 38])  # next cell: same row, next column
    np.testing.assert_allclose(d[4 * 38, :2], [0.5 / 38, 1.5 / 38])  # row 1, column 0
    np.testing.assert_allclose(d[OFFSETS[1], :], [0.5 / 19, 0.5 / 19, 0.2, 0.2])


def test_clip_is_clamp_of_unclipped() -> None:
    d = default_boxes(SSD300)
    assert d.min() >= 0.0 and d.max() <= 1.0
    np.testing.assert_array_equal(d, np.clip(default_boxes(UNCLIPPED), 0.0, 1.0))


# ssd.pytorch data/config.py ``voc`` (lufficc's MODEL.PRIORS defaults hold the same numbers).
MIN_SIZES = (30, 60, 111, 162, 213, 264)
MAX_SIZES = (60, 111, 162, 213, 264, 315)
STEPS = (8, 16, 32, 64, 100, 300)


def _peer_prior_box(big_box: str) -> np.ndarray:
    """The PriorBox loop of ssd.pytorch (``big_box="ssd.pytorch"``: ``sqrt(s_k * max_k / 300)``) or lufficc
    (``"lufficc"``: ``sqrt(min_k * max_k) / 300``), in Python floats as they compute it, then clamped."""
    rows = []
    for k, f in enumerate(SSD300.feature_maps):
        f_k = 300 / STEPS[k]
        for i, j in product(range(f), repeat=2):
            cx, cy = (j + 0.5) / f_k, (i + 0.5) / f_k
            s_k = MIN_SIZES[k] / 300
            big = math.sqrt(s_k * (MAX_SIZES[k] / 300)) if big_box == "ssd.pytorch" else \
                math.sqrt(MIN_SIZES[k] * MAX_SIZES[k]) / 300
            rows += [[cx, cy, s_k, s_k], [cx, cy, big, big]]
            for ar in SSD300.aspect_ratios[k]:
                rows += [[cx, cy, s_k * math.sqrt(ar), s_k / math.sqrt(ar)],
                         [cx, cy, s_k / math.sqrt(ar), s_k * math.sqrt(ar)]]
    return np.clip(np.asarray(rows), 0.0, 1.0)


def test_ssd_pytorch_preset_is_its_prior_box_bit_for_bit() -> None:
    np.testing.assert_array_equal(default_boxes(SSD_PYTORCH_VOC), _peer_prior_box("ssd.pytorch"))
    # float32 (what ssd.pytorch's torch.Tensor(mean) holds) is then the same rounding of the same numbers
    np.testing.assert_array_equal(default_boxes(SSD_PYTORCH_VOC).astype(np.float32),
                                  _peer_prior_box("ssd.pytorch").astype(np.float32))


def test_lufficc_preset_equals_its_prior_box() -> None:
    assert LUFFICC_VOC == SSD_PYTORCH_VOC
    # lufficc takes sqrt(min * max) / 300 for the big box: the same number up to the last bit of float64
    np.testing.assert_allclose(default_boxes(LUFFICC_VOC), _peer_prior_box("lufficc"), rtol=0, atol=1e-15)


def test_ssd_pytorch_preset_hand_computed_cells() -> None:
    d = default_boxes(SSD_PYTORCH_VOC)
    np.testing.assert_allclose(d[0], [4 / 300, 4 / 300, 0.1, 0.1])  # (0 + 0.5) / (300 / 8); 30 / 300
    np.testing.assert_allclose(d[1, 2:], [math.sqrt(30 * 60) / 300] * 2)  # 0.14142
    np.testing.assert_allclose(d[2, 2:], [0.1 * math.sqrt(2), 0.1 / math.sqrt(2)])
    np.testing.assert_allclose(d[OFFSETS[1], :], [8 / 300, 8 / 300, 0.2, 0.2])  # 19x19, step 16, 60 / 300
    cell = d[OFFSETS[2]:OFFSETS[2] + 6]  # 10x10 map, s = 111 / 300 = 0.37
    np.testing.assert_allclose(cell[:, :2], 16 / 300)
    np.testing.assert_allclose(cell[:, 2:], [[0.37, 0.37], [math.sqrt(111 * 162) / 300] * 2,
                                             [0.37 * math.sqrt(2), 0.37 / math.sqrt(2)],
                                             [0.37 / math.sqrt(2), 0.37 * math.sqrt(2)],
                                             [0.37 * math.sqrt(3), 0.37 / math.sqrt(3)],
                                             [0.37 / math.sqrt(3), 0.37 * math.sqrt(3)]])
    # the last cell of the 10x10 map: column 9 -> 9.5 / 9.375 = 1.0133, clamped to 1 (all four coordinates)
    np.testing.assert_allclose(d[OFFSETS[3] - 6, :2], [1.0, 1.0])
    last = d[OFFSETS[5]:]  # 1x1 map, s = 264 / 300 = 0.88, extra box sqrt(83160) / 300 = 0.961249
    np.testing.assert_allclose(last, [[0.5, 0.5, 0.88, 0.88], [0.5, 0.5, 0.961249, 0.961249],
                                      [0.5, 0.5, 1.0, 0.88 / math.sqrt(2)], [0.5, 0.5, 0.88 / math.sqrt(2), 1.0]],
                               atol=1e-5)


def test_torchvision_preset_clamps_sizes_not_centres() -> None:
    """DefaultBoxGenerator clamps w, h only: the 10x10 map (step 32) keeps centres up to 9.5 / 9.375."""
    d = default_boxes(TORCHVISION_COCO)
    np.testing.assert_allclose(d[0], [4 / 300, 4 / 300, 0.07, 0.07])
    np.testing.assert_allclose(d[1, 2:], [math.sqrt(0.07 * 0.15)] * 2)
    np.testing.assert_allclose(d[OFFSETS[3] - 6, :2], [9.5 / 9.375, 9.5 / 9.375])
    assert d[:, :2].max() == 9.5 / 9.375 > 1.0
    np.testing.assert_allclose(d[OFFSETS[5] + 2, 2:], [1.0, 0.87 / math.sqrt(2)])  # 0.87 * sqrt 2 = 1.23 -> 1
    unclipped = default_boxes(dataclasses.replace(TORCHVISION_COCO, clip=False))
    np.testing.assert_array_equal(d[:, :2], unclipped[:, :2])
    np.testing.assert_array_equal(d[:, 2:], np.clip(unclipped[:, 2:], 0.0, 1.0))
    # clip_centres only matters with clip
    np.testing.assert_array_equal(default_boxes(dataclasses.replace(TORCHVISION_COCO, clip=False)),
                                  default_boxes(dataclasses.replace(TORCHVISION_COCO, clip=False,
                                                                    clip_centres=True)))


def test_steps_layout_sizes_do_not_depend_on_steps() -> None:
    seed_steps = dataclasses.replace(SSD300, steps=STEPS, image_size=300)
    d = default_boxes(seed_steps)
    np.testing.assert_allclose(d[OFFSETS[4], :2], [50 / 300, 50 / 300])  # (0 + 0.5) / (300 / 100)
    np.testing.assert_array_equal(d[:, 2:], default_boxes(SSD300)[:, 2:])


@pytest.mark.parametrize("kwargs, message", [
    (dict(scales=(0.1, 0.2, 0.375, 0.55, 0.725, 0.9)), "scales"),
    (dict(aspect_ratios=((2,),) * 5), "aspect_ratios"),
    (dict(feature_maps=(38, 19, 10, 5, 3, 0)), r"feature_maps\[5\]"),
    (dict(scales=(0.1, 0.2, 0.375, -0.55, 0.725, 0.9, 1.0)), r"scales\[3\]"),
    (dict(aspect_ratios=((2,), (2, 3), (2, 0), (2, 3), (2,), (2,))), "aspect_ratios"),
    (dict(steps=(8, 16, 32, 64, 100, 300)), "image_size"),
    (dict(steps=(8, 16, 32, 64, 100), image_size=300), "steps"),
    (dict(feature_maps=(), scales=(1.0,), aspect_ratios=()), "empty"),
    (dict(clip_centres="no"), "clip_centres"),
])
def test_spec_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SSD300, **kwargs)


def test_spec_is_frozen_and_hashable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SSD300.clip = False  # type: ignore[misc]
    spec = PriorSpec(feature_maps=[2], scales=[0.5, 1.0], aspect_ratios=[[2]])
    assert spec.feature_maps == (2,) and hash(spec) == hash(PriorSpec((2,), (0.5, 1.0), ((2,),)))
    assert default_boxes(spec).shape == (2 * 2 * 4, 4)
