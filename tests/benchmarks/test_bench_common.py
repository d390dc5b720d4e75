"""The shared benchmark helpers (``benchmarks/common.py``): what they time, how they write results."""
from __future__ import annotations

import json
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
