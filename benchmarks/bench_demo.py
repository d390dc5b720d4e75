"""The demo's figures: ``make demo``'s run (the ``demo`` training preset on the synthetic VOC tree), timed.

``python -m benchmarks.bench_demo [--quick] [--out DIR]`` generates the synthetic tree and runs the demo into a
temporary folder (never into ``data/`` or ``runs/``), then records what the README quotes: the final VOC07
mAP and the per-class AP on the 200 test images, the periodic evaluations, the wall time of training +
evaluation, the training throughput (median img/s over epochs; over logged steps for a run shorter than an
epoch) and the data generation time. JSON goes to ``demo_cpu.json``
in the results folder (``benchmarks.common.default_results_dir``: ``runs/bench/<run>/``,
``benchmarks/results/`` when recording). The run is seeded end to end, so on one machine the mAP repeats to
the last digit; another machine (another CPU, BLAS or thread count) can round differently and land elsewhere.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from benchmarks.common import write_results


def _rows(path: Path) -> list[dict[str, str]]:
    from ssd_torch.evaluation.visualize import read_csv_rows

    return read_csv_rows(path)


def run(quick: bool) -> dict[str, Any]:
    """Generate the tree and run the demo in a temporary folder; the figures of that run."""
    import torch

    from ssd_torch.training.datasets import ensure_synthetic
    from ssd_torch.cli.demo import demo_config, run_demo

    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        cfg = demo_config(data_root=str(Path(tmp) / "data"), generate=True, output_dir=str(Path(tmp) / "run"),
                          quick=quick, overrides=["run.progress=false"])
        if cfg.runtime.num_threads:
            torch.set_num_threads(cfg.runtime.num_threads)
        start = time.perf_counter()
        ensure_synthetic(cfg.data)
        generation = time.perf_counter() - start
        out = run_demo(cfg)
        run_dir = Path(out["run_dir"])
        evals = [{"step": int(r["step"]), "mAP": float(r["mAP"])} for r in _rows(run_dir / "eval.csv")]
        # epochs.csv counts loading too; a run shorter than an epoch (--quick) has only the logged steps
        rows = _rows(run_dir / "epochs.csv") or _rows(run_dir / "metrics.csv")
        rates = [float(r["images_per_s"]) for r in rows]
    return {"settings": {"preset": "demo", "quick": quick, "trainval": cfg.data.synthetic_trainval,
                         "test": cfg.data.synthetic_test, "seed": cfg.runtime.seed, "steps": out["steps"],
                         "torch_threads": cfg.runtime.num_threads},
            "mAP": out["mAP"], "per_class_AP": out["per_class_AP"], "evaluations": evals,
            "train_and_eval_s": out["seconds"], "data_generation_s": generation,
            "images_per_s_median": statistics.median(rates) if rates else None}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the demo's smoke version (seconds)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default: see the module docstring)")
    args = p.parse_args(argv)
    results = run(args.quick)
    print(f"demo: VOC07 mAP {results['mAP']:.4f}, training + evaluation {results['train_and_eval_s']:.0f} s, "
          f"{results['images_per_s_median']:.1f} img/s (median), data {results['data_generation_s']:.0f} s")
    name = "demo_quick_cpu.json" if args.quick else "demo_cpu.json"
    print(f"wrote {write_results(name, results, results_dir=args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
