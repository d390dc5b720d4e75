"""CPU twin of the batched NMS (``kernels.nms.nms_batched_cpu`` via ``kernels.interop``) vs ``reference.nms``:
keep masks must be identical (grid boxes make every IoU exact, thresholds hit exactly included)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kernel_cases import EXACT_NMS_KEEP, NmsCase, exact_threshold_nms_case, expected_keep, grid_box, nms_cases
from kernels.interop import nms_keep_numba
from kernels.nms import nms_batched_cpu
from reference.nms import nms as reference_nms


def run_interop(case: NmsCase) -> np.ndarray:
    keep = nms_keep_numba(torch.from_numpy(case.boxes), torch.from_numpy(case.counts), case.iou_threshold)
    assert keep.dtype == torch.bool and keep.shape == case.boxes.shape[:3]
    return keep.numpy()


@given(nms_cases())
def test_cpu_twin_equals_reference(case: NmsCase) -> None:
    np.testing.assert_array_equal(run_interop(case), expected_keep(case))


@pytest.mark.parametrize("threshold", sorted(EXACT_NMS_KEEP))
def test_iou_exactly_at_threshold_is_not_suppressed(threshold: float) -> None:
    case = exact_threshold_nms_case(threshold)
    keep = run_interop(case)
    assert keep[0, 0].tolist() == EXACT_NMS_KEEP[threshold]
    np.testing.assert_array_equal(keep, expected_keep(case))


def test_njit_entry_point_overwrites_the_whole_mask() -> None:
    case = exact_threshold_nms_case(0.45)
    keep = np.ones(case.boxes.shape[:3], np.bool_)
    nms_batched_cpu(case.boxes, case.counts, 0.45, keep)
    assert keep[0, 0].tolist() == EXACT_NMS_KEEP[0.45]


@given(st.lists(st.tuples(grid_box(8), st.integers(0, 3)), min_size=0, max_size=25))
def test_score_ties_follow_the_stable_order(items: list) -> None:
    boxes = np.asarray([b for b, _ in items], np.float32).reshape(-1, 4)
    scores = np.asarray([s for _, s in items], np.float64)
    order = np.argsort(-scores, kind="stable")  # what the post-processing feeds the kernel
    keep = nms_keep_numba(torch.from_numpy(boxes[order][None, None].copy()), torch.tensor([[len(items)]]), 0.45)
    kept_in_order = order[keep[0, 0].numpy()]
    np.testing.assert_array_equal(kept_in_order, reference_nms(boxes.astype(np.float64), scores, 0.45))


def test_padding_and_zero_area_boxes() -> None:
    point = [0.5, 0.5, 0.5, 0.5]  # two identical zero-area boxes: union 0 -> IoU 0 -> both kept
    boxes = np.asarray([[[point, point, [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]]], np.float32)
    keep = run_interop(NmsCase(boxes, np.asarray([[3]], np.int64), 0.45))
    assert keep[0, 0].tolist() == [True, True, True, False]  # the 4th box is padding


@pytest.mark.parametrize("shape", [(2, 3, 0), (0, 3, 5), (2, 0, 5)])
def test_empty_inputs(shape: tuple[int, int, int]) -> None:
    boxes = torch.zeros(*shape, 4)
    keep = nms_keep_numba(boxes, torch.zeros(shape[:2], dtype=torch.int64), 0.45)
    assert keep.shape == shape and keep.dtype == torch.bool and not keep.any()


def test_zero_counts_keep_nothing() -> None:
    boxes = torch.rand(2, 3, 4, 4)
    keep = nms_keep_numba(boxes, torch.zeros(2, 3, dtype=torch.int32), 0.45)
    assert not keep.any()
