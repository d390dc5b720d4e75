"""Shared timing helpers for the benchmark harnesses.

Every harness times a zero-argument callable with :func:`time_call` (warm-up runs first, then the median of
``repeats`` timed runs, each followed by an optional ``sync`` — pass ``torch.cuda.synchronize`` or
``numba.cuda.synchronize`` for asynchronous devices), prints a table with :func:`format_table`, and writes
one JSON file per harness with :func:`write_results`, which adds the machine, library versions and the date
so numbers from different machines are never compared by accident.

Where results go (:func:`default_results_dir`): ``runs/bench/<time>-<pid>/`` (ignored by git) by default,
so that a run on any
machine never rewrites the committed figures; ``benchmarks/results/`` (committed, quoted by the README) only
when recording is asked for: ``SSD_BENCH_RECORD=1``, ``python -m benchmarks.run_all --record`` or
``make bench RECORD=1``. An explicit ``results_dir`` (a harness's ``--out``) wins over both.
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ssd_torch.files import atomic_write_text

#: the committed results, quoted by the README: written only when recording (:data:`RECORD_ENV`)
RESULTS_DIR: Path = Path(__file__).resolve().parent / "results"
#: where ordinary runs write, one subfolder per process (``/runs/`` is in .gitignore)
LOCAL_RESULTS_DIR: Path = Path(__file__).resolve().parent.parent / "runs" / "bench"
#: set to ``1`` to write into :data:`RESULTS_DIR`
RECORD_ENV = "SSD_BENCH_RECORD"


@functools.lru_cache(maxsize=None)
def _this_run_dir() -> Path:
    """``runs/bench/<UTC time>-<pid>/``, fixed for the process: every harness of one ``make bench`` writes
    there, and a later run never replaces an earlier run's files."""
    return LOCAL_RESULTS_DIR / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}"


def default_results_dir() -> Path:
    """The default results folder: :data:`RESULTS_DIR` when ``SSD_BENCH_RECORD=1`` (recording the committed
    figures on purpose), else this process's own folder under :data:`LOCAL_RESULTS_DIR`."""
    return RESULTS_DIR if os.environ.get(RECORD_ENV) == "1" else _this_run_dir()


@dataclass(frozen=True)
class Timing:
    """Wall-clock timings of one callable, in seconds (``samples`` are the individual timed runs)."""

    name: str
    median_s: float
    min_s: float
    max_s: float
    repeats: int
    warmup: int
    samples: list[float] = field(default_factory=list)
    #: median process CPU time per run (all threads): less sensitive than wall time to other load on the machine
    cpu_median_s: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_call(
    fn: Callable[[], Any],
    *,
    name: str = "",
    repeats: int = 10,
    warmup: int = 2,
    sync: Callable[[], Any] | None = None,
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls (JIT compilation, caches, allocator), then ``repeats`` timed ones.

    The median is the headline number because a shared machine produces one-sided outliers (a run can only
    be slowed down by other load, never sped up). ``sync`` runs after every call, inside the timed region,
    so that asynchronous device work is included.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        fn()
        if sync is not None:
            sync()
    samples: list[float] = []
    cpu: list[float] = []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        if sync is not None:
            sync()
        samples.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return Timing(
        name=name,
        median_s=statistics.median(samples),
        min_s=min(samples),
        max_s=max(samples),
        repeats=repeats,
        warmup=warmup,
        samples=samples,
        cpu_median_s=statistics.median(cpu),
    )


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    *,
    names: dict[str, str] | None = None,
    repeats: int = 10,
    warmup: int = 2,
    sync: Callable[[], Any] | None = None,
) -> dict[str, Timing]:
    """Time several callables round-robin: repeat r runs every callable once before repeat r + 1 starts.

    On a shared machine, load comes in bursts; interleaving spreads each burst over all variants instead of
    penalising whichever ran during it, so their ratio is far more stable than with back-to-back
    :func:`time_call` runs. Returns one :class:`Timing` per key (``names`` gives display names).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = names or {}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            if sync is not None:
                sync()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            if sync is not None:
                sync()
            wall[key].append(time.perf_counter() - start)
            cpu[key].append(time.process_time() - start_cpu)
    return {
        key: Timing(name=names.get(key, key), median_s=statistics.median(wall[key]), min_s=min(wall[key]),
                    max_s=max(wall[key]), repeats=repeats, warmup=warmup, samples=wall[key],
                    cpu_median_s=statistics.median(cpu[key]))
        for key in fns
    }


def _version(module_name: str) -> str | None:
    """The ``__version__`` of an importable module, or None when it is not installed (or fails to import)."""
    try:
        module = __import__(module_name)
    except Exception:  # noqa: BLE001 - an optional dependency that is absent or broken must not stop the harness
        return None
    return str(getattr(module, "__version__", "unknown"))


def _cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo where available (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """Machine, library versions and date: what a reader needs to decide whether two result files compare."""
    info: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "numpy": _version("numpy"),
        "torch": _version("torch"),
        "torchvision": _version("torchvision"),
        "numba": _version("numba"),
    }
    try:
        import torch

        info["torch_num_threads"] = torch.get_num_threads()
        info["cuda_available"] = bool(torch.cuda.is_available())
        if info["cuda_available"]:
            info["cuda_device"] = torch.cuda.get_device_name(0)
            info["cuda_version"] = torch.version.cuda
    except Exception:  # noqa: BLE001 - diagnostics only, never fatal
        info["cuda_available"] = False
    return info


def write_results(filename: str, payload: dict[str, Any], *, results_dir: Path | None = None) -> Path:
    """Write ``payload`` plus :func:`machine_info` as JSON to ``results_dir/filename``, atomically
    (``results_dir`` defaults to :func:`default_results_dir`: an ignored folder unless recording).

    ``Timing`` values anywhere at the top level of ``payload`` or inside lists/dicts are converted with
    ``to_dict``. The file is written atomically (``ssd_torch.files.atomic_write_text``: a temporary file in the
    same folder, renamed), so a killed run never leaves a half-written result behind.
    """
    if not filename.endswith(".json"):
        raise ValueError(f"results filename must end with .json, got {filename!r}")
    out_dir = default_results_dir() if results_dir is None else Path(results_dir)
    document = {"machine": machine_info(), **_jsonable(payload)}
    return atomic_write_text(out_dir / filename, json.dumps(document, indent=2, sort_keys=False) + "\n")


def _jsonable(value: Any) -> Any:
    """Recursively turn Timings (and tuples) into plain JSON values."""
    if isinstance(value, Timing):
        return value.to_dict()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def ratio(slow: Timing, fast: Timing) -> float:
    """How many times faster ``fast`` is than ``slow`` (median over median)."""
    return slow.median_s / fast.median_s if fast.median_s > 0 else float("inf")


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text table with right-aligned columns; floats are shown with 4 significant digits."""
    text_rows = [[_cell(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in text_rows)
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def ms(timing: Timing) -> float:
    """The median of a Timing in milliseconds (for tables)."""
    return timing.median_s * 1e3


def cpu_ms(timing: Timing) -> float:
    """The median process CPU time of a Timing in milliseconds (for tables)."""
    return timing.cpu_median_s * 1e3
