"""Batched NMS through ``kernels.interop.nms_keep_numba`` on every device (``cpu_and_cuda``: the ``@njit`` CPU
twin, the CUDA kernel) vs ``reference.nms``: keep masks must be identical (grid boxes make every IoU exact,
thresholds hit exactly included; up to 70 candidates: two 64-bit mask words on CUDA)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel_cases import (EXACT_NMS_KEEP, NmsCase, cpu_and_cuda, exact_threshold_nms_case, expected_keep, grid_box,
                          keep_on, nms_cases)
from kernels.nms import nms_batched_cpu
from reference.nms import nms as reference_nms


@pytest.mark.parametrize("device", cpu_and_cuda())
@given(nms_cases(max_k=70))
def test_equals_reference(device: str, case: NmsCase) -> None:
    np.testing.assert_array_equal(keep_on(case, device), expected_keep(case))


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("threshold", sorted(EXACT_NMS_KEEP))
def test_iou_exactly_at_threshold_is_not_suppressed(device: str, threshold: float) -> None:
    case = exact_threshold_nms_case(threshold)
    keep = keep_on(case, device)
    assert keep[0, 0].tolist() == EXACT_NMS_KEEP[threshold]
    np.testing.assert_array_equal(keep, expected_keep(case))


def test_njit_entry_point_overwrites_the_whole_mask() -> None:
    case = exact_threshold_nms_case(0.45)
    keep = np.ones(case.boxes.shape[:3], np.bool_)
    nms_batched_cpu(case.boxes, case.counts, 0.45, keep)
    assert keep[0, 0].tolist() == EXACT_NMS_KEEP[0.45]


@pytest.mark.parametrize("device", cpu_and_cuda())
@given(st.lists(st.tuples(grid_box(8), st.integers(0, 3)), min_size=0, max_size=25))
def test_score_ties_follow_the_stable_order(device: str, items: list) -> None:
    boxes = np.asarray([b for b, _ in items], np.float32).reshape(-1, 4)
    scores = np.asarray([s for _, s in items], np.float64)
    order = np.argsort(-scores, kind="stable")  # what the post-processing feeds the kernel
    keep = keep_on(NmsCase(boxes[order][None, None].copy(), np.asarray([[len(items)]], np.int64), 0.45), device)
    np.testing.assert_array_equal(order[keep[0, 0]], reference_nms(boxes.astype(np.float64), scores, 0.45))


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_padding_and_zero_area_boxes(device: str) -> None:
    point = [0.5, 0.5, 0.5, 0.5]  # two identical zero-area boxes: union 0 -> IoU 0 -> both kept
    boxes = np.asarray([[[point, point, [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]]], np.float32)
    keep = keep_on(NmsCase(boxes, np.asarray([[3]], np.int64), 0.45), device)
    assert keep[0, 0].tolist() == [True, True, True, False]  # the 4th box is padding


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("shape", [(2, 3, 0), (0, 3, 5), (2, 0, 5)])
def test_empty_inputs(device: str, shape: tuple[int, int, int]) -> None:
    keep = keep_on(NmsCase(np.zeros((*shape, 4), np.float32), np.zeros(shape[:2], np.int64), 0.45), device)
    assert keep.shape == shape and not keep.any()


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_zero_counts_keep_nothing(device: str) -> None:
    boxes = np.random.default_rng(0).uniform(0, 1, (2, 3, 4, 4)).astype(np.float32)
    assert not keep_on(NmsCase(boxes, np.zeros((2, 3), np.int32), 0.45), device).any()  # int32 counts too
