"""The torch stack's ``backend="numba"`` (the kernels through ``kernels.interop``) equals its ``backend="torch"``
on every device (``cpu_and_cuda``), on SSD300-sized batches: matching (both equal to the reference away from
float32 near-ties, and to each other there) and post-processing (bit-equal detections)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kernel_cases import assert_match_close, cpu_and_cuda, ssd300_match_case, sure_priors
from reference.priors import SSD300, default_boxes
from ssd_torch.matching import match_batch
from ssd_torch.nms import postprocess


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("seed, num_gt", [(11, 8), (12, 32)])
def test_matching_numba_backend_equals_torch_backend(device: str, seed: int, num_gt: int) -> None:
    case = ssd300_match_case(seed, 32, num_gt)
    args = [torch.from_numpy(a).to(device) for a in (case.gt_boxes, case.gt_labels, case.counts, case.priors)]
    n_labels, n_loc = (t.cpu().numpy() for t in match_batch(*args, backend="numba"))
    t_labels, t_loc = (t.cpu().numpy() for t in match_batch(*args, backend="torch"))
    assert_match_close(n_labels, n_loc, case)  # numba == reference away from float32 near-ties ...
    sure = np.stack([sure_priors(case, b) for b in range(case.gt_boxes.shape[0])])
    np.testing.assert_array_equal(t_labels[sure], n_labels[sure])  # ... and there torch == numba
    np.testing.assert_allclose(t_loc[sure], n_loc[sure], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("num_images", [1, 8])
def test_postprocess_numba_backend_equals_torch_backend(device: str, num_images: int) -> None:
    gen = torch.Generator(device="cpu").manual_seed(num_images)
    priors = torch.from_numpy(default_boxes(SSD300).astype(np.float32)).to(device)
    loc = (torch.randn(num_images, priors.shape[0], 4, generator=gen) * 0.5).to(device)
    conf = (torch.randn(num_images, priors.shape[0], 21, generator=gen) * 3.0).to(device)
    numba_dets = postprocess(loc, conf, priors, backend="numba")
    torch_dets = postprocess(loc, conf, priors, backend="torch")
    assert len(numba_dets) == len(torch_dets) == num_images
    for got, want in zip(numba_dets, torch_dets):
        assert got.boxes.shape[0] > 0 and got.boxes.device.type == device
        torch.testing.assert_close(got.boxes, want.boxes, rtol=0, atol=0)
        torch.testing.assert_close(got.scores, want.scores, rtol=0, atol=0)
        assert torch.equal(got.labels, want.labels)
