"""The CUDA kernels (the same source as on a GPU) under numba's CUDA simulator, vs the float64 reference.

Not collected by the normal test run (the file name does not start with ``test_``):
``test_kernels_cudasim.py`` runs ``python -m pytest tests/kernels/cudasim_cases.py`` in a subprocess with
``NUMBA_ENABLE_CUDASIM=1``, so the simulator never leaks into other tests. The simulator runs every thread as
a Python thread, hence the tiny sizes and few hypothesis examples; small blocks (8-32 threads) also exercise
the paths a big GPU block rarely takes (several blocks per image, gts staged by a strided loop, G > GT_CHUNK).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from numba import config, cuda

from kernel_cases import (EXACT_NMS_KEEP, MatchCase, NmsCase, assert_match_equal, exact_threshold_match_case,
                          exact_threshold_nms_case, expected_keep, match_cases, nms_cases, slim_model_outputs,
                          tie_match_case, xyxy_to_cxcywh32)
from kernels.matching import GT_CHUNK, match_encode_cuda
from kernels.nms import nms_batched_cuda

if not config.ENABLE_CUDASIM:
    pytest.skip("run through test_kernels_cudasim.py (needs NUMBA_ENABLE_CUDASIM=1 set before numba is imported)",
                allow_module_level=True)


def run_match(case: MatchCase, threads: int = 16, scratch: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Launch the matcher on simulated device arrays and copy the results back."""
    num_images, num_priors = case.gt_boxes.shape[0], case.priors.shape[0]
    labels = cuda.to_device(np.full((num_images, num_priors), -7, np.int64))  # junk: the kernel must write all
    loc = cuda.to_device(np.full((num_images, num_priors, 4), np.nan, np.float32))
    key = cuda.to_device(np.zeros(case.gt_labels.shape, np.int64)) if scratch else None
    match_encode_cuda(cuda.to_device(case.priors), cuda.to_device(case.gt_boxes), cuda.to_device(case.gt_labels),
                      cuda.to_device(case.counts), case.iou_threshold, *case.variances, labels, loc,
                      best_key=key, threads_per_block=threads)
    return labels.copy_to_host(), loc.copy_to_host()


def run_nms(case: NmsCase, threads: int = 16) -> np.ndarray:
    keep = cuda.to_device(np.full(case.boxes.shape[:3], 5, np.uint8))
    nms_batched_cuda(cuda.to_device(case.boxes), cuda.to_device(case.counts), case.iou_threshold, keep,
                     threads_per_block=threads)
    out = keep.copy_to_host()
    assert set(np.unique(out).tolist()) <= {0, 1}
    return out.astype(bool)


@settings(max_examples=12, deadline=None)
@given(match_cases(max_images=2, max_gt=4, max_priors=20))
def test_matcher_equals_reference(case: MatchCase) -> None:
    if case.gt_boxes.shape[1] == 0:
        return  # G = 0 never reaches the kernels (interop answers it); covered by the CPU tests
    labels, loc = run_match(case)
    assert_match_equal(labels, loc, case)


@pytest.mark.parametrize("threads", [8, 32])
def test_matcher_exact_threshold_and_ties(threads: int) -> None:
    for case, want in [(exact_threshold_match_case(), [[7, 7, 0, 0, 7]]), (tie_match_case(), [[5, 3, 0]])]:
        labels, loc = run_match(case, threads=threads, scratch=threads == 8)
        assert labels.tolist() == want
        assert_match_equal(labels, loc, case)


def test_matcher_more_gts_than_one_chunk_and_several_blocks() -> None:
    rng = np.random.default_rng(0)
    num_gt = GT_CHUNK + 5
    grid = 8
    corners = rng.integers(0, grid, (2, num_gt, 2))
    sizes = rng.integers(1, grid + 1, (2, num_gt, 2))
    gt = (np.minimum(np.concatenate([corners, corners + sizes], -1), grid) / grid).astype(np.float32)
    prior_xyxy = np.asarray([[i / grid, j / grid, (i + 2) / grid, (j + 1) / grid] for i in range(4) for j in range(5)])
    case = MatchCase(xyxy_to_cxcywh32(prior_xyxy), gt, rng.integers(1, 21, (2, num_gt)),
                     np.asarray([num_gt, GT_CHUNK + 1], np.int64))
    labels, loc = run_match(case, threads=8)  # 20 priors -> 3 blocks per image
    assert_match_equal(labels, loc, case)


@settings(max_examples=12, deadline=None)
@given(nms_cases(max_images=2, max_classes=2, max_k=20))
def test_nms_equals_reference(case: NmsCase) -> None:
    if case.boxes.size == 0:
        return  # empty shapes never reach the kernel (interop answers them)
    np.testing.assert_array_equal(run_nms(case), expected_keep(case))


@pytest.mark.parametrize("threshold", sorted(EXACT_NMS_KEEP))
def test_nms_exact_threshold(threshold: float) -> None:
    case = exact_threshold_nms_case(threshold)
    assert run_nms(case, threads=4)[0, 0].tolist() == EXACT_NMS_KEEP[threshold]


def test_nms_more_than_one_mask_word_and_padding() -> None:
    rng = np.random.default_rng(1)
    k = 70  # two 64-bit words per mask row
    grid = 16
    lo = rng.integers(0, grid - 1, (1, 2, k, 2))
    hi = lo + rng.integers(1, 6, (1, 2, k, 2))
    boxes = (np.minimum(np.concatenate([lo, hi], -1), grid) / grid).astype(np.float32)
    case = NmsCase(boxes, np.asarray([[k, 66]], np.int64), 0.45)
    keep = run_nms(case, threads=32)
    np.testing.assert_array_equal(keep, expected_keep(case))
    assert not keep[0, 1, 66:].any()


@pytest.mark.parametrize("scale", [20.0, 50.0])
def test_confident_model_post_processing_through_the_kernel(scale: float) -> None:
    """Issue #21 on the CUDA kernel's source: a confident model's candidates (class logits x20 / x50, top 24
    per class) through the simulated NMS, merged as ``ssd_torch.nms.postprocess`` does, are the float64
    reference's detections in its order, with nothing exempt."""
    import torch

    from reference.nms import float32_ambiguous_detections
    from reference.priors import default_boxes as reference_default_boxes
    from ssd_torch.nms import gather_detections, select_candidates
    from ssd_torch.parity import match_detections

    loc, conf, priors, spec = slim_model_outputs(scale, num_images=1)
    cand = select_candidates(loc, conf, priors, top_k=24)
    keep = run_nms(NmsCase(cand.boxes.numpy(), cand.counts.numpy(), 0.45), threads=16)
    det = gather_detections(cand, torch.from_numpy(keep), 200)[0]
    want = float32_ambiguous_detections(loc[0].double().numpy(), conf[0].double().numpy(),
                                        reference_default_boxes(spec), top_k=24)
    m = match_detections(want, tuple(t.double().numpy() for t in det))
    assert m.agreeing == len(want.labels) > 50 and m.exempt == m.disagreeing == 0, m
