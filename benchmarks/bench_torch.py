"""Time the PyTorch SSD parts against torchvision's SSD parts and the NumPy reference, on the same inputs.

Run ``python -m benchmarks.bench_torch [--repeats N] [--threads T] [--device cpu|cuda]``. Three comparisons:

* match + encode, B=32 images, P=8732 priors, 1..20 gts per image: ``ssd_torch.matching.match_batch`` (one
  batched call) vs torchvision's ``SSDMatcher`` + ``BoxCoder(weights=(10, 10, 5, 5))`` per image (as
  ``torchvision.models.detection.SSD`` does it) vs ``reference.loss.match_and_encode`` per image;
* post-processing, B=8, C=21: ``ssd_torch.nms.postprocess`` vs ``SSD.postprocess_detections`` of a
  ``ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21)`` vs ``reference.nms.postprocess``, on
  "dense" logits (random: ~every prior passes the 0.01 threshold, 400 candidates per class, the worst case)
  and "sparse" logits (background +8: tens of candidates per class, closer to a trained detector);
* loss forward, B=32, C=21: ``multibox_loss_from_targets`` vs ``SSD.compute_loss`` (both given the matches),
  and ``MultiBoxLoss`` (matching included) vs ``SSDMatcher`` per image + ``compute_loss``.

Where the kernels run on ``--device`` (``ssd_torch.backend.numba_usable``), the ``backend="numba"`` variants are
timed too. The torch variants of a task run round-robin (``benchmarks.common.time_interleaved``) so that bursts of
load on a shared machine hit them alike; medians of wall and process CPU time over ``--repeats`` runs after warm-up
are printed as a table and written to ``torch_<device>.json`` in the results folder
(``benchmarks.common.default_results_dir``: ``runs/bench/``, ``benchmarks/results/`` when recording). The reference
gets fewer repeats (it is slow by design).
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

import torch

import reference.loss as ref_loss
import reference.nms as ref_nms
from reference.priors import SSD300
from benchmarks.common import Timing, cpu_ms, format_table, ms, ratio, time_call, time_interleaved, write_results
from ssd_torch.backend import numba_usable
from ssd_torch.boxes import cxcywh_to_xyxy
from ssd_torch.loss import MultiBoxLoss, multibox_loss_from_targets
from ssd_torch.matching import match_batch
from ssd_torch.nms import postprocess
from ssd_torch.priors import default_boxes

IMAGE_SIZE = 300


def make_gt(batch: int, max_gt: int, seed: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """A padded gt batch with 1..max_gt valid xyxy boxes per image -> (boxes[B,G,4], labels[B,G], counts[B])."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, max_gt + 1, (batch,), generator=g)
    centre = torch.rand(batch, max_gt, 2, generator=g) * 0.8 + 0.1
    size = torch.rand(batch, max_gt, 2, generator=g) * 0.5 + 0.05
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1).clamp(0.0, 1.0)
    labels = torch.randint(1, 21, (batch, max_gt), generator=g)
    pad = torch.arange(max_gt)[None, :] >= counts[:, None]
    boxes[pad], labels[pad] = 0.0, 0
    return boxes.to(device), labels.to(device), counts.to(device)


def _tv_parts() -> tuple[Any, Any, Any]:
    """torchvision's SSD300 (random init), its SSDMatcher and the SSD BoxCoder, for the comparisons."""
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection import ssd300_vgg16

    model = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21).eval()
    return model, det_utils.SSDMatcher(0.5), det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))


def tv_match_encode(matcher: Any, coder: Any, gt_list: list, label_list: list,
                    anchors_xyxy: torch.Tensor) -> list:
    """torchvision's per-image matching + foreground encoding (what ``SSD.forward``/``compute_loss`` do)."""
    from torchvision.ops import box_iou

    out = []
    for boxes, labels in zip(gt_list, label_list):
        matched = matcher(box_iou(boxes, anchors_xyxy))
        fg = torch.where(matched >= 0)[0]
        cls = torch.zeros(anchors_xyxy.shape[0], dtype=torch.int64, device=boxes.device)
        cls[fg] = labels[matched[fg]]
        out.append((cls, coder.encode_single(boxes[matched[fg]], anchors_xyxy[fg]), matched))
    return out


def _run(args: argparse.Namespace, fns: dict, names: dict, sync: Callable | None) -> dict[str, Timing]:
    """Time the torch variants of one task round-robin (see ``benchmarks.common.time_interleaved``)."""
    return time_interleaved(fns, names=names, repeats=args.repeats, warmup=args.warmup, sync=sync)


def bench_matching(args: argparse.Namespace, tv: tuple, priors: torch.Tensor, sync: Callable | None) -> dict:
    """match + encode, B=32, P=8732, 1..20 gts per image."""
    model, matcher, coder = tv
    boxes, labels, counts = make_gt(32, 20, args.seed, priors.device)
    gt_list = [boxes[i, :n] for i, n in enumerate(counts.tolist())]
    label_list = [labels[i, :n] for i, n in enumerate(counts.tolist())]
    anchors = cxcywh_to_xyxy(priors)
    fns = {"ours": lambda: match_batch(boxes, labels, counts, priors),
           "torchvision": lambda: tv_match_encode(matcher, coder, gt_list, label_list, anchors)}
    names = {"ours": "ssd_torch.match_batch", "torchvision": "torchvision SSDMatcher+BoxCoder per image"}
    if args.numba:
        fns["ours_numba"] = lambda: match_batch(boxes, labels, counts, priors, backend="numba")
        names["ours_numba"] = "ssd_torch.match_batch backend=numba"
    out: dict[str, Any] = _run(args, fns, names, sync)
    np_pr, np_gt = priors.double().cpu().numpy(), [(b.double().cpu().numpy(), lab.cpu().numpy())
                                                   for b, lab in zip(gt_list, label_list)]
    out["reference"] = time_call(lambda: [ref_loss.match_and_encode(b, lab, np_pr) for b, lab in np_gt],
                                 name="reference.loss.match_and_encode per image", repeats=args.ref_repeats,
                                 warmup=0)
    return out


def bench_postprocess(args: argparse.Namespace, tv: tuple, priors: torch.Tensor, sync: Callable | None,
                      background_boost: float) -> dict:
    """Post-processing of B=8 images with C=21 classes."""
    model = tv[0]
    g = torch.Generator().manual_seed(args.seed + 1)
    loc = (torch.randn(8, priors.shape[0], 4, generator=g) * 0.5).to(priors.device)
    conf = torch.randn(8, priors.shape[0], 21, generator=g)
    conf[..., 0] += background_boost
    conf = conf.to(priors.device)
    anchors = [cxcywh_to_xyxy(priors) * IMAGE_SIZE] * 8
    head = {"bbox_regression": loc, "cls_logits": conf}
    fns = {"ours": lambda: postprocess(loc, conf, priors),
           "torchvision": lambda: model.postprocess_detections(head, anchors, [(IMAGE_SIZE, IMAGE_SIZE)] * 8)}
    names = {"ours": "ssd_torch.postprocess", "torchvision": "torchvision SSD.postprocess_detections"}
    if args.numba:
        fns["ours_numba"] = lambda: postprocess(loc, conf, priors, backend="numba")
        names["ours_numba"] = "ssd_torch.postprocess backend=numba"
    out: dict[str, Any] = _run(args, fns, names, sync)
    np_loc, np_conf, np_pr = (t.double().cpu().numpy() for t in (loc, conf, priors))
    out["reference"] = time_call(lambda: [ref_nms.postprocess(np_loc[i], np_conf[i], np_pr) for i in range(8)],
                                 name="reference.nms.postprocess per image", repeats=args.ref_repeats, warmup=0)
    out["mean_candidates_per_class"] = (torch.softmax(conf, -1)[..., 1:] > 0.01).sum(1).float().mean().item()
    return out


def bench_loss(args: argparse.Namespace, tv: tuple, priors: torch.Tensor, sync: Callable | None) -> dict:
    """Loss forward, B=32, C=21: from targets (both sides given the matches) and with matching included."""
    model, matcher, coder = tv
    boxes, labels, counts = make_gt(32, 20, args.seed + 2, priors.device)
    g = torch.Generator().manual_seed(args.seed + 3)
    loc = torch.randn(32, priors.shape[0], 4, generator=g).to(priors.device)
    conf = torch.randn(32, priors.shape[0], 21, generator=g).to(priors.device)
    m_labels, m_targets = match_batch(boxes, labels, counts, priors)
    anchors_px = cxcywh_to_xyxy(priors) * IMAGE_SIZE
    targets = [{"boxes": boxes[i, :n] * IMAGE_SIZE, "labels": labels[i, :n]} for i, n in enumerate(counts.tolist())]
    head = {"bbox_regression": loc, "cls_logits": conf}
    matched = [m for _, _, m in tv_match_encode(matcher, coder, [t["boxes"] for t in targets],
                                                 [t["labels"] for t in targets], anchors_px)]
    criterion = MultiBoxLoss(priors).to(priors.device)

    def tv_full() -> Any:
        from torchvision.ops import box_iou

        idx = [matcher(box_iou(t["boxes"], anchors_px)) for t in targets]
        return model.compute_loss(targets, head, [anchors_px] * 32, idx)

    fns = {"ours_from_targets": lambda: multibox_loss_from_targets(loc, conf, m_labels, m_targets),
           "torchvision_from_matches": lambda: model.compute_loss(targets, head, [anchors_px] * 32, matched),
           "ours_with_matching": lambda: criterion(loc, conf, boxes, labels, counts),
           "torchvision_with_matching": tv_full}
    names = {"ours_from_targets": "ssd_torch.multibox_loss_from_targets",
             "torchvision_from_matches": "torchvision SSD.compute_loss",
             "ours_with_matching": "ssd_torch.MultiBoxLoss", "torchvision_with_matching":
             "torchvision SSDMatcher per image + SSD.compute_loss"}
    out: dict[str, Any] = _run(args, fns, names, sync)
    np_args = (loc.double().cpu().numpy(), conf.double().cpu().numpy(),
               [b.double().cpu().numpy() for b in (boxes[i, :n] for i, n in enumerate(counts.tolist()))],
               [lb.cpu().numpy() for lb in (labels[i, :n] for i, n in enumerate(counts.tolist()))],
               priors.double().cpu().numpy())
    out["reference"] = time_call(lambda: ref_loss.multibox_loss(*np_args), name="reference.loss.multibox_loss",
                                 repeats=args.ref_repeats, warmup=0)
    return out


def _cpu_ratio(slow: Timing, fast: Timing) -> float:
    return slow.cpu_median_s / fast.cpu_median_s if fast.cpu_median_s > 0 else float("inf")


def _rows(results: dict) -> list[list[Any]]:
    """Table rows: task, implementation, median wall / CPU ms, torchvision / ours and reference / ours."""
    rows = []
    for task, res in results.items():
        if "ours" in res:
            pairs = [("ours", "torchvision")] + ([("ours_numba", "torchvision")] if "ours_numba" in res else [])
        else:
            pairs = [("ours_from_targets", "torchvision_from_matches"),
                     ("ours_with_matching", "torchvision_with_matching")]
        for ours_key, tv_key in pairs:
            ours, theirs = res[ours_key], res[tv_key]
            rows.append([task, ours.name, ms(ours), cpu_ms(ours), ratio(theirs, ours), _cpu_ratio(theirs, ours),
                         ratio(res["reference"], ours)])
        for key in dict.fromkeys(tv for _, tv in pairs):
            rows.append([task, res[key].name, ms(res[key]), cpu_ms(res[key]), "", "", ""])
        rows.append([task, res["reference"].name, ms(res["reference"]), cpu_ms(res["reference"]), "", "", ""])
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="timed runs per torch variant (median reported)")
    p.add_argument("--ref-repeats", type=int, default=1, help="timed runs of the NumPy reference")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results file name (default torch_<device>.json)")
    p.add_argument("--no-numba", dest="numba", action="store_false",
                   help="skip the backend='numba' rows (skipped anyway where the kernels cannot run on --device)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.numba = args.numba and numba_usable(torch.device(args.device).type)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    priors = default_boxes(SSD300, device=device)
    tv = _tv_parts()
    tv[0].to(device)
    results = {
        "match_encode_B32": bench_matching(args, tv, priors, sync),
        "postprocess_B8_dense": bench_postprocess(args, tv, priors, sync, background_boost=0.0),
        "postprocess_B8_sparse": bench_postprocess(args, tv, priors, sync, background_boost=8.0),
        "loss_forward_B32": bench_loss(args, tv, priors, sync),
    }
    print(format_table(["task", "implementation", "wall ms", "cpu ms", "tv/this wall", "tv/this cpu",
                        "ref/this wall"],
                       _rows(results)))
    settings = {"repeats": args.repeats, "ref_repeats": args.ref_repeats, "warmup": args.warmup, "numba": args.numba,
                "timing": "torch variants of a task interleaved round-robin; medians of wall and process CPU time",
                "threads": torch.get_num_threads(), "device": str(device), "seed": args.seed}
    path = write_results(args.out or f"torch_{device.type}.json", {"settings": settings, "results": results})
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
