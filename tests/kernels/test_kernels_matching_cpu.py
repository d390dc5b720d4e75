"""CPU twin of the batched matcher (``kernels.matching.match_encode_cpu`` via ``kernels.interop``) vs the
float64 reference: exact labels, loc targets within float32 tolerance (1e-5 on grid inputs, 1e-4 on SSD300
priors with continuous gts)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given

from kernel_cases import (MatchCase, assert_match_close, assert_match_equal, exact_threshold_match_case, match_cases,
                          tie_match_case)
from kernels.interop import match_batch_numba
from kernels.matching import match_encode_cpu
from reference.priors import SSD300, default_boxes


def run_interop(case: MatchCase) -> tuple[np.ndarray, np.ndarray]:
    labels, loc = match_batch_numba(torch.from_numpy(case.gt_boxes), torch.from_numpy(case.gt_labels),
                                    torch.from_numpy(case.counts), torch.from_numpy(case.priors),
                                    case.iou_threshold, case.variances)
    assert labels.dtype == torch.int64 and loc.dtype == torch.float32
    return labels.numpy(), loc.numpy()


@given(match_cases())
def test_cpu_twin_equals_reference_on_grid_batches(case: MatchCase) -> None:
    labels, loc = run_interop(case)
    assert_match_equal(labels, loc, case)


def test_njit_entry_point_writes_outputs_in_place() -> None:
    case = tie_match_case()
    out_labels = np.full((1, 3), -9, np.int64)
    out_loc = np.full((1, 3, 4), np.nan, np.float32)
    match_encode_cpu(case.priors, case.gt_boxes, case.gt_labels, case.counts, 0.5, 0.1, 0.2, out_labels, out_loc)
    assert_match_equal(out_labels, out_loc, case)


def test_iou_exactly_at_threshold_matches_and_just_below_does_not() -> None:
    case = exact_threshold_match_case()  # priors at IoU 1 (forced), 0.5, 0.5 - 2^-19, 0.375, 0.5 + 2^-19
    labels, loc = run_interop(case)
    assert labels.tolist() == [[7, 7, 0, 0, 7]]
    assert np.all(loc[0, [2, 3]] == 0.0)  # background priors get exactly-zero loc targets
    assert_match_equal(labels, loc, case)


def test_ties_go_to_lower_index_and_forcing_to_the_later_gt() -> None:
    case = tie_match_case()
    labels, loc = run_interop(case)
    assert labels.tolist() == [[5, 3, 0]]  # prior 0 forced to gt 2, prior 1 tie -> gt 0, prior 2 background
    assert_match_equal(labels, loc, case)


def test_other_threshold_and_variances() -> None:
    case = dataclasses.replace(exact_threshold_match_case(), iou_threshold=0.375, variances=(0.2, 0.5))
    labels, loc = run_interop(case)
    assert labels.tolist() == [[7, 7, 7, 7, 7]]
    assert_match_equal(labels, loc, case)


@pytest.mark.parametrize("num_gt, counts", [(0, [0, 0]), (3, [0, 0])])
def test_no_ground_truth_means_all_background(num_gt: int, counts: list[int]) -> None:
    priors = default_boxes(SSD300)[:50].astype(np.float32)
    gt = np.tile(np.asarray([0.1, 0.1, 0.6, 0.6], np.float32), (2, num_gt, 1))  # padding: must not match
    case = MatchCase(priors, gt, np.ones((2, num_gt), np.int64), np.asarray(counts, np.int64))
    labels, loc = run_interop(case)
    assert labels.shape == (2, 50) and not labels.any() and not loc.any()


def test_empty_batch_gives_empty_outputs() -> None:
    case = MatchCase(np.asarray([[0.5, 0.5, 0.2, 0.2]], np.float32), np.zeros((0, 2, 4), np.float32),
                     np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
    labels, loc = run_interop(case)
    assert labels.shape == (0, 1) and loc.shape == (0, 1, 4)


@pytest.mark.parametrize("seed", range(4))
def test_ssd300_priors_with_continuous_gts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_images, num_gt = 4, 7
    corner = rng.uniform(0.0, 0.8, (num_images, num_gt, 2))
    size = rng.uniform(0.02, 0.6, (num_images, num_gt, 2))
    gt = np.clip(np.concatenate([corner, corner + size], -1), 0, 1).astype(np.float32)
    case = MatchCase(default_boxes(SSD300).astype(np.float32), gt,
                     rng.integers(1, 21, (num_images, num_gt)), rng.integers(0, num_gt + 1, num_images))
    labels, loc = run_interop(case)
    assert_match_close(labels, loc, case)


def test_int32_and_non_contiguous_inputs_give_the_same_result() -> None:
    case = tie_match_case()
    want_labels, want_loc = run_interop(case)
    spaced = torch.zeros(1, 2 * case.gt_boxes.shape[1], 4)
    spaced[:, ::2] = torch.from_numpy(case.gt_boxes)
    gt = spaced[:, ::2]
    priors = torch.from_numpy(np.asfortranarray(case.priors))
    assert not gt.is_contiguous() and not priors.is_contiguous()
    labels, loc = match_batch_numba(gt.requires_grad_(), torch.from_numpy(case.gt_labels).int(),
                                    torch.from_numpy(case.counts).int(), priors, 0.5, (0.1, 0.2))
    np.testing.assert_array_equal(labels.numpy(), want_labels)
    np.testing.assert_array_equal(loc.numpy(), want_loc)
