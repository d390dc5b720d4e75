"""`make bench`: every CPU benchmark in one go, each writing its JSON under benchmarks/results/.

Run on an otherwise idle machine: the numbers are medians, but a busy machine still skews the ratios.
GPU numbers come from ``benchmarks/gpu_suite.sh`` on a machine with CUDA.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from benchmarks import bench_kernels, bench_torch, bench_voc_eval

STEPS: Sequence[tuple[str, Callable, list[str]]] = (
    ("torch stack vs torchvision (match+encode, post-processing, loss)", bench_torch.main, []),
    ("numba kernels vs torch / torchvision / reference", bench_kernels.main, ["--device", "cpu"]),
    ("VOC evaluator: fast vs reference", bench_voc_eval.main, []),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run each benchmark; a failing one is reported and the others still run. Returns the failure count."""
    failures = 0
    for title, fn, args in STEPS:
        print(f"\n=== {title}", flush=True)
        try:
            fn(list(args) + list(argv or []))
        except Exception as exc:  # report and go on: one broken harness must not hide the other numbers
            failures += 1
            print(f"FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
    return failures


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
