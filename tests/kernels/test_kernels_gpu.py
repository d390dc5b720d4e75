"""The CUDA kernels on a real GPU, through ``kernels.interop`` with torch CUDA tensors (``-m gpu``).

Same properties as the CPU and simulator tests (exact agreement with the reference on grid inputs, exact
thresholds, ties, empty inputs), plus: CUDA == CPU twin on realistic SSD300 sizes; torch tensors in and out
on the same device; the kernels run on torch's *current* stream and never synchronise the host (checked by
capturing them in a CUDA graph, where a launch on another stream or a host sync is an error); and the torch
stack's ``backend="numba"`` equals ``backend="torch"``. Skipped with the reason when there is no usable GPU.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings

from kernel_cases import (EXACT_NMS_KEEP, MatchCase, NmsCase, assert_match_close, assert_match_equal,
                          exact_threshold_match_case, exact_threshold_nms_case, expected_keep, match_cases,
                          nms_cases, sure_priors, tie_match_case)
from kernels.interop import cuda_available, match_batch_numba, nms_keep_numba
from reference.priors import SSD300, default_boxes


def _skip_reason() -> str:
    if not torch.cuda.is_available():
        return "no CUDA device: torch.cuda.is_available() is False"
    if not cuda_available():
        return "torch sees a GPU but numba.cuda.is_available() is False (driver / CUDA toolkit for numba)"
    return ""


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(bool(_skip_reason()), reason=_skip_reason() or "-")]

DEV = "cuda"


def match_on(case: MatchCase, device: str) -> tuple[np.ndarray, np.ndarray]:
    args = [torch.from_numpy(a).to(device) for a in (case.gt_boxes, case.gt_labels, case.counts, case.priors)]
    labels, loc = match_batch_numba(*args, case.iou_threshold, case.variances)
    assert labels.device.type == loc.device.type == torch.device(device).type
    return labels.cpu().numpy(), loc.cpu().numpy()


def keep_on(case: NmsCase, device: str) -> np.ndarray:
    keep = nms_keep_numba(torch.from_numpy(case.boxes).to(device), torch.from_numpy(case.counts).to(device),
                          case.iou_threshold)
    assert keep.dtype == torch.bool and keep.device.type == torch.device(device).type
    return keep.cpu().numpy()


def ssd_case(seed: int, num_images: int, num_gt: int) -> MatchCase:
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0.0, 0.8, (num_images, num_gt, 2))
    size = rng.uniform(0.02, 0.6, (num_images, num_gt, 2))
    gt = np.clip(np.concatenate([corner, corner + size], -1), 0, 1).astype(np.float32)
    return MatchCase(default_boxes(SSD300).astype(np.float32), gt, rng.integers(1, 21, (num_images, num_gt)),
                     rng.integers(0, num_gt + 1, num_images))


def random_candidates(seed: int, num_images: int, num_classes: int, k: int) -> NmsCase:
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0.2, 0.8, (num_images, num_classes, k, 2))
    half = rng.uniform(0.01, 0.2, (num_images, num_classes, k, 2))
    boxes = np.clip(np.concatenate([centre - half, centre + half], -1), 0, 1).astype(np.float32)
    return NmsCase(boxes, rng.integers(0, k + 1, (num_images, num_classes)), 0.45)


# ---------------------------------------------------------------------------------------------- matching
@settings(max_examples=40, deadline=None)
@given(match_cases())
def test_match_equals_reference_on_grid_batches(case: MatchCase) -> None:
    labels, loc = match_on(case, DEV)
    assert_match_equal(labels, loc, case)


def test_match_exact_threshold_and_ties() -> None:
    for case, want in [(exact_threshold_match_case(), [[7, 7, 0, 0, 7]]), (tie_match_case(), [[5, 3, 0]])]:
        labels, loc = match_on(case, DEV)
        assert labels.tolist() == want
        assert_match_equal(labels, loc, case)


@pytest.mark.parametrize("num_gt", [1, 8, 32, 45])
def test_match_ssd300_batch_equals_cpu_twin_and_reference(num_gt: int) -> None:
    case = ssd_case(num_gt, 32, num_gt)
    labels, loc = match_on(case, DEV)
    cpu_labels, cpu_loc = match_on(case, "cpu")
    assert_match_close(labels, loc, case)
    np.testing.assert_array_equal(labels, cpu_labels)  # same float32 IoU arithmetic, no FMA contraction in it
    np.testing.assert_allclose(loc, cpu_loc, rtol=1e-5, atol=1e-5)  # logf: libdevice vs libm, a few ulp


def test_match_without_ground_truth_on_cuda() -> None:
    priors = torch.from_numpy(default_boxes(SSD300).astype(np.float32)).to(DEV)
    for g, counts in [(0, [0, 0]), (4, [0, 0])]:
        labels, loc = match_batch_numba(torch.rand(2, g, 4, device=DEV), torch.ones(2, g, dtype=torch.int64,
                                        device=DEV), torch.tensor(counts, device=DEV), priors, 0.5, (0.1, 0.2))
        assert labels.shape == (2, priors.shape[0]) and not labels.any() and not loc.any()


# ---------------------------------------------------------------------------------------------- NMS
@settings(max_examples=40, deadline=None)
@given(nms_cases(max_k=70))
def test_nms_equals_reference_on_grid_candidates(case: NmsCase) -> None:
    np.testing.assert_array_equal(keep_on(case, DEV), expected_keep(case))


@pytest.mark.parametrize("threshold", sorted(EXACT_NMS_KEEP))
def test_nms_exact_threshold(threshold: float) -> None:
    assert keep_on(exact_threshold_nms_case(threshold), DEV)[0, 0].tolist() == EXACT_NMS_KEEP[threshold]


@pytest.mark.parametrize("num_images, k", [(1, 400), (32, 400), (4, 448), (3, 1)])
def test_nms_post_processing_sizes_equal_cpu_twin(num_images: int, k: int) -> None:
    case = random_candidates(k, num_images, 20, k)
    np.testing.assert_array_equal(keep_on(case, DEV), keep_on(case, "cpu"))


def test_nms_empty_inputs_on_cuda() -> None:
    for shape in [(2, 3, 0), (0, 3, 5), (2, 0, 5)]:
        keep = nms_keep_numba(torch.zeros(*shape, 4, device=DEV), torch.zeros(shape[:2], dtype=torch.int64,
                                                                                device=DEV), 0.45)
        assert keep.shape == shape and keep.device.type == "cuda" and not keep.any()


# ---------------------------------------------------------------------------------------------- interop
def test_kernels_run_on_a_side_stream() -> None:
    case = random_candidates(5, 8, 20, 200)
    mcase = ssd_case(5, 8, 8)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        # inputs produced on the side stream right before the call: a launch on another stream could race them
        boxes = torch.from_numpy(case.boxes).to(DEV, non_blocking=True) * 1.0
        keep = nms_keep_numba(boxes, torch.from_numpy(case.counts).to(DEV), 0.45)
        gt = torch.from_numpy(mcase.gt_boxes).to(DEV) * 1.0
        labels, _ = match_batch_numba(gt, torch.from_numpy(mcase.gt_labels).to(DEV),
                                      torch.from_numpy(mcase.counts).to(DEV),
                                      torch.from_numpy(mcase.priors).to(DEV), 0.5, (0.1, 0.2))
    stream.synchronize()
    np.testing.assert_array_equal(keep.cpu().numpy(), keep_on(case, "cpu"))
    np.testing.assert_array_equal(labels.cpu().numpy(), match_on(mcase, "cpu")[0])


def test_kernels_capture_in_a_cuda_graph() -> None:
    """Capture fails on a host sync or on a launch outside the capturing (current) stream; replaying the graph
    on new inputs must give the new answers, so the kernels really were recorded on torch's stream."""
    first, second = random_candidates(1, 4, 20, 100), random_candidates(2, 4, 20, 100)
    mfirst, msecond = ssd_case(1, 4, 8), ssd_case(2, 4, 8)
    boxes, counts = (torch.from_numpy(a).to(DEV) for a in (first.boxes, first.counts))
    gt, gl, gc, pr = (torch.from_numpy(a).to(DEV) for a in (mfirst.gt_boxes, mfirst.gt_labels, mfirst.counts,
                                                            mfirst.priors))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (JIT compile, module load) outside the capture
        nms_keep_numba(boxes, counts, 0.45)
        match_batch_numba(gt, gl, gc, pr, 0.5, (0.1, 0.2))
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        keep = nms_keep_numba(boxes, counts, 0.45)
        labels, loc = match_batch_numba(gt, gl, gc, pr, 0.5, (0.1, 0.2))
    for case, mcase in [(second, msecond), (first, mfirst)]:
        boxes.copy_(torch.from_numpy(case.boxes))
        counts.copy_(torch.from_numpy(case.counts))
        gt.copy_(torch.from_numpy(mcase.gt_boxes))
        gl.copy_(torch.from_numpy(mcase.gt_labels))
        gc.copy_(torch.from_numpy(mcase.counts))
        graph.replay()
        torch.cuda.synchronize()
        np.testing.assert_array_equal(keep.cpu().numpy(), keep_on(case, "cpu"))
        np.testing.assert_array_equal(labels.cpu().numpy(), match_on(mcase, "cpu")[0])


def test_inputs_on_different_devices_are_rejected() -> None:
    with pytest.raises(ValueError, match="one device"):
        nms_keep_numba(torch.zeros(1, 1, 2, 4, device=DEV), torch.ones(1, 1, dtype=torch.int64), 0.45)


# ---------------------------------------------------------------------------------------------- torch stack
def test_torch_stack_matching_numba_backend_equals_torch_backend() -> None:
    from ssd_torch.matching import match_batch

    for case in (ssd_case(11, 32, 8), ssd_case(12, 32, 32)):
        args = [torch.from_numpy(a).to(DEV) for a in (case.gt_boxes, case.gt_labels, case.counts, case.priors)]
        n_labels, n_loc = match_batch(*args, backend="numba")
        t_labels, t_loc = match_batch(*args, backend="torch")
        assert_match_close(n_labels.cpu().numpy(), n_loc.cpu().numpy(), case)
        assert_match_close(t_labels.cpu().numpy(), t_loc.cpu().numpy(), case)
        sure = np.stack([sure_priors(case, b) for b in range(case.gt_boxes.shape[0])])
        np.testing.assert_array_equal(n_labels.cpu().numpy()[sure], t_labels.cpu().numpy()[sure])
        np.testing.assert_allclose(n_loc.cpu().numpy()[sure], t_loc.cpu().numpy()[sure], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("num_images", [1, 8])
def test_torch_stack_postprocess_numba_backend_equals_torch_backend(num_images: int) -> None:
    from ssd_torch.nms import postprocess

    gen = torch.Generator(device="cpu").manual_seed(num_images)
    priors = torch.from_numpy(default_boxes(SSD300).astype(np.float32)).to(DEV)
    loc = (torch.randn(num_images, priors.shape[0], 4, generator=gen) * 0.5).to(DEV)
    conf = (torch.randn(num_images, priors.shape[0], 21, generator=gen) * 3.0).to(DEV)
    numba_dets = postprocess(loc, conf, priors, backend="numba")
    torch_dets = postprocess(loc, conf, priors, backend="torch")
    assert len(numba_dets) == len(torch_dets) == num_images
    for got, want in zip(numba_dets, torch_dets):
        assert got.boxes.shape[0] > 0
        torch.testing.assert_close(got.boxes, want.boxes, rtol=0, atol=0)
        torch.testing.assert_close(got.scores, want.scores, rtol=0, atol=0)
        assert torch.equal(got.labels, want.labels)
