"""Batched gt ↔ prior matching fused with target encoding (docs/CONTRACT.md "Matching" + "Encoding"; SSD paper §2.2).

Inputs (all layers): ``priors[P, 4]`` float32 cxcywh normalised; padded ground truth ``gt_boxes[B, G, 4]``
float32 xyxy normalised, ``gt_labels[B, G]`` int64 (1..C-1), ``counts[B]`` int64 (gts ``g >= counts[b]`` are
padding and never match). Outputs ``out_labels[B, P]`` int64 (0 = background) and ``out_loc[B, P, 4]`` float32
encoded offsets of the matched gt (0 for background priors, as ``reference.loss.match_and_encode``).

Rules, exactly docs/CONTRACT.md's: ``best_gt[p]`` and ``best_prior[g]`` are argmaxes that keep the *lower* index on
ties; forcing runs g = 0..G-1 in order so a later gt wins a prior two gts want; ``label = gt_label[best_gt]``
when ``best_iou >= t`` (forced priors count as IoU 2); G = 0 / counts 0 -> every prior is background.
Value checks (degenerate gt boxes, counts outside [0, G]) belong to the caller (``kernels.interop``); the
kernels clamp counts to [0, G] only so that a bad count can never read out of bounds.

CPU twin: ``match_encode_cpu`` (``@njit(parallel=True)`` over images). CUDA: two kernels launched by
``match_encode_cuda`` — (1) per-gt best prior as a block reduction in shared memory + one global
``atomic.max`` per (block, gt) on a packed key ``(float32 bits of IoU) << 32 | (2**32 - 1 - p)`` (a
non-negative float32's bit pattern orders like the float, and the inverted index makes ties go to the lower
prior); (2) per (image, prior) best gt, forcing, label and encoding in one pass.
"""
from __future__ import annotations

import numpy as np
from numba import config, cuda, int64, njit, prange

from ._boxmath import encode_cpu, encode_cuda, iou_cpu, iou_cuda
from ._cache import enable_kernel_cache

__all__ = ["match_encode_cpu", "match_encode_cuda", "best_prior_kernel", "assign_kernel",
           "GT_CHUNK", "INV_MASK", "DEFAULT_THREADS"]

GT_CHUNK = 32  # gts staged in shared memory at a time (any G works: the kernels loop over chunks)
INV_MASK = 0xFFFFFFFF  # low 32 bits of the packed key hold INV_MASK - p
DEFAULT_THREADS = 256


# ---------------------------------------------------------------------------------------------- CPU twin
@enable_kernel_cache  # disk cache stamped by every kernels source (kernels/_cache.py)
@njit(parallel=True, cache=False)
def match_encode_cpu(priors, gt_boxes, gt_labels, counts, iou_threshold, v0, v1, out_labels, out_loc):
    """Match and encode every image of the batch (see the module docstring for shapes and rules)."""
    num_priors = priors.shape[0]
    max_gt = gt_boxes.shape[1]
    thr = np.float32(iou_threshold)
    fv0 = np.float32(v0)
    fv1 = np.float32(v1)
    for b in prange(gt_boxes.shape[0]):
        n = min(max(counts[b], 0), max_gt)
        best_gt = np.zeros(num_priors, np.int64)
        best_iou = np.full(num_priors, np.float32(-1.0), np.float32)
        best_prior = np.zeros(max(n, 1), np.int64)
        best_prior_iou = np.full(max(n, 1), np.float32(-1.0), np.float32)
        for p in range(num_priors):
            dx0, dy0, dx1, dy1, area_d = _prior_corners(priors, p)
            for g in range(n):
                gx0, gy0, gx1, gy1 = gt_boxes[b, g, 0], gt_boxes[b, g, 1], gt_boxes[b, g, 2], gt_boxes[b, g, 3]
                iou = iou_cpu(gx0, gy0, gx1, gy1, (gx1 - gx0) * (gy1 - gy0), dx0, dy0, dx1, dy1, area_d)
                if iou > best_iou[p]:  # strict: the lower gt index keeps a tie
                    best_iou[p] = iou
                    best_gt[p] = g
                if iou > best_prior_iou[g]:  # p ascends, strict: the lower prior index keeps a tie
                    best_prior_iou[g] = iou
                    best_prior[g] = p
        for g in range(n):  # forcing, in gt order: a later gt wins a prior two gts want
            best_gt[best_prior[g]] = g
            best_iou[best_prior[g]] = np.float32(2.0)
        for p in range(num_priors):
            _write_target_cpu(priors, gt_boxes, gt_labels, b, p, n, best_gt[p], best_iou[p], thr, fv0, fv1,
                              out_labels, out_loc)


def _prior_corners_scalar(priors, p):
    """Prior ``p`` (cxcywh) as xyxy corners plus area, in float32 (``x0 = cx - w / 2`` as the reference)."""
    cx, cy, w, h = priors[p, 0], priors[p, 1], priors[p, 2], priors[p, 3]
    two = np.float32(2.0)
    x0, y0, x1, y1 = cx - w / two, cy - h / two, cx + w / two, cy + h / two
    return x0, y0, x1, y1, (x1 - x0) * (y1 - y0)


# one body for both targets, as ``_boxmath`` does, so the twin and the kernels build the same corners
_prior_corners = njit(inline="always", cache=False)(_prior_corners_scalar)
_prior_corners_cuda = cuda.jit(device=True, inline=True)(_prior_corners_scalar)


def _make_write_target(encode):
    """The label/target writer around ``encode`` (the CPU or the device build of ``_boxmath.encode_scalar``), so
    one body serves the CPU twin and the CUDA kernel, as ``_boxmath`` does for the arithmetic."""

    def write_target(priors, gt_boxes, gt_labels, b, p, n, g, iou, thr, v0, v1, out_labels, out_loc):
        """Label and loc target of prior ``p`` given its (forced) best gt ``g`` and IoU; zeros for background."""
        if n > 0 and iou >= thr:
            out_labels[b, p] = gt_labels[b, g]
            encode(gt_boxes[b, g, 0], gt_boxes[b, g, 1], gt_boxes[b, g, 2], gt_boxes[b, g, 3],
                   priors[p, 0], priors[p, 1], priors[p, 2], priors[p, 3], v0, v1, out_loc[b, p])
        else:
            out_labels[b, p] = 0
            for k in range(4):
                out_loc[b, p, k] = np.float32(0.0)

    return write_target


_write_target_cpu = njit(inline="always", cache=False)(_make_write_target(encode_cpu))


# ---------------------------------------------------------------------------------------------- CUDA
if config.ENABLE_CUDASIM:
    def _float_bits(x):
        """Bit pattern of a float32 as int32 (the simulator's libdevice is a stub, so NumPy does it)."""
        return np.int32(np.float32(x).view(np.int32))
else:
    from numba.cuda import libdevice

    @cuda.jit(device=True, inline=True)
    def _float_bits(x):
        """Bit pattern of a float32 as int32 (``__float_as_int``: a register move, no memory round trip)."""
        return libdevice.float_as_int(x)


@cuda.jit(device=True, inline=True)
def _stage_gt_chunk(gt_boxes, b, g0, m, sgt):
    """Copy gts ``g0 .. g0 + m - 1`` of image ``b`` (plus their areas) into shared ``sgt[GT_CHUNK, 5]``."""
    for t in range(cuda.threadIdx.x, m, cuda.blockDim.x):
        x0, y0, x1, y1 = gt_boxes[b, g0 + t, 0], gt_boxes[b, g0 + t, 1], gt_boxes[b, g0 + t, 2], gt_boxes[b, g0 + t, 3]
        sgt[t, 0], sgt[t, 1], sgt[t, 2], sgt[t, 3] = x0, y0, x1, y1
        sgt[t, 4] = (x1 - x0) * (y1 - y0)


@cuda.jit(device=True, inline=True)
def _thread_prior(priors):
    """This thread's prior ``p`` (grid x), whether it exists, and its corners + area (zeros past the last prior:
    such threads still take part in staging and barriers, so they must not return early)."""
    p = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    if p < priors.shape[0]:
        dx0, dy0, dx1, dy1, area_d = _prior_corners_cuda(priors, p)
        return p, True, dx0, dy0, dx1, dy1, area_d
    zero = np.float32(0.0)
    return p, False, zero, zero, zero, zero, zero


@cuda.jit
def best_prior_kernel(priors, gt_boxes, counts, best_key):
    """Grid ``(ceil(P / threads), B)``; ``best_key[B, G]`` int64, zeroed by the caller, gets the packed argmax."""
    p, active, dx0, dy0, dx1, dy1, area_d = _thread_prior(priors)
    b = cuda.blockIdx.y
    n = min(max(counts[b], 0), gt_boxes.shape[1])
    sgt = cuda.shared.array((GT_CHUNK, 5), np.float32)
    skey = cuda.shared.array(GT_CHUNK, np.int64)
    inv = int64(INV_MASK) - int64(p)
    for g0 in range(0, n, GT_CHUNK):  # n is uniform over the block, so every thread reaches each barrier
        m = min(GT_CHUNK, n - g0)
        _stage_gt_chunk(gt_boxes, b, g0, m, sgt)
        for t in range(cuda.threadIdx.x, m, cuda.blockDim.x):
            skey[t] = int64(0)
        cuda.syncthreads()
        if active:
            for g in range(m):
                iou = iou_cuda(sgt[g, 0], sgt[g, 1], sgt[g, 2], sgt[g, 3], sgt[g, 4], dx0, dy0, dx1, dy1, area_d)
                key = (int64(_float_bits(iou)) << int64(32)) | inv
                if key > skey[g]:  # a racy pre-check: it only skips atomics that could not win
                    cuda.atomic.max(skey, g, key)
        cuda.syncthreads()
        for t in range(cuda.threadIdx.x, m, cuda.blockDim.x):
            if skey[t] > best_key[b, g0 + t]:
                cuda.atomic.max(best_key, (b, g0 + t), skey[t])
        cuda.syncthreads()  # the next chunk overwrites sgt / skey


@cuda.jit
def assign_kernel(priors, gt_boxes, gt_labels, counts, best_key, iou_threshold, v0, v1, out_labels, out_loc):
    """Grid ``(ceil(P / threads), B)``: best gt (lower index on ties), forcing, label and encoding per prior."""
    p, active, dx0, dy0, dx1, dy1, area_d = _thread_prior(priors)
    b = cuda.blockIdx.y
    n = min(max(counts[b], 0), gt_boxes.shape[1])
    sgt = cuda.shared.array((GT_CHUNK, 5), np.float32)
    sforced = cuda.shared.array(GT_CHUNK, np.int64)
    best_iou = np.float32(-1.0)
    best_g = 0
    forced = -1
    for g0 in range(0, n, GT_CHUNK):
        m = min(GT_CHUNK, n - g0)
        _stage_gt_chunk(gt_boxes, b, g0, m, sgt)
        for t in range(cuda.threadIdx.x, m, cuda.blockDim.x):
            sforced[t] = int64(INV_MASK) - (best_key[b, g0 + t] & int64(INV_MASK))
        cuda.syncthreads()
        if active:
            for g in range(m):
                iou = iou_cuda(sgt[g, 0], sgt[g, 1], sgt[g, 2], sgt[g, 3], sgt[g, 4], dx0, dy0, dx1, dy1, area_d)
                if iou > best_iou:
                    best_iou = iou
                    best_g = g0 + g
                if sforced[g] == p:  # g ascends, so the last gt that wants p is the one that stays
                    forced = g0 + g
        cuda.syncthreads()
    if active:
        if forced >= 0:
            best_g = forced
            best_iou = np.float32(2.0)
        _write_target_cuda(priors, gt_boxes, gt_labels, b, p, n, best_g, best_iou,
                           np.float32(iou_threshold), np.float32(v0), np.float32(v1), out_labels, out_loc)


_write_target_cuda = cuda.jit(device=True, inline=True)(_make_write_target(encode_cuda))


def match_encode_cuda(priors, gt_boxes, gt_labels, counts, iou_threshold: float, v0: float, v1: float,
                      out_labels, out_loc, stream=0, best_key=None, threads_per_block: int = DEFAULT_THREADS) -> None:
    """Launch the two matching kernels on ``stream`` (device arrays; shapes as the module docstring).

    ``best_key`` is an int64 ``[B, G]`` device scratch array that must be all zeros (``None``: allocated and
    zeroed here). Nothing here synchronises the host. ``B``, ``P`` >= 1 and ``G`` >= 1 are the caller's job
    (``kernels.interop`` answers the empty cases without a launch).
    """
    num_images, max_gt = gt_boxes.shape[0], gt_boxes.shape[1]
    if best_key is None:
        best_key = cuda.to_device(np.zeros((num_images, max_gt), np.int64), stream=stream)
    grid = ((priors.shape[0] + threads_per_block - 1) // threads_per_block, num_images)
    thr, f0, f1 = np.float32(iou_threshold), np.float32(v0), np.float32(v1)
    best_prior_kernel[grid, threads_per_block, stream](priors, gt_boxes, counts, best_key)
    assign_kernel[grid, threads_per_block, stream](priors, gt_boxes, gt_labels, counts, best_key, thr, f0, f1,
                                                   out_labels, out_loc)
