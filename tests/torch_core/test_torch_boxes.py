"""ssd_torch.boxes vs reference.boxes: format conversions, areas and (batched) IoU."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import reference.boxes as rb
from ssd_torch.boxes import box_area, box_iou, cxcywh_to_xyxy, xyxy_to_cxcywh
from torch_cases import gt_boxes_st


@given(gt_boxes_st(max_gt=8), gt_boxes_st(max_gt=8))
def test_iou_matches_reference(a: np.ndarray, b: np.ndarray) -> None:
    ref = rb.box_iou(a, b)
    ours64 = box_iou(torch.from_numpy(a), torch.from_numpy(b))
    np.testing.assert_array_equal(ours64.numpy(), ref)  # same operations in the same order: bit-identical
    ours32 = box_iou(torch.from_numpy(a).float(), torch.from_numpy(b).float())
    np.testing.assert_allclose(ours32.numpy(), ref, rtol=0, atol=1e-6)


@given(gt_boxes_st(max_gt=8))
def test_conversions_and_area_match_reference(a: np.ndarray) -> None:
    t = torch.from_numpy(a)
    np.testing.assert_array_equal(xyxy_to_cxcywh(t).numpy(), rb.xyxy_to_cxcywh(a))
    np.testing.assert_array_equal(cxcywh_to_xyxy(t).numpy(), rb.cxcywh_to_xyxy(a))
    np.testing.assert_array_equal(box_area(t).numpy(), rb.box_area(a))
    round_trip = cxcywh_to_xyxy(xyxy_to_cxcywh(t.float()))
    torch.testing.assert_close(round_trip, t.float(), rtol=0, atol=1e-6)


@given(st.lists(gt_boxes_st(max_gt=5), min_size=1, max_size=3), gt_boxes_st(max_gt=5))
def test_batched_iou_is_per_image_iou(batch: list, b: np.ndarray) -> None:
    g = max(len(x) for x in batch)
    a = np.zeros((len(batch), g, 4))
    for i, x in enumerate(batch):
        a[i, : len(x)] = x
    ours = box_iou(torch.from_numpy(a), torch.from_numpy(b))
    assert ours.shape == (len(batch), g, len(b))
    for i in range(len(batch)):
        np.testing.assert_array_equal(ours[i].numpy(), rb.box_iou(a[i], b))


def test_hand_computed_iou() -> None:
    a = torch.tensor([[0.0, 0.0, 0.5, 0.5]])
    b = torch.tensor([[0.25, 0.25, 0.75, 0.75],  # inter 1/16, union 7/16
                      [0.5, 0.0, 1.0, 0.5],  # touching edge: 0
                      [0.0, 0.0, 0.5, 0.5],  # identical: 1
                      [0.0, 0.0, 0.5, 0.25]])  # half of it: 0.5 exactly
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 0.0, 1.0, 0.5]]), rtol=0, atol=1e-7)


def test_empty_boxes_give_zero_not_nan() -> None:
    z = torch.zeros(2, 4, dtype=torch.float64)
    out = box_iou(z, z)
    assert torch.equal(out, torch.zeros(2, 2, dtype=torch.float64))
    np.testing.assert_array_equal(out.numpy(), rb.box_iou(z.numpy(), z.numpy()))


def test_shape_and_type_errors() -> None:
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        box_iou(torch.zeros(3, 5), torch.zeros(2, 4))
    with pytest.raises(TypeError, match="floating"):
        box_area(torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        xyxy_to_cxcywh(np.zeros((3, 4)))  # type: ignore[arg-type]
