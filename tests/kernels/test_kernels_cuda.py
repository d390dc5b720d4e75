"""What only a real GPU can show (``-m gpu``; skipped with the reason where there is no usable CUDA device).

The properties shared with the CPU twins run on both devices in ``test_kernels_matching.py``,
``test_kernels_nms.py`` and ``test_kernels_torch_stack.py`` (``cpu_and_cuda``). Here: the CUDA NMS equals the
CPU twin at post-processing sizes (up to K = 448, the kernel's limit); the kernels run on torch's *current*
stream and never synchronise the host (checked by running them on a side stream, and by capturing them in a
CUDA graph, where a launch on another stream or a host sync is an error); tensors on two devices are refused.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kernel_cases import cuda_skip_reason, keep_on, match_on, random_candidates, ssd300_match_case
from kernels.interop import match_batch_numba, nms_keep_numba

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(bool(cuda_skip_reason()), reason=cuda_skip_reason() or "-")]

DEV = "cuda"


@pytest.mark.parametrize("num_images, k", [(1, 400), (32, 400), (4, 448), (3, 1)])
def test_nms_post_processing_sizes_equal_cpu_twin(num_images: int, k: int) -> None:
    case = random_candidates(k, num_images, 20, k)
    np.testing.assert_array_equal(keep_on(case, DEV), keep_on(case, "cpu"))


def test_kernels_run_on_a_side_stream() -> None:
    case = random_candidates(5, 8, 20, 200)
    mcase = ssd300_match_case(5, 8, 8)
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
    mfirst, msecond = ssd300_match_case(1, 4, 8), ssd300_match_case(2, 4, 8)
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
