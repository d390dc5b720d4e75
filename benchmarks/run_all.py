"""`make bench`: every CPU benchmark in one go.

Results go to ``runs/bench/`` (ignored by git), so that running the benchmarks never rewrites the committed
figures; ``--record`` (``make bench RECORD=1``) writes them into ``benchmarks/results/`` instead, the files the
README quotes (see ``benchmarks.common.default_results_dir``). Record only on an otherwise idle machine: the
numbers are medians, but a busy machine still skews the ratios. GPU numbers come from
``benchmarks/gpu_suite.sh`` on a machine with CUDA.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

from benchmarks import bench_coco, bench_demo, bench_inference, bench_kernels, bench_torch, bench_voc_eval
from benchmarks.common import RECORD_ENV, default_results_dir

STEPS: Sequence[tuple[str, Callable, list[str]]] = (
    ("torch stack vs torchvision (match+encode, post-processing, loss)", bench_torch.main, []),
    ("numba kernels vs torch / torchvision / reference", bench_kernels.main, ["--device", "cpu"]),
    ("VOC evaluator: fast vs reference", bench_voc_eval.main, []),
    ("COCO reader and evaluation (pycocotools) on a COCO-2017-val-sized file", bench_coco.main, []),
    ("the demo (make demo's training run, timed, in a temporary folder)", bench_demo.main, []),
    ("files -> detections: Detector's runtimes vs torchvision ssd300_vgg16", bench_inference.main, []),
)


def _run_steps(argv: list[str]) -> int:
    failures = 0
    for title, fn, args in STEPS:
        print(f"\n=== {title}", flush=True)
        try:
            fn(list(args) + argv)
        except Exception as exc:  # noqa: BLE001 - report and go on: one broken harness must not hide the other numbers
            failures += 1
            print(f"FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    """Run each benchmark (the other arguments are passed to every harness); a failing one is reported and the
    others still run. ``--record``: write into the committed ``benchmarks/results/``. Returns the failure count."""
    args = list(argv or [])
    record = "--record" in args
    args = [a for a in args if a != "--record"]
    previous = os.environ.get(RECORD_ENV)
    if record:
        os.environ[RECORD_ENV] = "1"
    try:
        failures = _run_steps(args)
        print(f"\nresults in {default_results_dir()}"
              + ("" if record else " (not recorded: `make bench RECORD=1` writes benchmarks/results/)"))
    finally:
        if previous is None:
            os.environ.pop(RECORD_ENV, None)
        else:
            os.environ[RECORD_ENV] = previous
    return failures


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
