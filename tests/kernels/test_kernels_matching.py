"""The batched matcher through ``kernels.interop.match_batch_numba`` on every device (``cpu_and_cuda``: the
``@njit`` CPU twin, the CUDA kernels) vs the float64 reference: exact labels, loc targets within float32
tolerance (1e-5 on grid inputs, 1e-4 on SSD300 priors with continuous gts, where float32 near-ties are exempt);
on CUDA also bit-equal labels to the CPU twin."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given

from kernel_cases import (MatchCase, assert_match_close, assert_match_equal, cpu_and_cuda, exact_threshold_match_case,
                          match_cases, match_on, ssd300_match_case, tie_match_case)
from kernels.interop import match_batch_numba
from kernels.matching import match_encode_cpu
from reference.priors import SSD300, default_boxes


@pytest.mark.parametrize("device", cpu_and_cuda())
@given(match_cases())
def test_equals_reference_on_grid_batches(device: str, case: MatchCase) -> None:
    labels, loc = match_on(case, device)
    assert_match_equal(labels, loc, case)


def test_njit_entry_point_writes_outputs_in_place() -> None:
    case = tie_match_case()
    out_labels = np.full((1, 3), -9, np.int64)
    out_loc = np.full((1, 3, 4), np.nan, np.float32)
    match_encode_cpu(case.priors, case.gt_boxes, case.gt_labels, case.counts, 0.5, 0.1, 0.2, out_labels, out_loc)
    assert_match_equal(out_labels, out_loc, case)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_iou_exactly_at_threshold_matches_and_just_below_does_not(device: str) -> None:
    case = exact_threshold_match_case()  # priors at IoU 1 (forced), 0.5, 0.5 - 2^-19, 0.375, 0.5 + 2^-19
    labels, loc = match_on(case, device)
    assert labels.tolist() == [[7, 7, 0, 0, 7]]
    assert np.all(loc[0, [2, 3]] == 0.0)  # background priors get exactly-zero loc targets
    assert_match_equal(labels, loc, case)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_ties_go_to_lower_index_and_forcing_to_the_later_gt(device: str) -> None:
    case = tie_match_case()
    labels, loc = match_on(case, device)
    assert labels.tolist() == [[5, 3, 0]]  # prior 0 forced to gt 2, prior 1 tie -> gt 0, prior 2 background
    assert_match_equal(labels, loc, case)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_other_threshold_and_variances(device: str) -> None:
    case = dataclasses.replace(exact_threshold_match_case(), iou_threshold=0.375, variances=(0.2, 0.5))
    labels, loc = match_on(case, device)
    assert labels.tolist() == [[7, 7, 7, 7, 7]]
    assert_match_equal(labels, loc, case)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("num_gt, counts", [(0, [0, 0]), (3, [0, 0])])
def test_no_ground_truth_means_all_background(device: str, num_gt: int, counts: list[int]) -> None:
    priors = default_boxes(SSD300).astype(np.float32)
    gt = np.tile(np.asarray([0.1, 0.1, 0.6, 0.6], np.float32), (2, num_gt, 1))  # padding: must not match
    case = MatchCase(priors, gt, np.ones((2, num_gt), np.int64), np.asarray(counts, np.int64))
    labels, loc = match_on(case, device)
    assert labels.shape == (2, len(priors)) and not labels.any() and not loc.any()


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_empty_batch_gives_empty_outputs(device: str) -> None:
    case = MatchCase(np.asarray([[0.5, 0.5, 0.2, 0.2]], np.float32), np.zeros((0, 2, 4), np.float32),
                     np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
    labels, loc = match_on(case, device)
    assert labels.shape == (0, 1) and loc.shape == (0, 1, 4)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("seed, num_images, num_gt", [(0, 4, 7), (1, 4, 7), (2, 4, 7), (3, 4, 7), (1, 32, 1),
                                                      (8, 32, 8), (32, 32, 32), (45, 32, 45)])
def test_ssd300_priors_with_continuous_gts(device: str, seed: int, num_images: int, num_gt: int) -> None:
    case = ssd300_match_case(seed, num_images, num_gt)
    labels, loc = match_on(case, device)
    assert_match_close(labels, loc, case)
    if device != "cpu":  # the same float32 IoU arithmetic as the CPU twin (no FMA contraction in it)
        cpu_labels, cpu_loc = match_on(case, "cpu")
        np.testing.assert_array_equal(labels, cpu_labels)
        np.testing.assert_allclose(loc, cpu_loc, rtol=1e-5, atol=1e-5)  # logf: libdevice vs libm, a few ulp


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_int32_and_non_contiguous_inputs_give_the_same_result(device: str) -> None:
    case = tie_match_case()
    want_labels, want_loc = match_on(case, device)
    spaced = torch.zeros(1, 2 * case.gt_boxes.shape[1], 4, device=device)
    spaced[:, ::2] = torch.from_numpy(case.gt_boxes).to(device)
    gt = spaced[:, ::2]
    priors = torch.from_numpy(np.asfortranarray(case.priors)).to(device).t().contiguous().t()
    assert not gt.is_contiguous() and not priors.is_contiguous()
    labels, loc = match_batch_numba(gt.requires_grad_(), torch.from_numpy(case.gt_labels).int().to(device),
                                    torch.from_numpy(case.counts).int().to(device), priors, 0.5, (0.1, 0.2))
    np.testing.assert_array_equal(labels.cpu().numpy(), want_labels)
    np.testing.assert_array_equal(loc.cpu().numpy(), want_loc)
