"""``ssd-eval CHECKPOINT --data ROOT --split test``: VOC07 mAP of a checkpoint on a VOC split.

Batched inference (``ssd_torch.evaluation.evaluate.run_inference``, backend ``torch`` / ``numba`` / ``auto``,
progress bar),
scored with the fast devkit-exact evaluator (``ssd_torch.voc_eval``): the 11-point AP by default, ``--metric
area`` for the all-point AP. Prints the per-class AP table and writes ``results_<metric>.json`` into ``--out``.

The detections are cached in ``--out`` as ``detections-<key>.npz``, where ``key`` hashes the checkpoint's
bytes, the data roots, the split and every inference setting (backend, device type, batch size and the
post-processing parameters) — not the metric: re-scoring with ``--metric area`` or ``--coco`` reads the cache
instead of re-running the model. ``--coco`` adds COCO-style AP (pycocotools, an optional extra; difficult
boxes become ``iscrowd`` regions, i.e. ignored, as in the VOC rules).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np

from ssd_torch.cli import UserError, add_trust_flag, resolve_device, run_cli
from ssd_torch.files import file_sha256

__all__ = ["inference_settings", "cache_key", "save_detections", "load_detections", "coco_metrics",
           "evaluate_checkpoint", "main"]

Detections = dict[Hashable, tuple[np.ndarray, np.ndarray, np.ndarray]]
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
                   "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def inference_settings(backend: str, device: str, batch_size: int, score_threshold: float = 0.01,
                      top_k: int = 400, nms_threshold: float = 0.45, max_detections: int = 200) -> dict[str, Any]:
    """The settings that change the detections (and so enter the cache key), as a plain dict."""
    return {"backend": backend, "device": device, "batch_size": int(batch_size),
            "score_threshold": float(score_threshold), "top_k": int(top_k), "nms_threshold": float(nms_threshold),
            "max_detections": int(max_detections)}


def cache_key(checkpoint: Path, roots: Sequence[Path], split: str, settings: Mapping[str, Any]) -> str:
    """16 hex digits of sha256 over (checkpoint bytes, resolved roots, split, inference settings)."""
    payload = {"checkpoint_sha256": file_sha256(checkpoint), "roots": [str(Path(r).resolve()) for r in roots],
               "split": split, "settings": dict(settings)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def save_detections(path: Path, detections: Detections) -> Path:
    """Write ``{image_id: (boxes[D,4] pixels, scores[D], labels[D])}`` as one ``.npz`` (no pickle), atomically."""
    ids = list(detections)
    parts = [detections[i] for i in ids]
    arrays = {"image_ids": np.array([str(i) for i in ids], dtype=str),
              "counts": np.array([len(p[1]) for p in parts], dtype=np.int64),
              "boxes": np.concatenate([np.asarray(p[0], np.float64).reshape(-1, 4) for p in parts]) if parts
              else np.zeros((0, 4)),
              "scores": np.concatenate([np.asarray(p[1], np.float64) for p in parts]) if parts else np.zeros(0),
              "labels": np.concatenate([np.asarray(p[2], np.int64) for p in parts]) if parts
              else np.zeros(0, np.int64)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path


def load_detections(path: Path) -> Detections:
    """Inverse of :func:`save_detections` (image ids come back as ``str``)."""
    with np.load(path, allow_pickle=False) as z:
        ids, counts = z["image_ids"].tolist(), z["counts"]
        boxes, scores, labels = z["boxes"], z["scores"], z["labels"]
    ends = np.cumsum(counts)
    starts = ends - counts
    return {i: (boxes[s:e], scores[s:e], labels[s:e]) for i, s, e in zip(ids, starts, ends)}


def _require_pycocotools() -> None:
    try:
        import pycocotools.cocoeval  # noqa: F401
    except ImportError as e:
        raise UserError("--coco needs pycocotools, which is not installed (pip install pycocotools, or the "
                        "project's 'coco' extra)") from e


def _voc_to_coco_box(box: np.ndarray) -> list[float]:
    """VOC pixels (1-based inclusive xyxy) -> COCO ``[x, y, w, h]`` (0-based continuous)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0 - 1.0, y0 - 1.0, x1 - x0 + 1.0, y1 - y0 + 1.0]


def coco_metrics(detections: Detections, ground_truth: Mapping[Hashable, tuple], num_classes: int,
                 sizes: Mapping[Hashable, tuple[int, int]]) -> dict[str, float]:
    """COCO-style AP/AR (pycocotools ``COCOeval``, bbox) of VOC-format detections and ground truth.

    ``sizes``: ``{image_id: (width, height)}``. Difficult gt boxes are ``iscrowd`` (a detection on them is
    neither TP nor FP, close to the VOC rule).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    index = {image_id: k + 1 for k, image_id in enumerate(ground_truth)}
    images = [{"id": index[i], "width": int(sizes[i][0]), "height": int(sizes[i][1])} for i in ground_truth]
    annotations = []
    for image_id, (boxes, labels, difficult) in ground_truth.items():
        for box, label, hard in zip(np.asarray(boxes).reshape(-1, 4), labels, difficult):
            xywh = _voc_to_coco_box(box)
            annotations.append({"id": len(annotations) + 1, "image_id": index[image_id], "category_id": int(label),
                                "bbox": xywh, "area": xywh[2] * xywh[3], "iscrowd": int(bool(hard))})
    results = [{"image_id": index[image_id], "category_id": int(label), "bbox": _voc_to_coco_box(box),
                "score": float(score)}
               for image_id, (boxes, scores, labels) in detections.items()
               for box, score, label in zip(np.asarray(boxes).reshape(-1, 4), scores, labels)]
    if not results:
        return {name: 0.0 for name in COCO_STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its own progress and table
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": c, "name": str(c)} for c in range(1, num_classes)]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(COCO_STAT_NAMES, evaluator.stats)}


def _open_dataset(roots: Sequence[Path], split: str, class_names: Sequence[str], cfg: Any) -> Any:
    """``VOCDataset`` with the checkpoint's classes and input convention (``cfg``: its ``ModelConfig``); a
    missing split file or an unknown class is a UserError."""
    from ssd_torch.data.transforms import SSDEvalTransform
    from ssd_torch.data.voc import DatasetError, VOCDataset

    for root in roots:
        if not Path(root).is_dir():
            raise UserError(f"data root {root} does not exist (expected a VOC year folder, e.g. "
                            f"VOCdevkit/VOC2007)")
    try:
        return VOCDataset([Path(r) for r in roots], split, class_names=tuple(class_names),
                          transform=SSDEvalTransform(cfg.image_size, preprocess=cfg.preprocess))
    except DatasetError as e:
        hint = f" (the checkpoint's classes are {list(class_names)})" if "class" in str(e) else ""
        raise UserError(f"{e}{hint}") from e


def _detections(model: Any, cfg: Any, dataset: Any, settings: dict[str, Any], cache: Path,
                device: Any, progress: bool) -> tuple[Detections, bool, float]:
    """Cached detections when ``cache`` exists and covers the dataset, else run the model (and write it)."""
    from ssd_torch.evaluation.evaluate import run_inference
    from ssd_torch.priors import default_boxes

    if cache.is_file():
        dets = load_detections(cache)
        if set(dets) == set(dataset.image_ids):
            return dets, True, 0.0
    start = time.perf_counter()
    post = {k: settings[k] for k in ("score_threshold", "top_k", "nms_threshold", "max_detections")}
    try:
        dets = run_inference(model, dataset, default_boxes(cfg.prior_spec), settings["batch_size"], device,
                             settings["backend"], progress=progress, **post)
    except ValueError as e:  # e.g. DatasetError: an image that cannot be decoded (the message names the file)
        raise UserError(str(e)) from e
    seconds = time.perf_counter() - start
    save_detections(cache, dets)
    return dets, False, seconds


def evaluate_checkpoint(checkpoint: Path, roots: Sequence[Path], split: str, out_dir: Path, *,
                        backend: str = "torch", device: str = "auto", batch_size: int = 32,
                        use_07_metric: bool = True, coco: bool = False, progress: bool = True,
                        trust_checkpoint: bool = False) -> dict[str, Any]:
    """Inference (or the cache) + VOC scoring; returns the results dict that ``results_<metric>.json`` holds."""
    from ssd_torch.evaluation.evaluate import ground_truth_of
    from ssd_torch.inference import load_model_for_inference
    from ssd_torch.voc_eval import evaluate_voc

    if coco:
        _require_pycocotools()
    dev = resolve_device(device)
    model, cfg, names = load_model_for_inference(checkpoint, dev, trust_checkpoint=trust_checkpoint)
    dataset = _open_dataset(roots, split, names[1:], cfg)
    settings = inference_settings(backend, dev.type, batch_size)
    cache = out_dir / f"detections-{cache_key(checkpoint, roots, split, settings)}.npz"
    dets, cached, seconds = _detections(model, cfg, dataset, settings, cache, dev, progress)
    gt = ground_truth_of(dataset)
    result = evaluate_voc(dets, gt, len(names), use_07_metric=use_07_metric, class_names=names)
    out = {"checkpoint": str(checkpoint), "data": [str(r) for r in roots], "split": split,
           "metric": "voc07_11point" if use_07_metric else "area", "iou_threshold": 0.5, "mAP": result.mAP,
           "ap": {names[c]: (None if np.isnan(v) else v) for c, v in result.ap.items()},
           "npos": {names[c]: n for c, n in result.npos.items()}, "num_images": len(dataset),
           "num_detections": int(sum(len(d[1]) for d in dets.values())), "settings": settings,
           "detections_cache": str(cache), "from_cache": cached, "inference_seconds": seconds}
    if coco:
        sizes = {a.image_id: (a.width, a.height) for a in map(dataset.annotation, range(len(dataset)))}
        out["coco"] = coco_metrics(dets, gt, len(names), sizes)
    out["_result"] = result
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssd-eval", description="VOC07 mAP of an SSD300 checkpoint on a VOC split.")
    p.add_argument("checkpoint", type=Path, help="checkpoint file written by ssd-train")
    p.add_argument("--data", type=Path, nargs="+", required=True, metavar="ROOT",
                   help="VOC year folder(s), e.g. data/VOCdevkit/VOC2007")
    p.add_argument("--split", default="test", help="ImageSets/Main split (default: %(default)s)")
    p.add_argument("--backend", choices=("torch", "numba", "auto"), default="torch", help="NMS backend")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: %(default)s)")
    p.add_argument("--metric", choices=("07", "area"), default="07",
                   help="07: VOC2007 11-point AP (default); area: all-point AP (VOC2010+)")
    p.add_argument("--out", type=Path, default=None,
                   help="results + detection cache folder (default: eval_<split> next to the checkpoint)")
    p.add_argument("--coco", action="store_true", help="also COCO-style AP (needs pycocotools)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_trust_flag(p)
    return p


def _print_results(out: dict[str, Any], names: Sequence[str]) -> None:
    from ssd_torch.evaluation.evaluate import format_ap_table

    source = "cached detections" if out["from_cache"] else f"inference {out['inference_seconds']:.1f} s"
    print(f"{out['split']}: {out['num_images']} images, {out['num_detections']} detections ({source}), "
          f"metric {out['metric']}")
    print(format_ap_table(out["_result"], list(names)))
    if "coco" in out:
        print("COCO: " + "  ".join(f"{k} {v:.4f}" for k, v in out["coco"].items()))


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    out_dir = args.out if args.out is not None else args.checkpoint.parent / f"eval_{args.split}"
    out = evaluate_checkpoint(args.checkpoint, args.data, args.split, out_dir, backend=args.backend,
                              device=args.device, batch_size=args.batch_size, use_07_metric=args.metric == "07",
                              coco=args.coco, progress=not args.no_progress,
                              trust_checkpoint=args.trust_checkpoint)
    _print_results(out, out["_result"].class_names)
    path = out_dir / f"results_{'voc07' if args.metric == '07' else 'area'}.json"
    path.write_text(json.dumps({k: v for k, v in out.items() if k != "_result"}, indent=2) + "\n")
    print(f"results: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, "ssd-eval")


if __name__ == "__main__":
    raise SystemExit(main())
