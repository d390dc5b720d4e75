"""Batched greedy NMS per (image, class) (docs/CONTRACT.md "NMS and post-processing").

Input: ``boxes[B, C, K, 4]`` float32 xyxy normalised, already sorted by score descending (stable) inside each
(image, class); ``counts[B, C]`` int64 valid candidates (entries ``k >= counts[b, c]`` are padding). Output:
``keep[B, C, K]`` (bool on the CPU, uint8 0/1 on the device) — candidate ``k`` survives when no *kept*
candidate before it overlaps it with IoU strictly greater than the threshold; padding is never kept.
The threshold is compared in float32 (``iou32 > float32(t)``), which agrees with the float64 reference even
when the exact IoU equals ``t`` (both sides are the same rational rounded the same way), as torch does.

CPU twin: ``nms_batched_cpu`` (``@njit(parallel=True)`` over (image, class)). CUDA: ``nms_kernel``, one block
per (image, class): the block's threads fill an upper-triangular suppression bitmask in shared memory
(``mask[i, w]`` bit ``j % 64`` set when ``j > i`` and ``iou(i, j) > t``; rows are split into
``(row, 64-column word)`` tasks so the work spreads evenly), then one thread runs the greedy scan over the
mask (``K <= MAX_K`` = 448 -> 7 words per row). No warp intrinsics: the CUDA simulator runs the same source.
"""
from __future__ import annotations

import numpy as np
from numba import cuda, njit, prange, uint64

from ._boxmath import iou_cpu, iou_cuda
from ._cache import enable_kernel_cache

__all__ = ["nms_batched_cpu", "nms_batched_cuda", "nms_kernel", "MAX_K", "MASK_WORDS", "DEFAULT_THREADS"]

MASK_WORDS = 7
MAX_K = 64 * MASK_WORDS  # 448 >= the SSD top_k of 400
DEFAULT_THREADS = 256


@enable_kernel_cache  # disk cache stamped by every kernels source (kernels/_cache.py)
@njit(parallel=True, cache=False)
def nms_batched_cpu(boxes, counts, iou_threshold, keep):
    """Greedy NMS of every (image, class) of ``boxes[B, C, K, 4]`` into ``keep[B, C, K]`` (bool)."""
    num_classes = boxes.shape[1]
    k_max = boxes.shape[2]
    thr = np.float32(iou_threshold)
    for bc in prange(boxes.shape[0] * num_classes):
        b = bc // num_classes
        c = bc % num_classes
        n = min(max(counts[b, c], 0), k_max)
        removed = np.zeros(k_max, np.bool_)
        keep[b, c, :] = False
        for i in range(n):
            if removed[i]:
                continue
            keep[b, c, i] = True
            ax0, ay0, ax1, ay1 = boxes[b, c, i, 0], boxes[b, c, i, 1], boxes[b, c, i, 2], boxes[b, c, i, 3]
            area_a = (ax1 - ax0) * (ay1 - ay0)
            for j in range(i + 1, n):
                if removed[j]:
                    continue
                bx0, by0, bx1, by1 = boxes[b, c, j, 0], boxes[b, c, j, 1], boxes[b, c, j, 2], boxes[b, c, j, 3]
                iou = iou_cpu(ax0, ay0, ax1, ay1, area_a, bx0, by0, bx1, by1, (bx1 - bx0) * (by1 - by0))
                if iou > thr:
                    removed[j] = True


@cuda.jit
def nms_kernel(boxes, counts, iou_threshold, keep):
    """Grid ``B * C`` blocks; ``keep[B, C, K]`` uint8 is fully written (padding -> 0). Needs ``K <= MAX_K``."""
    num_classes = boxes.shape[1]
    b = cuda.blockIdx.x // num_classes
    c = cuda.blockIdx.x % num_classes
    tid = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    n = min(max(counts[b, c], 0), boxes.shape[2], MAX_K)
    sbox = cuda.shared.array((MAX_K, 5), np.float32)
    mask = cuda.shared.array((MAX_K, MASK_WORDS), np.uint64)
    for i in range(tid, boxes.shape[2], nthreads):
        keep[b, c, i] = 0
    for i in range(tid, n, nthreads):
        x0, y0, x1, y1 = boxes[b, c, i, 0], boxes[b, c, i, 1], boxes[b, c, i, 2], boxes[b, c, i, 3]
        sbox[i, 0], sbox[i, 1], sbox[i, 2], sbox[i, 3] = x0, y0, x1, y1
        sbox[i, 4] = (x1 - x0) * (y1 - y0)
    cuda.syncthreads()
    _fill_mask(sbox, n, np.float32(iou_threshold), mask)
    cuda.syncthreads()
    if tid == 0:
        _greedy_scan(mask, n, keep, b, c)


@cuda.jit(device=True, inline=True)
def _fill_mask(sbox, n, thr, mask):
    """Word ``w`` of row ``i``: bits for columns ``j`` in ``[64 w, 64 w + 64)`` with ``j > i``, IoU > ``thr``."""
    words = (n + 63) // 64
    for task in range(cuda.threadIdx.x, n * words, cuda.blockDim.x):
        i = task // words
        w = task % words
        bits = uint64(0)
        for j in range(max(64 * w, i + 1), min(64 * w + 64, n)):
            iou = iou_cuda(sbox[i, 0], sbox[i, 1], sbox[i, 2], sbox[i, 3], sbox[i, 4],
                           sbox[j, 0], sbox[j, 1], sbox[j, 2], sbox[j, 3], sbox[j, 4])
            if iou > thr:
                bits |= uint64(1) << uint64(j - 64 * w)
        mask[i, w] = bits


@cuda.jit(device=True, inline=True)
def _greedy_scan(mask, n, keep, b, c):
    """The serial greedy pass: keep ``i`` unless a kept box's row already marked it; OR in its row."""
    removed = cuda.local.array(MASK_WORDS, np.uint64)
    for w in range(MASK_WORDS):
        removed[w] = uint64(0)
    words = (n + 63) // 64
    for i in range(n):
        w = i // 64
        if ((removed[w] >> uint64(i % 64)) & uint64(1)) == uint64(0):
            keep[b, c, i] = 1
            for v in range(w, words):  # the mask is upper-triangular: earlier words of row i are empty
                removed[v] |= mask[i, v]


def nms_batched_cuda(boxes, counts, iou_threshold: float, keep, stream=0,
                     threads_per_block: int = DEFAULT_THREADS) -> None:
    """Launch ``nms_kernel`` on ``stream``: device ``boxes[B, C, K, 4]`` f32, ``counts[B, C]`` i64,
    ``keep[B, C, K]`` uint8 (written in full). ``K <= MAX_K`` and ``B * C >= 1`` are the caller's job."""
    if boxes.shape[2] > MAX_K:
        raise ValueError(f"nms_batched_cuda handles at most K = {MAX_K} candidates per (image, class), "
                         f"got K = {boxes.shape[2]}")
    blocks = boxes.shape[0] * boxes.shape[1]
    nms_kernel[blocks, threads_per_block, stream](boxes, counts, np.float32(iou_threshold), keep)
