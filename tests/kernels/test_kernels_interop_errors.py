"""``kernels.interop`` rejects bad inputs with a TypeError/ValueError that names the problem."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from kernels.interop import ValueChecks, match_batch_numba, nms_keep_numba
from kernels.nms import MAX_K, nms_batched_cuda


def _match_args() -> dict:
    return dict(gt_boxes=torch.tensor([[[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.9, 0.9]]]),
                gt_labels=torch.tensor([[1, 2]]), counts=torch.tensor([2]),
                priors=torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.4, 0.4]]))


@pytest.mark.parametrize("change, error, words", [
    (dict(gt_boxes=torch.zeros(1, 2, 4, dtype=torch.float64)), TypeError, "gt_boxes must be float32"),
    (dict(priors=np.zeros((2, 4), np.float32)), TypeError, "priors must be a torch.Tensor"),
    (dict(gt_labels=torch.ones(1, 2)), TypeError, "gt_labels must be an integer tensor"),
    (dict(gt_boxes=torch.zeros(1, 2, 5)), ValueError, "gt_boxes must have shape [B, G, 4]"),
    (dict(gt_labels=torch.ones(1, 3, dtype=torch.int64)), ValueError, "gt_labels must have shape [B, G]"),
    (dict(counts=torch.tensor([1, 1])), ValueError, "counts must have shape [B]"),
    (dict(priors=torch.zeros(0, 4)), ValueError, "at least one prior"),
    (dict(counts=torch.tensor([3])), ValueError, "counts[0] = 3 is outside [0, 2]"),
    (dict(counts=torch.tensor([-1])), ValueError, "outside [0, 2]"),
    (dict(gt_labels=torch.tensor([[1, 0]])), ValueError, "gt label 1 of image 0 is 0"),
    (dict(gt_boxes=torch.tensor([[[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.2, 0.9]]])), ValueError,
     "gt box 1 of image 0 is degenerate"),
    (dict(gt_boxes=torch.tensor([[[0.1, 0.1, 0.5, float("nan")], [0.2, 0.2, 0.3, 0.9]]])), ValueError,
     "non-finite"),
    (dict(priors=torch.zeros(2, 4, device="meta")), ValueError, "one device"),
])
def test_match_rejects_bad_input(change: dict, error: type, words: str) -> None:
    with pytest.raises(error, match=_literal(words)):
        match_batch_numba(**{**_match_args(), **change})


def test_match_rejects_bad_variances() -> None:
    with pytest.raises(ValueError, match="variances"):
        match_batch_numba(**_match_args(), variances=(0.1,))


def test_padding_is_not_validated() -> None:
    # a degenerate box and label 0 beyond counts[b] are padding: accepted, and they never match
    args = _match_args()
    args["gt_boxes"][0, 1] = 0.0
    args["gt_labels"][0, 1] = 0
    labels, _ = match_batch_numba(**{**args, "counts": torch.tensor([1])})
    assert set(labels.unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("boxes, counts, error, words", [
    (torch.zeros(1, 2, 3, 4, dtype=torch.float16), torch.zeros(1, 2, dtype=torch.int64), TypeError, "float32"),
    (torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.int64), ValueError, "[B, C, K, 4]"),
    (torch.zeros(1, 2, 3, 4), torch.zeros(2, 1, dtype=torch.int64), ValueError, "counts must have shape [B, C]"),
    (torch.zeros(1, 2, 3, 4), torch.tensor([[0, 4]]), ValueError, "counts[0, 1] = 4 is outside [0, 3]"),
    (torch.zeros(1, 2, 3, 4), torch.tensor([[0, -2]]), ValueError, "outside [0, 3]"),
    (torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, dtype=torch.bool), TypeError, "integer tensor"),
    (torch.zeros(1, 1, 1, 4, device="meta"), torch.zeros(1, 1, dtype=torch.int64, device="meta"), ValueError,
     "CPU or CUDA"),
])
def test_nms_rejects_bad_input(boxes: torch.Tensor, counts: torch.Tensor, error: type, words: str) -> None:
    with pytest.raises(error, match=_literal(words)):
        nms_keep_numba(boxes, counts, 0.45)


def test_cuda_nms_launcher_rejects_more_than_max_k_candidates() -> None:
    boxes = np.zeros((1, 1, MAX_K + 1, 4), np.float32)  # checked before any device work, so no GPU needed
    with pytest.raises(ValueError, match=f"at most K = {MAX_K}"):
        nms_batched_cuda(boxes, np.zeros((1, 1), np.int64), 0.45, np.zeros((1, 1, MAX_K + 1), np.uint8))


@pytest.mark.parametrize("checks, cpu, cuda", [(ValueChecks.CPU_ONLY, True, False), (ValueChecks.ALWAYS, True, True),
                                               (ValueChecks.NEVER, False, False)])
def test_value_checks_say_where_the_checks_run(checks: ValueChecks, cpu: bool, cuda: bool) -> None:
    assert (checks.run_on(torch.device("cpu")), checks.run_on(torch.device("cuda", 0))) == (cpu, cuda)


def test_never_skips_the_value_checks_and_the_kernels_clamp_the_counts() -> None:
    # counts 3 > G = 2 is refused by default; NEVER reads nothing, and the kernel treats it as G = 2
    with pytest.raises(ValueError, match="outside"):
        match_batch_numba(**{**_match_args(), "counts": torch.tensor([3])})
    labels, _ = match_batch_numba(**{**_match_args(), "counts": torch.tensor([3])}, value_checks=ValueChecks.NEVER)
    expected, _ = match_batch_numba(**_match_args())
    assert torch.equal(labels, expected)
    boxes = torch.tensor([0.1, 0.1, 0.5, 0.5]).expand(1, 1, 2, 4)
    keep = nms_keep_numba(boxes, torch.tensor([[5]]), 0.45, value_checks=ValueChecks.NEVER)
    assert keep.tolist() == [[[True, False]]]  # two identical boxes: the first suppresses the second


@pytest.mark.parametrize("call", [
    lambda bad: match_batch_numba(**_match_args(), value_checks=bad),
    lambda bad: nms_keep_numba(torch.zeros(1, 1, 2, 4), torch.tensor([[2]]), 0.45, value_checks=bad),
], ids=["match", "nms"])
@pytest.mark.parametrize("bad", [False, None, "never"])
def test_value_checks_must_be_the_enum(call, bad: object) -> None:
    with pytest.raises(TypeError, match="value_checks must be a kernels.interop.ValueChecks"):
        call(bad)


def _literal(text: str) -> str:
    return re.escape(text)
