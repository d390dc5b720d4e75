"""The shared benchmark helpers (``benchmarks/common.py``): what they time, how they write results."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks.common import Timing, format_table, ratio, time_call, time_interleaved, write_results


def test_time_call_runs_warmup_then_repeats_and_syncs_after_each() -> None:
    calls: list[str] = []
    timing = time_call(lambda: calls.append("fn"), name="x", repeats=4, warmup=2, sync=lambda: calls.append("sync"))
    assert calls == ["fn", "sync"] * 6
    assert timing.repeats == 4 and timing.warmup == 2 and len(timing.samples) == 4
    assert timing.min_s <= timing.median_s <= timing.max_s


@pytest.mark.parametrize("kwargs, message", [({"repeats": 0}, "repeats"), ({"warmup": -1}, "warmup")])
def test_time_call_rejects_bad_counts(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        time_call(lambda: None, **kwargs)


def test_time_interleaved_alternates_the_callables() -> None:
    order: list[str] = []
    out = time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                           names={"a": "first"}, repeats=3, warmup=1)
    assert order == ["a", "b"] * 4
    assert out["a"].name == "first" and out["b"].name == "b" and len(out["b"].samples) == 3


def test_ratio_is_slow_over_fast_median() -> None:
    slow = Timing("s", 0.3, 0.3, 0.3, 1, 0)
    fast = Timing("f", 0.1, 0.1, 0.1, 1, 0)
    assert ratio(slow, fast) == pytest.approx(3.0)
    assert ratio(slow, Timing("z", 0.0, 0.0, 0.0, 1, 0)) == float("inf")


def test_format_table_aligns_columns_and_rounds_floats() -> None:
    text = format_table(["impl", "ms"], [["torch", 1.234567], ["numba cpu", 12.0]])
    lines = text.splitlines()
    assert lines[0] == "     impl     ms" and lines[1] == "---------  -----"
    assert lines[2] == "    torch  1.235" and lines[3] == "numba cpu     12"


def test_write_results_adds_machine_info_and_converts_timings(tmp_path: Path) -> None:
    timing = Timing("t", 0.5, 0.4, 0.6, 3, 1, samples=[0.4, 0.5, 0.6])
    path = write_results("x.json", {"rows": [{"t": timing}], "pair": (1, 2)}, results_dir=tmp_path / "new")
    doc = json.loads(path.read_text())
    assert path == tmp_path / "new" / "x.json" and not list(path.parent.glob("*.tmp"))
    assert doc["rows"][0]["t"]["median_s"] == 0.5 and doc["pair"] == [1, 2]
    for key in ("date_utc", "python", "torch", "numba", "cpu_count", "cuda_available"):
        assert key in doc["machine"]


def test_write_results_wants_a_json_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.json"):
        write_results("x.txt", {}, results_dir=tmp_path)


def test_results_go_to_an_ignored_folder_unless_recording(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make bench` must not rewrite the committed benchmarks/results/*.json unless asked (RECORD=1)."""
    import shutil
    import subprocess

    from benchmarks import common

    monkeypatch.delenv(common.RECORD_ENV, raising=False)
    local = common.default_results_dir()
    assert local != common.RESULTS_DIR
    # one folder per process under runs/bench/: a later `make bench` never replaces an earlier run's files
    assert local.parent == common.LOCAL_RESULTS_DIR and local.name.endswith(f"-{os.getpid()}")
    assert common.default_results_dir() == local
    monkeypatch.setenv(common.RECORD_ENV, "1")
    assert common.default_results_dir() == common.RESULTS_DIR
    root = Path(common.__file__).resolve().parent.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    probe = local / "torch_cpu.json"
    ignored = subprocess.run(["git", "-C", str(root), "check-ignore", "-q", str(probe)], check=False)
    assert ignored.returncode == 0, f"{probe} is not ignored by git"


def test_run_all_record_flag_sets_the_committed_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import common, run_all

    monkeypatch.delenv(common.RECORD_ENV, raising=False)
    seen: list[tuple[list[str], Path]] = []
    probe = lambda argv: seen.append((argv, common.default_results_dir()))  # noqa: E731
    monkeypatch.setattr(run_all, "STEPS", (("probe", probe, ["-x"]),))
    assert run_all.main(["--quick"]) == 0
    assert seen == [(["-x", "--quick"], common.default_results_dir())] and seen[0][1] != common.RESULTS_DIR
    assert run_all.main(["--record"]) == 0
    assert seen[1] == (["-x"], common.RESULTS_DIR)
    import os
    assert common.RECORD_ENV not in os.environ  # restored after the run


def test_bench_demo_records_the_demo_run(tmp_path: Path) -> None:
    """The harness behind the README's demo figures: the demo's own run (its --quick version here), in a
    temporary folder, with mAP, per-class AP, evaluations and timings in the JSON."""
    from benchmarks import bench_demo

    assert bench_demo.main(["--quick", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "demo_quick_cpu.json").read_text())
    assert doc["settings"]["quick"] is True and doc["settings"]["steps"] == 2
    assert [e["step"] for e in doc["evaluations"]] == [1, 2] and doc["evaluations"][-1]["mAP"] == doc["mAP"]
    assert set(doc["per_class_AP"]) == {"circle", "square", "triangle", "ring", "cross", "star"}
    assert doc["train_and_eval_s"] > 0 and doc["images_per_s_median"] > 0 and "machine" in doc
