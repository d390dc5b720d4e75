"""Inputs, float64 oracles and the device parameter shared by the kernel tests (CPU twins, CUDA simulator, GPU).

Every property test runs on ``cpu_and_cuda()`` (torchvision ``test_ops`` style): the ``"cuda"`` parameter is
marked ``gpu`` and skipped, with the reason, where torch and numba see no usable CUDA device.

Boxes live on a coarse dyadic grid (multiples of 1/16 or 1/32): every corner, area, intersection and union is
then exact in float32 *and* float64, and two different IoUs differ by far more than a float32 ulp, so the
float32 kernels must agree with the float64 reference *exactly* (labels, keep masks), ties and IoUs that sit
exactly on a threshold included — and the coarse grid makes such ties and threshold hits frequent.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import strategies as st

from reference.loss import match_and_encode
from reference.matching import float32_ambiguous_priors
from reference.nms import nms as reference_nms

VARIANCES = (0.1, 0.2)


def cuda_skip_reason() -> str:
    """Why the CUDA kernels cannot run here ("" when they can): torch and numba must both see the GPU."""
    import torch

    from kernels.interop import cuda_available

    if not torch.cuda.is_available():
        return "no CUDA device: torch.cuda.is_available() is False"
    if not cuda_available():
        return "torch sees a GPU but numba.cuda.is_available() is False (driver / CUDA toolkit for numba)"
    return ""


def cpu_and_cuda() -> tuple:
    """The device parameters of a kernel test: ``"cpu"`` (the ``@njit`` twins) and ``"cuda"`` (the CUDA kernels),
    the latter marked ``gpu`` and skipped with :func:`cuda_skip_reason` where there is no usable GPU."""
    reason = cuda_skip_reason()
    return ("cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(bool(reason), reason=reason)]))


@dataclass(frozen=True)
class MatchCase:
    """A padded batch: priors[P, 4] f32 cxcywh, gt_boxes[B, G, 4] f32 xyxy, gt_labels[B, G], counts[B]."""

    priors: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    counts: np.ndarray
    iou_threshold: float = 0.5
    variances: tuple[float, float] = VARIANCES


@dataclass(frozen=True)
class NmsCase:
    """Score-sorted candidates boxes[B, C, K, 4] f32 xyxy with valid counts[B, C]."""

    boxes: np.ndarray
    counts: np.ndarray
    iou_threshold: float


@st.composite
def grid_box(draw: st.DrawFn, grid: int) -> list[float]:
    """An xyxy box with corners on multiples of ``1 / grid`` inside [0, 1] and positive width/height."""
    x0, x1 = sorted(draw(st.lists(st.integers(0, grid), min_size=2, max_size=2, unique=True)))
    y0, y1 = sorted(draw(st.lists(st.integers(0, grid), min_size=2, max_size=2, unique=True)))
    return [x0 / grid, y0 / grid, x1 / grid, y1 / grid]


def xyxy_to_cxcywh32(boxes: np.ndarray) -> np.ndarray:
    """Grid xyxy -> float32 cxcywh; exact because the centres and sizes of grid boxes are dyadic too."""
    b = np.asarray(boxes, dtype=np.float64)
    out = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
    return out.astype(np.float32)


@st.composite
def match_cases(draw: st.DrawFn, max_images: int = 3, max_gt: int = 6, max_priors: int = 40) -> MatchCase:
    """Random grid batches; padding slots hold junk (even degenerate boxes, label 0) that must never match."""
    grid = draw(st.sampled_from([4, 8, 16]))
    num_images = draw(st.integers(1, max_images))
    num_gt = draw(st.integers(0, max_gt))
    num_priors = draw(st.integers(1, max_priors))
    priors = xyxy_to_cxcywh32(np.asarray(draw(st.lists(grid_box(grid), min_size=num_priors, max_size=num_priors))))
    gt = np.zeros((num_images, num_gt, 4), np.float32)
    labels = np.zeros((num_images, num_gt), np.int64)
    counts = np.zeros(num_images, np.int64)
    for b in range(num_images):
        counts[b] = draw(st.integers(0, num_gt))
        for g in range(num_gt):
            if g < counts[b]:
                gt[b, g] = draw(grid_box(grid))
                labels[b, g] = draw(st.integers(1, 20))
            else:
                gt[b, g] = draw(st.sampled_from([[0.0, 0.0, 0.0, 0.0], [0.1, 0.1, 0.9, 0.9]]))
    threshold = draw(st.sampled_from([0.5, 0.5, 0.25, 0.75]))
    return MatchCase(priors, gt, labels, counts, threshold)


@st.composite
def nms_cases(draw: st.DrawFn, max_images: int = 2, max_classes: int = 3, max_k: int = 30) -> NmsCase:
    """Random grid candidates (1/32 grid: exact IoUs such as 9/20 = 0.45 occur) with random valid counts."""
    num_images = draw(st.integers(1, max_images))
    num_classes = draw(st.integers(1, max_classes))
    k = draw(st.integers(0, max_k))
    grid = draw(st.sampled_from([8, 32]))
    flat = draw(st.lists(grid_box(grid), min_size=num_images * num_classes * k,
                         max_size=num_images * num_classes * k))
    boxes = np.asarray(flat, np.float32).reshape(num_images, num_classes, k, 4)
    counts = np.asarray(draw(st.lists(st.integers(0, k), min_size=num_images * num_classes,
                                      max_size=num_images * num_classes)), np.int64)
    threshold = draw(st.sampled_from([0.45, 0.5, 0.3, 0.0]))
    return NmsCase(boxes, counts.reshape(num_images, num_classes), threshold)


def expected_match(case: MatchCase) -> tuple[np.ndarray, np.ndarray]:
    """The reference (float64, one image at a time) on the valid gts: labels[B, P] i64, loc[B, P, 4] f64."""
    num_images, num_priors = case.gt_boxes.shape[0], case.priors.shape[0]
    labels = np.zeros((num_images, num_priors), np.int64)
    loc = np.zeros((num_images, num_priors, 4), np.float64)
    for b in range(num_images):
        n = int(case.counts[b])
        labels[b], loc[b] = match_and_encode(case.gt_boxes[b, :n].astype(np.float64), case.gt_labels[b, :n],
                                             case.priors.astype(np.float64), case.iou_threshold, case.variances)
    return labels, loc


def expected_keep(case: NmsCase) -> np.ndarray:
    """The reference NMS per (image, class) on the valid candidates, fed strictly decreasing scores."""
    keep = np.zeros(case.boxes.shape[:3], bool)
    for b in range(case.boxes.shape[0]):
        for c in range(case.boxes.shape[1]):
            n = int(case.counts[b, c])
            kept = reference_nms(case.boxes[b, c, :n].astype(np.float64), -np.arange(n, dtype=np.float64),
                                 case.iou_threshold)
            keep[b, c, kept] = True
    return keep


def assert_match_equal(labels: np.ndarray, loc: np.ndarray, case: MatchCase, atol: float = 1e-5) -> None:
    """Labels exactly the reference's; loc targets within ``atol`` + 1e-5 relative (float32 vs float64)."""
    want_labels, want_loc = expected_match(case)
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_allclose(loc, want_loc, rtol=1e-5, atol=atol)


def exact_threshold_match_case() -> MatchCase:
    """One gt ``[.25, .25, .75, .75]`` against priors at IoU 1 (forced), exactly 0.5, 0.5 - 2**-20, 0.375.

    Prior heights: 0.5 (the gt itself), 0.25 (IoU 0.125 / 0.25 = 0.5), 0.25 - 2**-20 (just below), 0.1875.
    All priors share the gt's left/top edge, so ``iou = h / 0.5``; every value is exact in float32.
    """
    tiny = 2.0 ** -20
    heights = [0.5, 0.25, 0.25 - tiny, 0.1875, 0.25 + tiny]
    priors = np.asarray([[0.5, 0.25 + h / 2, 0.5, h] for h in heights], np.float32)
    gt = np.asarray([[[0.25, 0.25, 0.75, 0.75]]], np.float32)
    return MatchCase(priors, gt, np.asarray([[7]], np.int64), np.asarray([1], np.int64), 0.5)


def tie_match_case() -> MatchCase:
    """Ties everywhere: gts 0 and 1 are the same box (best_gt tie -> gt 0), priors 0 and 1 are the same box
    (best_prior tie -> prior 0), and gt 2 also wants prior 0 most (forcing: the later gt, 2, wins it).

    gts 0/1: ``[0, 0, .5, .5]``; gt 2: ``[0, 0, .5, .25]``; priors 0/1: ``[0, 0, .5, .5]``, prior 2:
    ``[.5, .5, 1, 1]`` (far from all). gt 2's IoUs: 0.5 with priors 0/1, 0 with prior 2 -> best prior 0.
    """
    boxes = np.asarray([[0, 0, .5, .5], [0, 0, .5, .5], [.5, .5, 1, 1]], np.float64)
    priors = xyxy_to_cxcywh32(boxes)
    gt = np.asarray([[[0, 0, .5, .5], [0, 0, .5, .5], [0, 0, .5, .25]]], np.float32)
    return MatchCase(priors, gt, np.asarray([[3, 4, 5]], np.int64), np.asarray([3], np.int64), 0.5)


def exact_threshold_nms_case(threshold: float) -> NmsCase:
    """Full-height strips (1/32 grid) whose IoUs with box 0 are exactly 1/2, 9/20 and 3/10.

    x-intervals in 32nds: box 0 = [0, 11]; box 1 = [0, 22] (IoU with 0: 11/22 = 0.5); box 2 = [2, 20]
    (9/20 = 0.45 with 0, 18/22 with 1); box 3 = [3, 10] (7/11 with 0); box 4 = [5, 20] (6/20 = 0.3 with 0,
    15/18 with 2, 15/22 with 1); box 5 duplicates box 2. Hand-computed keep masks: ``EXACT_NMS_KEEP``.
    """
    xs = [(0, 11), (0, 22), (2, 20), (3, 10), (5, 20), (2, 20)]
    boxes = np.asarray([[a / 32, 0.0, b / 32, 1.0] for a, b in xs], np.float32)[None, None]
    return NmsCase(boxes, np.asarray([[len(xs)]], np.int64), threshold)


# Each threshold keeps a box whose IoU with a kept box equals the threshold exactly (strict ">").
EXACT_NMS_KEEP = {
    0.45: [True, False, True, False, False, False],
    0.5: [True, True, False, False, False, False],
    0.3: [True, False, False, False, True, False],
}


def sure_priors(case: MatchCase, b: int) -> np.ndarray:
    """``[P]`` bool: the priors of image ``b`` that every float32 path must decide as the reference does (the
    complement of ``reference.matching.float32_ambiguous_priors``, the one near-tie rule)."""
    n = int(case.counts[b])
    return ~float32_ambiguous_priors(case.gt_boxes[b, :n], case.priors, case.iou_threshold)


def assert_match_close(labels: np.ndarray, loc: np.ndarray, case: MatchCase, atol: float = 1e-4) -> None:
    """As ``assert_match_equal`` but for continuous inputs: the float32 near-ties (:func:`sure_priors`) are exempt
    (there are few: the test fails if more than 1 % of the priors are exempt, so it cannot pass vacuously)."""
    want_labels, want_loc = expected_match(case)
    for b in range(labels.shape[0]):
        sure = sure_priors(case, b)
        assert sure.mean() > 0.99, f"image {b}: too many ambiguous priors ({(~sure).sum()})"
        np.testing.assert_array_equal(labels[b, sure], want_labels[b, sure], err_msg=f"image {b}")
        np.testing.assert_allclose(loc[b, sure], want_loc[b, sure], rtol=1e-5, atol=atol, err_msg=f"image {b}")


def ssd300_match_case(seed: int, num_images: int, num_gt: int) -> MatchCase:
    """A padded batch of continuous gts (random corners, sizes 0.02-0.6, clipped to the image) against the
    8732 SSD300 priors, with random counts: the realistic case, exact only away from float32 near-ties."""
    from reference.priors import SSD300, default_boxes

    rng = np.random.default_rng(seed)
    corner = rng.uniform(0.0, 0.8, (num_images, num_gt, 2))
    size = rng.uniform(0.02, 0.6, (num_images, num_gt, 2))
    gt = np.clip(np.concatenate([corner, corner + size], -1), 0, 1).astype(np.float32)
    return MatchCase(default_boxes(SSD300).astype(np.float32), gt, rng.integers(1, 21, (num_images, num_gt)),
                     rng.integers(0, num_gt + 1, num_images))


def random_candidates(seed: int, num_images: int, num_classes: int, k: int) -> NmsCase:
    """Continuous post-processing-sized candidates ``[B, C, K, 4]`` with random counts, NMS threshold 0.45."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0.2, 0.8, (num_images, num_classes, k, 2))
    half = rng.uniform(0.01, 0.2, (num_images, num_classes, k, 2))
    boxes = np.clip(np.concatenate([centre - half, centre + half], -1), 0, 1).astype(np.float32)
    return NmsCase(boxes, rng.integers(0, k + 1, (num_images, num_classes)), 0.45)


def match_on(case: MatchCase, device: str) -> tuple[np.ndarray, np.ndarray]:
    """``kernels.interop.match_batch_numba`` on ``device`` tensors; the outputs (checked to stay on that device,
    int64 labels and float32 targets) back as NumPy."""
    import torch

    from kernels.interop import match_batch_numba

    args = [torch.from_numpy(a).to(device) for a in (case.gt_boxes, case.gt_labels, case.counts, case.priors)]
    labels, loc = match_batch_numba(*args, case.iou_threshold, case.variances)
    assert labels.dtype == torch.int64 and loc.dtype == torch.float32
    assert labels.device.type == loc.device.type == device
    return labels.cpu().numpy(), loc.cpu().numpy()


def keep_on(case: NmsCase, device: str) -> np.ndarray:
    """``kernels.interop.nms_keep_numba`` on ``device`` tensors; the bool mask (checked to stay there) as NumPy."""
    import torch

    from kernels.interop import nms_keep_numba

    keep = nms_keep_numba(torch.from_numpy(case.boxes).to(device), torch.from_numpy(case.counts).to(device),
                          case.iou_threshold)
    assert keep.dtype == torch.bool and keep.shape == case.boxes.shape[:3] and keep.device.type == device
    return keep.cpu().numpy()


def slim_model_outputs(scale: float, num_images: int = 2) -> tuple:
    """``(loc[B, P, 4], conf[B, P, 7], priors[P, 4])`` float32 CPU tensors of a seeded random slim SSD300 on
    random images, the class logits times ``scale`` (x20 / x50: a confident model, where most winning
    probabilities round to 1 in float32 and many ``exp`` terms underflow; docs/CONTRACT.md "Ranking key")."""
    import torch

    from ssd_torch.modeling.model import model_from_config
    from ssd_torch.modeling.model_config import ssd300_slim
    from ssd_torch.priors import default_boxes

    torch.manual_seed(0)
    cfg = ssd300_slim(num_classes=7)
    model = model_from_config(cfg).eval()
    images = torch.randn(num_images, 3, 300, 300, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        loc, conf = model(images)
    return loc.float(), (conf * scale).float(), default_boxes(cfg.prior_spec), cfg.prior_spec
