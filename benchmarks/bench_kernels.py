"""Time the numba kernels against the alternatives: matcher and NMS / post-processing.

``python -m benchmarks.bench_kernels [--device auto|cpu|cuda] [--quick] [--out DIR] [--repeats N]``

* matcher, B=32 images, P=8732 SSD300 priors, G in {1, 8, 32} gts per image (all valid): the reference
  (``reference.loss.match_and_encode`` per image, float64), ``ssd_torch.matching.match_batch(backend="torch")``
  (torch-vectorised), ``kernels.interop.match_batch_numba`` (numba CPU twin or CUDA kernels) and torchvision's
  per-image ``SSDMatcher`` + ``BoxCoder.encode_single`` (what ``torchvision.models.detection.SSD`` does);
* NMS only, on the same score-sorted candidates ``[B, 20, K<=400]`` (from ``ssd_torch.nms.select_candidates``):
  torchvision ``nms`` per (image, class), torchvision ``batched_nms`` per image, ``nms_keep_torch``, numba,
  and the reference per (image, class) (B=1 only: it is slow by design);
* post-processing, B in {1, 32}, C=21, dense random logits (every prior passes 0.01, so every class has the
  full 400 candidates: the worst case the kernels are sized for): torchvision's
  ``SSD.postprocess_detections`` (the unbound method on an object holding torchvision SSD300's settings),
  ``ssd_torch.nms.postprocess`` with ``backend="torch"`` and ``"numba"``, and the reference (B=1 only).

Medians after warm-up (CUDA: CUDA events around each call), ratios vs the torchvision row of each table (``x tv`` >
1 means faster than torchvision), JSON to ``kernels_<device>[_quick].json`` in the results folder
(``benchmarks.common.default_results_dir``: ``runs/bench/``, ``benchmarks/results/`` when recording) or ``--out``.
``--quick``: CI-sized (B=8 matcher, B in {1, 4} post-processing, few repeats).
"""
from __future__ import annotations

import argparse
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from benchmarks.common import Timing, format_table, time_call, write_results

VARIANCES = (0.1, 0.2)
IMAGE_SIZE = 300


@dataclass(frozen=True)
class BenchConfig:
    """Sizes and repeats of one run (``quick`` shrinks both)."""

    device: torch.device
    match_batch: int
    match_gts: tuple[int, ...]
    post_batches: tuple[int, ...]
    repeats: int
    slow_repeats: int  # for the reference and torchvision's Python loops
    warmup: int


def make_config(device: str, quick: bool, repeats: Optional[int]) -> BenchConfig:
    """The preset for ``device`` ("auto" -> cuda when torch and numba both see a GPU)."""
    from kernels.interop import cuda_available

    if device == "auto":
        device = "cuda" if cuda_available() else "cpu"
    if device == "cuda" and not cuda_available():
        raise SystemExit("--device cuda: no GPU usable by both torch and numba")
    on_gpu = device == "cuda"
    default_repeats = (5 if quick else 15) if not on_gpu else (20 if quick else 100)
    reps = repeats or default_repeats
    return BenchConfig(device=torch.device(device), match_batch=8 if quick else 32, match_gts=(1, 8, 32),
                       post_batches=(1, 4) if quick else (1, 32), repeats=reps,
                       slow_repeats=max(2, min(reps, 3 if quick else (5 if not on_gpu else 10))),
                       warmup=1 if quick else 3)


# ---------------------------------------------------------------------------------------------- timing
def timed(fn: Callable[[], Any], name: str, cfg: BenchConfig, slow: bool = False) -> Timing:
    """Median timing of ``fn``: wall clock on the CPU, CUDA events (plus a sync per call) on the GPU."""
    repeats = cfg.slow_repeats if slow else cfg.repeats
    warmup = 1 if slow else cfg.warmup  # the Python loops have no JIT or autotuning to warm up
    if cfg.device.type != "cuda":
        return time_call(fn, name=name, repeats=repeats, warmup=warmup)
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1e3)
    return Timing(name=name, median_s=float(np.median(samples)), min_s=min(samples), max_s=max(samples),
                  repeats=repeats, warmup=warmup, samples=samples)


def table_rows(timings: Sequence[tuple[dict, Timing]], baseline: str) -> list[dict]:
    """JSON rows: the case, the timing and the speed-up over the torchvision row of the same case."""
    rows = []
    for case, t in timings:
        same = [b for c, b in timings if c == case and b.name == baseline]
        speedup = same[0].median_s / t.median_s if same and t.median_s > 0 else None
        rows.append({**case, "impl": t.name, "median_ms": t.median_s * 1e3, "x_vs_torchvision": speedup,
                     "timing": t})
    return rows


def print_table(title: str, rows: list[dict], case_keys: Sequence[str]) -> None:
    print(f"\n== {title}", flush=True)
    body = [[*(r[k] for k in case_keys), r["impl"], r["median_ms"],
             "-" if r["x_vs_torchvision"] is None else f"{r['x_vs_torchvision']:.2f}"] for r in rows]
    print(format_table([*case_keys, "impl", "median ms", "x tv"], body))


# ---------------------------------------------------------------------------------------------- inputs
def ssd300_priors(device: torch.device) -> torch.Tensor:
    from reference.priors import SSD300, default_boxes

    return torch.from_numpy(default_boxes(SSD300).astype(np.float32)).to(device)


def make_gt(batch: int, num_gt: int, seed: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``num_gt`` valid random xyxy gts per image -> (boxes[B, G, 4], labels[B, G], counts[B])."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.rand(batch, num_gt, 2, generator=gen) * 0.8 + 0.1
    size = torch.rand(batch, num_gt, 2, generator=gen) * 0.5 + 0.05
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1).clamp(0.0, 1.0)
    labels = torch.randint(1, 21, (batch, num_gt), generator=gen)
    counts = torch.full((batch,), num_gt, dtype=torch.int64)
    return boxes.to(device), labels.to(device), counts.to(device)


def make_head_outputs(batch: int, num_priors: int, seed: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Random ``loc[B, P, 4]`` offsets and dense ``conf[B, P, 21]`` logits (all classes get 400 candidates)."""
    gen = torch.Generator().manual_seed(seed)
    loc = torch.randn(batch, num_priors, 4, generator=gen) * 0.5
    conf = torch.randn(batch, num_priors, 21, generator=gen) * 2.0
    return loc.to(device), conf.to(device)


# ---------------------------------------------------------------------------------------------- matcher
def reference_match(gt: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor,
                    priors: torch.Tensor) -> Callable[[], Any]:
    """The float64 oracle, image by image (inputs converted to NumPy once, outside the timing)."""
    from reference.loss import match_and_encode

    gt_np, lab_np, pri_np = gt.cpu().double().numpy(), labels.cpu().numpy(), priors.cpu().double().numpy()
    counts_list = counts.tolist()
    return lambda: [match_and_encode(gt_np[b, :n], lab_np[b, :n], pri_np, 0.5, VARIANCES)
                    for b, n in enumerate(counts_list)]


def torchvision_match(gt: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor,
                      priors: torch.Tensor) -> Callable[[], Any]:
    """torchvision SSD's per-image matching: ``box_iou`` + ``SSDMatcher(0.5)`` + ``BoxCoder.encode_single``."""
    from torchvision.models.detection import _utils as det_utils
    from torchvision.ops import box_iou

    from ssd_torch.boxes import cxcywh_to_xyxy

    matcher, coder = det_utils.SSDMatcher(0.5), det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    anchors = cxcywh_to_xyxy(priors)
    per_image = [(gt[b, :n], labels[b, :n]) for b, n in enumerate(counts.tolist())]

    def run() -> list:
        out = []
        for boxes, lab in per_image:
            matched = matcher(box_iou(boxes, anchors))
            fg = torch.where(matched >= 0)[0]
            cls = torch.zeros(anchors.shape[0], dtype=torch.int64, device=anchors.device)
            cls[fg] = lab[matched[fg]]
            out.append((cls, coder.encode_single(boxes[matched[fg]], anchors[fg])))
        return out

    return run


def bench_matcher(cfg: BenchConfig) -> list[dict]:
    """All matchers on B = cfg.match_batch images, G in cfg.match_gts (only torchvision and the reference loop
    over images)."""
    from kernels.interop import ValueChecks, match_batch_numba
    from ssd_torch.matching import match_batch

    priors = ssd300_priors(cfg.device)
    numba_name = f"numba {cfg.device.type}"
    timings: list[tuple[dict, Timing]] = []
    for num_gt in cfg.match_gts:
        gt, labels, counts = make_gt(cfg.match_batch, num_gt, num_gt, cfg.device)
        case = {"B": cfg.match_batch, "G": num_gt}
        impls = [
            ("torchvision", torchvision_match(gt, labels, counts, priors), True),
            ("reference", reference_match(gt, labels, counts, priors), True),
            ("torch-vectorised", lambda: match_batch(gt, labels, counts, priors, backend="torch",
                                                     validate=False), False),
            (numba_name, lambda: match_batch_numba(gt, labels, counts, priors, 0.5, VARIANCES,
                                                   value_checks=ValueChecks.NEVER), False),
        ]
        if cfg.device.type == "cuda":
            impls.append(("numba cuda, launches only", cuda_match_launches(gt, labels, counts, priors), False))
        for name, fn, slow in impls:
            timings.append((case, timed(fn, name, cfg, slow=slow)))
    return table_rows(timings, "torchvision")


def cuda_match_launches(gt: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor,
                        priors: torch.Tensor) -> Callable[[], Any]:
    """The two matching kernels on prebuilt numba views (no validation, no allocation, no view creation):
    the difference to the ``numba cuda`` row is the Python cost of ``kernels.interop``."""
    from kernels.interop import _device_view, _torch_stream
    from kernels.matching import match_encode_cuda

    out_labels = torch.empty(labels.shape[0], priors.shape[0], dtype=torch.int64, device=gt.device)
    out_loc = torch.empty(labels.shape[0], priors.shape[0], 4, dtype=torch.float32, device=gt.device)
    key = torch.zeros(labels.shape, dtype=torch.int64, device=gt.device)
    views = [_device_view(t) for t in (priors, gt, labels, counts, out_labels, out_loc, key)]

    def run() -> None:
        key.zero_()
        with _torch_stream(gt.device) as stream:
            match_encode_cuda(*views[:4], 0.5, *VARIANCES, *views[4:6], stream=stream, best_key=views[6])

    return run


# ---------------------------------------------------------------------------------------------- NMS
def torchvision_nms_per_class(boxes: torch.Tensor, scores: torch.Tensor,
                              counts: torch.Tensor) -> Callable[[], Any]:
    """``torchvision.ops.nms`` once per (image, class) on that group's valid candidates."""
    from torchvision.ops import nms

    groups = [(boxes[b, c, :n], scores[b, c, :n]) for (b, c), n in np.ndenumerate(counts.cpu().numpy())]
    return lambda: [nms(bx, sc, 0.45) for bx, sc in groups]


def torchvision_batched_nms(boxes: torch.Tensor, scores: torch.Tensor,
                            counts: torch.Tensor) -> Callable[[], Any]:
    """``torchvision.ops.batched_nms`` once per image over all its classes' valid candidates."""
    from torchvision.ops import batched_nms

    k = boxes.shape[2]
    valid = torch.arange(k, device=boxes.device)[None, None, :] < counts[:, :, None]
    classes = torch.arange(boxes.shape[1], device=boxes.device)[:, None].expand(boxes.shape[1], k)
    per_image = [(boxes[b][valid[b]], scores[b][valid[b]], classes[valid[b]]) for b in range(boxes.shape[0])]
    return lambda: [batched_nms(bx, sc, idx, 0.45) for bx, sc, idx in per_image]


def reference_nms_groups(boxes: torch.Tensor, scores: torch.Tensor, counts: torch.Tensor) -> Callable[[], Any]:
    from reference.nms import nms

    bx, sc, cn = boxes.cpu().double().numpy(), scores.cpu().double().numpy(), counts.cpu().numpy()
    return lambda: [nms(bx[b, c, :n], sc[b, c, :n], 0.45) for (b, c), n in np.ndenumerate(cn)]


def bench_nms(cfg: BenchConfig) -> list[dict]:
    """NMS alone on the candidates that post-processing would feed it (B in cfg.post_batches)."""
    from kernels.interop import ValueChecks, nms_keep_numba
    from ssd_torch.nms import nms_keep_torch, select_candidates

    priors = ssd300_priors(cfg.device)
    timings: list[tuple[dict, Timing]] = []
    for batch in cfg.post_batches:
        loc, conf = make_head_outputs(batch, priors.shape[0], batch, cfg.device)
        cand = select_candidates(loc, conf, priors, VARIANCES, 0.01, 400)
        case = {"B": batch, "C": conf.shape[2], "K": cand.boxes.shape[2]}
        impls = [
            ("torchvision nms/class", torchvision_nms_per_class(cand.boxes, cand.scores, cand.counts), True),
            ("torchvision batched_nms", torchvision_batched_nms(cand.boxes, cand.scores, cand.counts), True),
            ("torch-vectorised", lambda: nms_keep_torch(cand.boxes, cand.counts, 0.45), False),
            (f"numba {cfg.device.type}", lambda: nms_keep_numba(cand.boxes, cand.counts, 0.45,
                                                                value_checks=ValueChecks.NEVER), False),
        ]
        if cfg.device.type == "cuda":
            impls.append(("numba cuda, launch only", cuda_nms_launch(cand.boxes, cand.counts), False))
        if batch == 1:
            impls.append(("reference", reference_nms_groups(cand.boxes, cand.scores, cand.counts), True))
        for name, fn, slow in impls:
            timings.append((case, timed(fn, name, cfg, slow=slow)))
    return table_rows(timings, "torchvision batched_nms")


def cuda_nms_launch(boxes: torch.Tensor, counts: torch.Tensor) -> Callable[[], Any]:
    """The NMS kernel on prebuilt numba views (the rest of ``nms_keep_numba`` is Python overhead)."""
    from kernels.interop import _device_view, _torch_stream
    from kernels.nms import nms_batched_cuda

    keep = torch.empty(boxes.shape[:3], dtype=torch.uint8, device=boxes.device)
    views = [_device_view(t.contiguous()) for t in (boxes, counts, keep)]

    def run() -> None:
        with _torch_stream(boxes.device) as stream:
            nms_batched_cuda(views[0], views[1], 0.45, views[2], stream=stream)

    return run


# ---------------------------------------------------------------------------------------------- post-processing
def torchvision_postprocess(loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor) -> Callable[[], Any]:
    """``SSD.postprocess_detections`` with torchvision SSD300's settings (score 0.01, top-k 400, NMS 0.45,
    200 detections, BoxCoder weights 10, 10, 5, 5 = 1 / variances) and pixel anchors, per image as it is."""
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.ssd import SSD

    from ssd_torch.boxes import cxcywh_to_xyxy

    settings = types.SimpleNamespace(box_coder=det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)),
                                     score_thresh=0.01, topk_candidates=400, nms_thresh=0.45,
                                     detections_per_img=200)
    anchors = [cxcywh_to_xyxy(priors) * IMAGE_SIZE] * loc.shape[0]
    head = {"bbox_regression": loc, "cls_logits": conf}
    shapes = [(IMAGE_SIZE, IMAGE_SIZE)] * loc.shape[0]
    return lambda: SSD.postprocess_detections(settings, head, anchors, shapes)


def reference_postprocess(loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor) -> Callable[[], Any]:
    from reference.nms import postprocess

    loc_np, conf_np, pri_np = (t.cpu().double().numpy() for t in (loc, conf, priors))
    return lambda: [postprocess(loc_np[b], conf_np[b], pri_np, VARIANCES) for b in range(loc_np.shape[0])]


def bench_postprocess(cfg: BenchConfig) -> list[dict]:
    """Full post-processing from head outputs to per-image detections (B in cfg.post_batches)."""
    from ssd_torch.nms import postprocess

    priors = ssd300_priors(cfg.device)
    timings: list[tuple[dict, Timing]] = []
    for batch in cfg.post_batches:
        loc, conf = make_head_outputs(batch, priors.shape[0], batch, cfg.device)
        case = {"B": batch, "C": conf.shape[2]}
        impls = [
            ("torchvision SSD.postprocess", torchvision_postprocess(loc, conf, priors), True),
            ("torch-vectorised", lambda: postprocess(loc, conf, priors, backend="torch"), False),
            (f"numba {cfg.device.type}", lambda: postprocess(loc, conf, priors, backend="numba"), False),
        ]
        if batch == 1:
            impls.append(("reference", reference_postprocess(loc, conf, priors), True))
        for name, fn, slow in impls:
            timings.append((case, timed(fn, name, cfg, slow=slow)))
    return table_rows(timings, "torchvision SSD.postprocess")


# ---------------------------------------------------------------------------------------------- CLI
SECTIONS = {"matcher": (bench_matcher, ("B", "G")), "nms": (bench_nms, ("B", "C", "K")),
            "postprocess": (bench_postprocess, ("B", "C"))}


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--quick", action="store_true", help="CI-sized: smaller batches, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per implementation")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {sorted(SECTIONS)}")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: runs/bench, benchmarks/results when recording)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown --sections {sorted(unknown)}; choose from {sorted(SECTIONS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = make_config(args.device, args.quick, args.repeats)
    print(f"device {cfg.device}, quick={args.quick}, repeats {cfg.repeats} (slow impls {cfg.slow_repeats}), "
          f"torch threads {torch.get_num_threads()}", flush=True)
    payload: dict[str, Any] = {"device": cfg.device.type, "quick": args.quick, "repeats": cfg.repeats,
                               "slow_repeats": cfg.slow_repeats}
    filename = f"kernels_{cfg.device.type}{'_quick' if args.quick else ''}.json"
    with torch.inference_mode():
        for name in sections:
            bench, keys = SECTIONS[name]
            payload[name] = bench(cfg)
            print_table(name, payload[name], keys)
            path = write_results(filename, payload, results_dir=args.out)  # after each section: a cut-short
            print(f"wrote {path}", flush=True)  # run (a time limit) keeps what it measured
    return 0


if __name__ == "__main__":
    sys.exit(main())
