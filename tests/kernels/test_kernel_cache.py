"""The CPU twins' disk cache (``kernels/_cache.py``): keyed on every kernels source, reused across processes,
invalidated by a changed stamp, switchable off, and never a different answer than a fresh compile.

The cache round trips run in child processes (a dispatcher compiles once per process) with ``NUMBA_CACHE_DIR``
in the test's tmp dir.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernels import _cache, matching, nms

ROOT = Path(__file__).resolve().parents[2]

# The child runs both twins on a fixed input and prints their cache hits/misses and a digest of the outputs.
# FAKE_STAMP stands in for an edit of some kernels source without touching the tree.
CHILD = r"""
import hashlib, json, os, sys
import numpy as np
import kernels._cache as kc
if os.environ.get("FAKE_STAMP"):
    kc.sources_stamp = lambda paths=kc.SOURCES: os.environ["FAKE_STAMP"].encode()
from kernels import matching, nms
from reference.priors import SSD300, default_boxes
priors = default_boxes(SSD300).astype(np.float32)
gt = np.asarray([[[0.1, 0.1, 0.5, 0.6], [0.4, 0.3, 0.9, 0.8]]], np.float32)
labels, loc = np.zeros((1, len(priors)), np.int64), np.zeros((1, len(priors), 4), np.float32)
matching.match_encode_cpu(priors, gt, np.asarray([[3, 7]]), np.asarray([2]), 0.5, 0.1, 0.2, labels, loc)
boxes = np.random.default_rng(0).uniform(0, 1, (2, 3, 50, 4)).astype(np.float32)
boxes[..., 2:] += boxes[..., :2]
keep = np.zeros((2, 3, 50), np.bool_)
nms.nms_batched_cpu(boxes, np.full((2, 3), 50), 0.45, keep)
digest = hashlib.sha256(labels.tobytes() + loc.tobytes() + keep.tobytes()).hexdigest()
stats = [d.stats for d in (matching.match_encode_cpu, nms.nms_batched_cpu)]
print(json.dumps({"hits": sum(sum(s.cache_hits.values()) for s in stats),
                  "misses": sum(sum(s.cache_misses.values()) for s in stats), "digest": digest,
                  "cache": sorted({type(d._cache).__name__
                                   for d in (matching.match_encode_cpu, nms.nms_batched_cpu)})}))
"""


def run_child(cache_dir: Path, **env: str) -> dict:
    inherited = {k: v for k, v in os.environ.items() if k not in ("FAKE_STAMP", "SSD_NUMBA_CACHE")}
    full_env = {**inherited, "NUMBA_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(ROOT), **env}
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_stamp_covers_every_source_the_twins_compile_from(tmp_path: Path) -> None:
    names = {p.name for p in _cache.SOURCES}
    assert {"_boxmath.py", "matching.py", "nms.py", "_cache.py"} <= names
    copies = []
    for src in _cache.SOURCES:
        copies.append(tmp_path / src.name)
        copies[-1].write_bytes(src.read_bytes())
    base = _cache.sources_stamp(copies)
    assert base == _cache.sources_stamp(_cache.SOURCES)
    for path in copies:  # an edit of any one file, even a comment, changes the stamp
        original = path.read_bytes()
        path.write_bytes(original + b"# edit\n")
        assert _cache.sources_stamp(copies) != base, path.name
        path.write_bytes(original)
    assert _cache.sources_stamp(copies) == base


def test_twins_use_the_stamped_cache() -> None:
    if not _cache.cache_enabled():
        pytest.skip("SSD_NUMBA_CACHE is off in this environment")
    for dispatcher in (matching.match_encode_cpu, nms.nms_batched_cpu):
        assert type(dispatcher._cache).__name__ == "KernelsFunctionCache"
        assert dispatcher._cache._impl.locator.get_source_stamp() == _cache.sources_stamp()


@pytest.mark.parametrize("value, enabled", [("1", True), ("0", False), ("off", False), ("False", False),
                                            ("yes", True)])
def test_switch(monkeypatch: pytest.MonkeyPatch, value: str, enabled: bool) -> None:
    monkeypatch.setenv("SSD_NUMBA_CACHE", value)
    assert _cache.cache_enabled() is enabled


@pytest.mark.slow
def test_cache_round_trip_across_processes(tmp_path: Path) -> None:
    first = run_child(tmp_path)
    assert first["cache"] == ["KernelsFunctionCache"]
    assert (first["hits"], first["misses"]) == (0, 2)
    assert list(tmp_path.rglob("*.nbi")), "nothing was written to NUMBA_CACHE_DIR"
    second = run_child(tmp_path)
    assert (second["hits"], second["misses"]) == (2, 0)
    assert second["digest"] == first["digest"]
    edited = run_child(tmp_path, FAKE_STAMP="some kernels source changed")  # a stale entry must not load
    assert (edited["hits"], edited["misses"]) == (0, 2)
    assert edited["digest"] == first["digest"]
    off = run_child(tmp_path / "off", SSD_NUMBA_CACHE="0")
    assert off["cache"] == ["NullCache"] and (off["hits"], off["misses"]) == (0, 2)
    assert not (tmp_path / "off").exists()
    assert off["digest"] == first["digest"]
