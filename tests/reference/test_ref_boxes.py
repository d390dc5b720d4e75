"""reference.boxes: format conversions, areas, a hand-worked 3x3 IoU table, IoU properties."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from ref_strategies import xyxy_boxes
from reference.boxes import box_area, box_iou, cxcywh_to_xyxy, xyxy_to_cxcywh


def test_conversions_by_hand() -> None:
    xyxy = np.array([[0.25, 0.5, 0.75, 1.0]])
    np.testing.assert_array_equal(xyxy_to_cxcywh(xyxy), [[0.5, 0.75, 0.5, 0.5]])
    np.testing.assert_array_equal(cxcywh_to_xyxy([[0.5, 0.75, 0.5, 0.5]]), xyxy)
    # any leading shape is accepted
    assert xyxy_to_cxcywh(np.zeros((2, 3, 4))).shape == (2, 3, 4)


def test_area_by_hand() -> None:
    np.testing.assert_array_equal(box_area([[0.0, 0.0, 0.5, 0.25], [0.25, 0.25, 0.75, 1.0]]), [0.125, 0.375])


def test_iou_3x3_table_by_hand() -> None:
    # Coordinates are quarters so every value is exact. In units of 1/4:
    # a0 = [0,0,2,2] (area 4), a1 = [1,0,3,2] (area 4), a2 = [0,0,1,1] (area 1)
    # b0 = [0,0,2,2], b1 = [1,1,2,2] (area 1), b2 = [2,0,4,2] (area 4)
    a = np.array([[0, 0, 2, 2], [1, 0, 3, 2], [0, 0, 1, 1]], dtype=np.float64) / 4
    b = np.array([[0, 0, 2, 2], [1, 1, 2, 2], [2, 0, 4, 2]], dtype=np.float64) / 4
    expected = np.array([
        # b0: same box; b1: inside a0; b2: shares only the edge x=2 with a0
        [1.0, 1 / 4, 0.0],
        # a1 vs b0: inter [1,0,2,2] = 2, union 4+4-2 = 6; vs b1: inter 1, union 4; vs b2: inter 2, union 6
        [1 / 3, 1 / 4, 1 / 3],
        # a2 vs b0: inter 1, union 4; vs b1: touches only the corner (1,1) -> 0; vs b2: disjoint
        [1 / 4, 0.0, 0.0],
    ])
    np.testing.assert_allclose(box_iou(a, b), expected, rtol=0, atol=1e-15)


def test_iou_empty_and_shapes() -> None:
    assert box_iou(np.zeros((0, 4)), np.ones((3, 4))).shape == (0, 3)
    with pytest.raises(ValueError, match="shape"):
        box_iou(np.zeros((2, 3)), np.zeros((2, 4)))
    # two zero-area boxes: union 0 -> IoU 0, not NaN
    assert box_iou([[0.5, 0.5, 0.5, 0.5]], [[0.5, 0.5, 0.5, 0.5]])[0, 0] == 0.0


@given(xyxy_boxes(), xyxy_boxes())
def test_iou_symmetric_and_bounded(a: np.ndarray, b: np.ndarray) -> None:
    ab = box_iou(a, b)
    np.testing.assert_array_equal(ab, box_iou(b, a).T)
    assert np.all(ab >= 0.0) and np.all(ab <= 1.0)


@given(xyxy_boxes())
def test_iou_self_is_one(a: np.ndarray) -> None:
    np.testing.assert_array_equal(np.diag(box_iou(a, a)), np.ones(len(a)))


@given(xyxy_boxes())
def test_conversion_round_trip(a: np.ndarray) -> None:
    np.testing.assert_allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(a)), a, rtol=0, atol=1e-15)
