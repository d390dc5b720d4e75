"""``benchmarks.goals``: the GPU suite's verdicts on the issue's speed goals, from the benchmarks' JSON rows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import goals


def kernel_rows(post_numba_ms: float, match_numba_ms: dict[int, float], device: str = "cuda") -> dict:
    post = [{"B": 32, "C": 21, "impl": "torchvision SSD.postprocess", "median_ms": 100.0},
            {"B": 32, "C": 21, "impl": f"numba {device}", "median_ms": post_numba_ms},
            {"B": 1, "C": 21, "impl": f"numba {device}", "median_ms": 0.001}]  # B=1 must not count
    matcher = []
    for g, ms in match_numba_ms.items():
        matcher += [{"B": 32, "G": g, "impl": "torch-vectorised", "median_ms": 2.0},
                    {"B": 32, "G": g, "impl": f"numba {device}", "median_ms": ms}]
    return {"postprocess": post, "matcher": matcher}


def train_rows(bf16: list[float], preset: str = "ssd300_vgg16") -> dict:
    rows = [{"mode": "fp32", "match_backend": "torch", "img_per_s": 9999.0}]  # fp32 must not count
    rows += [{"mode": "bf16", "match_backend": b, "img_per_s": v} for b, v in zip(("torch", "numba"), bf16)]
    return {"preset": preset, "batch": 64, "train": rows}


@pytest.mark.parametrize("numba_ms, met", [(10.0, True), (9.99, True), (10.01, False)])
def test_postprocess_goal_is_ten_times_torchvision_at_batch_32(numba_ms: float, met: bool) -> None:
    goal = goals.postprocess_goal(kernel_rows(numba_ms, {}), "cuda")
    assert goal.met is met and goal.verdict == ("met" if met else "MISSED")


def test_matcher_goal_needs_every_g() -> None:
    assert goals.matcher_goal(kernel_rows(1.0, {1: 1.0, 8: 2.0, 32: 1.5}), "cuda").met is True
    missed = goals.matcher_goal(kernel_rows(1.0, {1: 1.0, 8: 2.01, 32: 1.5}), "cuda")
    assert missed.met is False and "G=8: 2.01 vs 2.00 ms" in missed.measured


@pytest.mark.parametrize("bf16, met", [([1400.0, 1500.0], True), ([1499.9], False)])
def test_training_goal_takes_the_best_bf16_row(bf16: list[float], met: bool) -> None:
    assert goals.training_goal(train_rows(bf16)).met is met


def test_missing_rows_are_not_measured_never_met() -> None:
    empty = [goals.postprocess_goal(None, "cuda"), goals.matcher_goal({"matcher": []}, "cuda"),
             goals.training_goal(None), goals.training_goal(train_rows([5000.0], preset="ssd300_slim")),
             goals.postprocess_goal(kernel_rows(1.0, {}, device="cpu"), "cuda")]  # other device's rows
    assert all(g.met is None and g.verdict == "not measured" for g in empty)


def test_cli_reads_the_folder_and_writes_goals_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "kernels_cuda.json").write_text(json.dumps(kernel_rows(5.0, {1: 1.0, 8: 1.0, 32: 3.0})))
    (tmp_path / "gpu_train_cuda.json").write_text(json.dumps(train_rows([1600.0, 1700.0])))
    assert goals.main([str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "goals.json").read_text())
    assert [g["verdict"] for g in doc["goals"]] == ["met", "MISSED", "met"]
    out = capsys.readouterr().out
    assert "20.0x" in out and "1700 img/s" in out and "MISSED" in out


def test_cli_rejects_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="not a folder"):
        goals.main([str(tmp_path / "nope")])
