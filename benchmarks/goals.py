"""The speed goals of the GPU suite, read back from the JSON the benchmarks wrote: met, missed or not measured.

``python -m benchmarks.goals DIR [--device cuda]`` reads ``DIR/kernels_<device>[_quick].json`` (from
``benchmarks.bench_kernels``) and ``DIR/gpu_train_<device>.json`` (from ``benchmarks.bench_gpu_train``), prints one
line per goal and writes ``DIR/goals.json``. The goals (set for an H100/H200) are:

* post-processing: ``ssd_torch.nms.postprocess(backend="numba")`` at B=32 is >= 10x torchvision's per-image
  ``SSD.postprocess_detections``, both timed in the same run;
* matcher: the numba kernels' median <= the torch-vectorised ``match_batch`` median at B=32, for every G;
* training: the best bf16-autocast SSD300-VGG16 training step >= 1,500 images/s.

The CPU inference goals (issue #21, 2 torch threads, ratios to torchvision's ``ssd300_vgg16`` in the same run of
``benchmarks.bench_inference``, files -> detections, met when both batch 1 and batch 8 meet them):
:func:`inference_goals` reads ``inference_cpu.json``: onnxruntime fp32 >= 1.5x, onnxruntime INT8 >= 2.5x, the
torch runtime >= 1.25x, and post-processing alone at B=8 >= 8x ``SSD.postprocess_detections``.

A goal whose rows are missing (a section not run, a stage cut short by its time limit) is "not measured", never
passed. Reporting only: the exit status is 0 whatever the verdicts (speed is never a test failure here).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

POSTPROCESS_SPEEDUP = 10.0
TRAIN_BF16_IMG_S = 1500.0
BATCH = 32
#: end-to-end speed-up over torchvision per runtime of ``Detector`` (CPU, issue #21)
INFERENCE_SPEEDUPS = {"onnxruntime": 1.5, "onnxruntime-int8": 2.5, "torch": 1.25}
INFERENCE_BATCHES = ("B=1", "B=8")
POSTPROCESS_ALONE_SPEEDUP = 8.0


@dataclass(frozen=True)
class Goal:
    """One goal's verdict: ``met`` is None when the benchmark rows it needs are missing."""

    name: str
    target: str
    measured: Optional[str]
    met: Optional[bool]

    @property
    def verdict(self) -> str:
        return "not measured" if self.met is None else ("met" if self.met else "MISSED")


def _rows(doc: Optional[dict], section: str, **case: Any) -> list[dict]:
    rows = (doc or {}).get(section) or []
    return [r for r in rows if all(r.get(k) == v for k, v in case.items())]


def _median(rows: list[dict], impl: str) -> Optional[float]:
    found = [r["median_ms"] for r in rows if r.get("impl") == impl]
    return found[0] if found else None


def postprocess_goal(kernels: Optional[dict], device: str) -> Goal:
    """numba post-processing at B=32 vs torchvision's ``SSD.postprocess_detections`` in the same run."""
    target = f">= {POSTPROCESS_SPEEDUP:g}x torchvision SSD.postprocess_detections at B={BATCH}"
    rows = _rows(kernels, "postprocess", B=BATCH)
    ours, theirs = _median(rows, f"numba {device}"), _median(rows, "torchvision SSD.postprocess")
    if ours is None or theirs is None or ours <= 0:
        return Goal("post-processing", target, None, None)
    speedup = theirs / ours
    return Goal("post-processing", target, f"{speedup:.1f}x ({ours:.2f} ms vs {theirs:.2f} ms)",
                speedup >= POSTPROCESS_SPEEDUP)


def matcher_goal(kernels: Optional[dict], device: str) -> Goal:
    """numba matcher median <= torch-vectorised median at B=32, for every measured G."""
    target = f"numba <= torch-vectorised median at B={BATCH}, every G"
    rows = _rows(kernels, "matcher", B=BATCH)
    pairs = []
    for g in sorted({r["G"] for r in rows}):
        same = [r for r in rows if r["G"] == g]
        ours, torch_ms = _median(same, f"numba {device}"), _median(same, "torch-vectorised")
        if ours is not None and torch_ms is not None:
            pairs.append((g, ours, torch_ms))
    if not pairs:
        return Goal("matcher", target, None, None)
    text = ", ".join(f"G={g}: {o:.2f} vs {t:.2f} ms" for g, o, t in pairs)
    return Goal("matcher", target, text, all(o <= t for _, o, t in pairs))


def training_goal(train: Optional[dict]) -> Goal:
    """The best bf16 training-step throughput over the matcher backends."""
    target = f">= {TRAIN_BF16_IMG_S:g} img/s bf16 training (SSD300-VGG16)"
    rows = [r for r in (train or {}).get("train", []) if r.get("mode") == "bf16"]
    if not rows or (train or {}).get("preset") != "ssd300_vgg16":
        return Goal("bf16 training", target, None, None)
    best = max(rows, key=lambda r: r["img_per_s"])
    return Goal("bf16 training", target, f"{best['img_per_s']:.0f} img/s (batch {train.get('batch')}, "
                f"matcher {best['match_backend']})", best["img_per_s"] >= TRAIN_BF16_IMG_S)


def _median_s(timing: Any) -> Optional[float]:
    """A Timing's median, from the live object or its JSON form (None when absent)."""
    if timing is None:
        return None
    return timing["median_s"] if isinstance(timing, dict) else timing.median_s


def inference_goals(doc: Optional[dict]) -> list[Goal]:
    """The CPU inference goals (module docstring) from ``benchmarks.bench_inference``'s results."""
    res = (doc or {}).get("results") or {}
    goals = []
    for runtime, target in INFERENCE_SPEEDUPS.items():
        name, want = f"inference {runtime}", f">= {target:g}x torchvision ssd300_vgg16, files -> detections"
        ratios = {}
        for case in INFERENCE_BATCHES:
            times = ((res.get("end_to_end") or {}).get(case) or {}).get("timings") or {}
            ours, theirs = _median_s(times.get(runtime)), _median_s(times.get("torchvision"))
            if ours and theirs:
                ratios[case] = theirs / ours
        if len(ratios) < len(INFERENCE_BATCHES):
            goals.append(Goal(name, want, None, None))
            continue
        text = ", ".join(f"{case}: {r:.2f}x" for case, r in ratios.items())
        goals.append(Goal(name, want, text, min(ratios.values()) >= target))
    want = f">= {POSTPROCESS_ALONE_SPEEDUP:g}x SSD.postprocess_detections at B=8 (CPU), every threshold timed"
    ratios = {}
    for case, times in (res.get("postprocess_B8") or {}).items():
        ours, theirs = _median_s(times.get("ours")), _median_s(times.get("torchvision"))
        if ours and theirs:
            ratios[case] = (theirs / ours, ours, theirs)
    if not ratios:
        return goals + [Goal("inference post-processing", want, None, None)]
    text = ", ".join(f"{case}: {r:.1f}x ({o * 1e3:.1f} vs {t * 1e3:.1f} ms)" for case, (r, o, t) in ratios.items())
    return goals + [Goal("inference post-processing", want, text,
                         min(r for r, _, _ in ratios.values()) >= POSTPROCESS_ALONE_SPEEDUP)]


def _load(folder: Path, names: Sequence[str]) -> Optional[dict]:
    for name in names:
        if (folder / name).is_file():
            return json.loads((folder / name).read_text())
    return None


def evaluate(folder: Path, device: str) -> list[Goal]:
    """The three goals from the result files in ``folder`` for ``device`` ("cuda" or "cpu")."""
    kernels = _load(folder, [f"kernels_{device}.json", f"kernels_{device}_quick.json"])
    train = _load(folder, [f"gpu_train_{device}.json"])
    return [postprocess_goal(kernels, device), matcher_goal(kernels, device), training_goal(train)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where the benchmarks wrote their JSON")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        raise SystemExit(f"benchmarks.goals: {args.folder} is not a folder")
    goals = evaluate(args.folder, args.device)
    print(f"goals (set for an H100/H200; results for device {args.device}):")
    for goal in goals:
        print(f"  {goal.name:16s} {goal.verdict:12s} {goal.measured or '-'}   [target {goal.target}]")
    document = {"device": args.device, "goals": [{**asdict(g), "verdict": g.verdict} for g in goals]}
    (args.folder / "goals.json").write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
