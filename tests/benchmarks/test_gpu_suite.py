"""``benchmarks/gpu_suite.sh`` stays runnable for whoever next gets a GPU: its whole flow (environment report,
``-m gpu`` tests, kernel benchmark, training/inference throughput, end-to-end inference from files, summary) runs
here on the CPU with ``SUITE_CPU_SMOKE=1`` and tiny sizes, and writes the files that a GPU run writes, into the
given folder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "gpu_suite.sh"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_suite_flow_on_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "SUITE_CPU_SMOKE": "1", "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(SUITE), str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    summary = (tmp_path / "summary.txt").read_text()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for stage in ("env", "tests", "bench_kernels", "bench_gpu_train", "bench_inference"):
        assert f"stage {stage}: ok" in summary, summary
    assert "CUDA usable by torch and numba: 0" in summary
    goals = json.loads((tmp_path / "goals.json").read_text())
    assert goals["device"] == "cpu" and [g["name"] for g in goals["goals"]] == ["post-processing", "matcher",
                                                                                "bf16 training"]
    # the smoke run times the matcher at B=8 only, no post-processing and no bf16: nothing can count as met
    assert all(g["verdict"] == "not measured" for g in goals["goals"]), goals
    assert "not measured" in summary
    tests_log = (tmp_path / "tests_gpu.log").read_text()
    assert " skipped" in tests_log and "no CUDA device" in tests_log and "passed" not in tests_log, tests_log
    written = {p.name for p in tmp_path.iterdir()}
    assert written == {"summary.txt", "env.txt", "tests_gpu.log", "bench.log", "kernels_cpu_quick.json",
                       "gpu_train_cpu.json", "inference_cpu.json", "goals.json"}, written
    assert len(written) <= 8  # the most files a device call brings back
    env_txt = (tmp_path / "env.txt").read_text()
    assert "torch.cuda.is_available False" in env_txt and "numba" in env_txt
    train = json.loads((tmp_path / "gpu_train_cpu.json").read_text())
    assert [r["mode"] for r in train["train"]] == ["fp32"] and train["inference"][0]["img_per_s"] > 0
    inference = json.loads((tmp_path / "inference_cpu.json").read_text())["results"]["end_to_end"]["B=1"]
    assert set(inference["timings"]) == {"torch", "torch contiguous", "torchvision"}
    assert inference["counts_agree"]["torchvision on our pixels"] and inference["counts"]["torch"][0] > 0
    bench_log = (tmp_path / "bench.log").read_text()
    assert all(f"=== stage {s}:" in bench_log for s in ("bench_kernels", "bench_gpu_train", "bench_inference"))
    kernels = json.loads((tmp_path / "kernels_cpu_quick.json").read_text())
    assert kernels["machine"]["cuda_available"] is False and kernels["device"] == "cpu"
    impls = {row["impl"] for row in kernels["matcher"]}
    assert {"torchvision", "reference", "torch-vectorised", "numba cpu"} <= impls
    assert all(row["median_ms"] > 0 for row in kernels["matcher"])
