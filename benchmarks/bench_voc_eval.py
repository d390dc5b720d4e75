"""Fast VOC evaluator (``ssd_torch.voc_eval``) vs the reference devkit loop (``reference.voc_eval``).

``python -m benchmarks.bench_voc_eval [--images 5000] [--dets 200] [--ref-images 250]``: scores generated
detections (20 classes, 1-8 gt per image of which ~10% difficult, detections scattered around the gt with
random labels and scores) and reports median wall times. The reference is timed on the first ``--ref-images`` images
only (its per-detection Python loop takes minutes at full size); both evaluators are also timed on that subset,
where their APs are checked to be identical, so the speed-up is like for like. JSON goes to ``voc_eval.json`` in the
results folder (``benchmarks.common.default_results_dir``: ``runs/bench/``, ``benchmarks/results/`` when recording).
"""
from __future__ import annotations

import argparse
import math
from typing import Sequence

import numpy as np

from benchmarks.common import format_table, ratio, time_call, write_results
from reference import voc_eval as ref
from ssd_torch import voc_eval as fast

NUM_CLASSES = 21


def generate(num_images: int, dets_per_image: int, seed: int = 0) -> tuple[dict, dict]:
    """``(detections, ground_truth)`` in the evaluator's format: pixel xyxy boxes in a ~500x375 image."""
    rng = np.random.default_rng(seed)
    gt, det = {}, {}
    for i in range(num_images):
        g = int(rng.integers(1, 9))
        xy = rng.uniform(1, 300, (g, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 200, (g, 2))], axis=1).round()
        labels = rng.integers(1, NUM_CLASSES, g)
        gt[f"{i:06d}"] = (boxes, labels, rng.random(g) < 0.1)
        pick = rng.integers(0, g, dets_per_image)
        dboxes = (boxes[pick] + rng.normal(0, 12, (dets_per_image, 4))).astype(np.float32)
        dlabels = np.where(rng.random(dets_per_image) < 0.5, labels[pick], rng.integers(1, NUM_CLASSES, dets_per_image))
        det[f"{i:06d}"] = (dboxes, rng.random(dets_per_image).astype(np.float32), dlabels)
    return det, gt


def _subset(d: dict, n: int) -> dict:
    return dict(list(d.items())[:n])


def _identical(a: "ref.VocResult", b: "ref.VocResult") -> bool:
    same = lambda x, y: x == y or (math.isnan(x) and math.isnan(y))  # noqa: E731
    return a.npos == b.npos and all(same(a.ap[c], b.ap[c]) for c in b.ap) and same(a.mAP, b.mAP)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--dets", type=int, default=200)
    p.add_argument("--ref-images", type=int, default=250)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    det, gt = generate(args.images, args.dets)
    small_det, small_gt = _subset(det, args.ref_images), _subset(gt, args.ref_images)
    rows, payload = [], {"images": args.images, "dets_per_image": args.dets, "ref_images": args.ref_images,
                         "num_classes": NUM_CLASSES}
    for metric, use_07 in (("voc07_11pt", True), ("area", False)):
        t_ref = time_call(lambda: ref.evaluate_voc(small_det, small_gt, NUM_CLASSES, use_07_metric=use_07),
                          name=f"reference {metric} {args.ref_images} img", repeats=max(1, args.repeats // 2), warmup=0)
        t_small = time_call(lambda: fast.evaluate_voc(small_det, small_gt, NUM_CLASSES, use_07_metric=use_07),
                            name=f"fast {metric} {args.ref_images} img", repeats=args.repeats, warmup=1)
        t_full = time_call(lambda: fast.evaluate_voc(det, gt, NUM_CLASSES, use_07_metric=use_07),
                           name=f"fast {metric} {args.images} img", repeats=args.repeats, warmup=1)
        same = _identical(fast.evaluate_voc(small_det, small_gt, NUM_CLASSES, use_07_metric=use_07),
                          ref.evaluate_voc(small_det, small_gt, NUM_CLASSES, use_07_metric=use_07))
        payload[metric] = {"reference_subset": t_ref, "fast_subset": t_small, "fast_full": t_full,
                           "speedup_subset": ratio(t_ref, t_small), "identical_on_subset": same}
        rows += [(t_ref.name, t_ref.median_s, "", same), (t_small.name, t_small.median_s, ratio(t_ref, t_small), same),
                 (t_full.name, t_full.median_s, "", "")]
    print(format_table(["evaluator", "median s", "speed-up", "identical APs"], rows))
    print(f"results: {write_results('voc_eval.json', payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
