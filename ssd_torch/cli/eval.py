"""``ssd-eval CHECKPOINT --data ROOT --split test`` (VOC) or ``--data instances.json --images DIR`` (COCO).

Batched inference (``ssd_torch.evaluation.evaluate.run_inference``, backend ``auto`` (default) / ``torch`` /
``numba``, progress bar), scored with the fast devkit-exact evaluator (``ssd_torch.voc_eval``): the 11-point AP
by default, ``--metric area`` for the all-point AP. Prints the per-class AP table and writes
``results_<metric>.json`` into ``--out``.

COCO data (``--data`` is one ``.json`` instances file, ``--images`` the folder its ``file_name`` entries are
relative to; ``ssd_torch.data.coco.CocoDataset``, categories matched to the checkpoint's classes by name):
the same detections are also scored by pycocotools' ``COCOeval`` (AP@[.5:.95], AP50, AP75, AP/AR by size,
AR1/10/100; ``ssd_torch.evaluation.coco_eval``), written with the file's image and category ids as the
standard results list ``coco_results.json``, and the VOC AP above is reported next to them.

The detections are cached in ``--out`` as ``detections-<key>.npz``, where ``key`` hashes the checkpoint's
bytes, the data roots (COCO: the annotation file, its bytes, and the image folder), the split and every
inference setting (backend, device type, batch size and the post-processing parameters) — not the metric:
re-scoring with ``--metric area`` or ``--coco`` reads the cache instead of re-running the model. ``--coco`` on
VOC data adds COCO-style AP (pycocotools, an optional extra; difficult boxes become ``iscrowd`` regions, i.e.
ignored, as in the VOC rules).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from ssd_torch.cli import UserError, add_data_flags, add_trust_flag, check_data_flags, resolve_device, run_cli
from ssd_torch.data.coco import is_coco_data
from ssd_torch.evaluation.coco_eval import COCO_STAT_NAMES, coco_metrics
from ssd_torch.evaluation.evaluate import DetectionsByImage
from ssd_torch.files import atomic_write, atomic_write_text, file_sha256

__all__ = ["inference_settings", "cache_key", "save_detections", "load_detections", "coco_metrics",
           "COCO_STAT_NAMES", "COCO_RESULTS_NAME", "is_coco_data", "evaluate_checkpoint", "main"]

#: The standard COCO results list of a COCO evaluation, in ``--out``.
COCO_RESULTS_NAME = "coco_results.json"
#: The VOC results file of each ``--metric``, in ``--out``.
RESULTS_NAMES = {"07": "results_voc07.json", "area": "results_area.json"}


def inference_settings(backend: str, device: str, batch_size: int, score_threshold: float = 0.01,
                      top_k: int = 400, nms_threshold: float = 0.45, max_detections: int = 200) -> dict[str, Any]:
    """The settings that change the detections (and so enter the cache key), as a plain dict."""
    return {"backend": backend, "device": device, "batch_size": int(batch_size),
            "score_threshold": float(score_threshold), "top_k": int(top_k), "nms_threshold": float(nms_threshold),
            "max_detections": int(max_detections)}


def cache_key(checkpoint: Path, roots: Sequence[Path], split: Optional[str], settings: Mapping[str, Any],
              data_sha256: Optional[str] = None) -> str:
    """16 hex digits of sha256 over (checkpoint bytes, resolved roots, split, inference settings) and, for COCO
    data, ``data_sha256`` (the annotation file's bytes: image sizes there turn boxes into pixels)."""
    payload = {"checkpoint_sha256": file_sha256(checkpoint), "roots": [str(Path(r).resolve()) for r in roots],
               "split": split, "settings": dict(settings)}
    if data_sha256 is not None:  # absent for VOC: its keys (and caches) stay what they were
        payload["data_sha256"] = data_sha256
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def save_detections(path: Path, detections: DetectionsByImage) -> Path:
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
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def load_detections(path: Path) -> DetectionsByImage:
    """Inverse of :func:`save_detections` (image ids come back as ``str``)."""
    with np.load(path, allow_pickle=False) as z:
        ids, counts = z["image_ids"].tolist(), z["counts"]
        boxes, scores, labels = z["boxes"], z["scores"], z["labels"]
    ends = np.cumsum(counts)
    starts = ends - counts
    return {i: (boxes[s:e], scores[s:e], labels[s:e]) for i, s, e in zip(ids, starts, ends)}


def _require_pycocotools(why: str) -> None:
    try:
        import pycocotools.cocoeval  # noqa: F401
    except ImportError as e:
        raise UserError(f"{why} needs pycocotools, which is not installed (pip install pycocotools, or the "
                        "project's 'coco' extra)") from e


class _Data(NamedTuple):
    """The dataset and what identifies it in the cache key."""

    dataset: Any
    roots: list[Path]
    split: Optional[str]
    data_sha256: Optional[str]
    is_coco: bool


def _open_voc(roots: Sequence[Path], split: str, class_names: Sequence[str], cfg: Any) -> Any:
    """``VOCDataset`` with the checkpoint's classes and input convention (``cfg``: its ``ModelConfig``); a
    missing split file or an unknown class is a UserError."""
    from ssd_torch.data.transforms import SSDEvalTransform
    from ssd_torch.data.voc import DatasetError, VOCDataset

    try:
        return VOCDataset([Path(r) for r in roots], split, class_names=tuple(class_names),
                          transform=SSDEvalTransform(cfg.image_size, preprocess=cfg.preprocess))
    except DatasetError as e:
        raise UserError(f"{e}{_class_hint(e, class_names)}") from e


def _class_hint(err: Exception, class_names: Sequence[str]) -> str:
    return f" (the checkpoint's classes are {list(class_names)})" if "class" in str(err) else ""


def _open_coco(annotation_file: Path, images: Path, class_names: Sequence[str], cfg: Any) -> Any:
    """``CocoDataset`` with the checkpoint's classes (matched by name) and input convention."""
    from ssd_torch.data.coco import CocoDataset
    from ssd_torch.data.transforms import SSDEvalTransform
    from ssd_torch.errors import DatasetError

    try:
        return CocoDataset(images, annotation_file, class_names=tuple(class_names),
                           transform=SSDEvalTransform(cfg.image_size, preprocess=cfg.preprocess))
    except DatasetError as e:
        raise UserError(f"{e}{_class_hint(e, class_names)}") from e


def _open_data(data: Sequence[Path], split: Optional[str], images: Optional[Path], class_names: Sequence[str],
               cfg: Any) -> _Data:
    split = check_data_flags(data, images, split, default_split="test")
    if split is not None:
        return _Data(_open_voc(data, split, class_names, cfg), [Path(r) for r in data], split, None, False)
    assert images is not None  # check_data_flags: COCO data comes with its image folder
    dataset = _open_coco(Path(data[0]), images, class_names, cfg)
    return _Data(dataset, [Path(data[0]), Path(images)], None, file_sha256(Path(data[0])), True)


def _detections(model: Any, cfg: Any, dataset: Any, settings: dict[str, Any], cache: Path,
                device: Any, progress: bool) -> tuple[DetectionsByImage, bool, float]:
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


def _results_key(path: Path) -> Optional[str]:
    """The ``cache_key`` of a results file ssd-eval wrote, else None (missing, unreadable, or not ours)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc.get("cache_key") if isinstance(doc, dict) else None


def check_outputs(out_dir: Path, key: str, overwrite: bool = False) -> None:
    """ssd-eval replaces only its own results of the same evaluation (the same cache ``key``: checkpoint bytes,
    data, split, settings); any other results file in ``out_dir`` is a one-line UserError unless ``overwrite``.
    ``coco_results.json`` (a standard list that carries no key) counts as ours when a results file beside it
    has this key: it is always written after them."""
    if overwrite:
        return
    results = [out_dir / name for name in RESULTS_NAMES.values()]
    ours = any(_results_key(p) == key for p in results)
    foreign = [p for p in results if p.exists() and _results_key(p) != key]
    coco = out_dir / COCO_RESULTS_NAME
    foreign += [coco] if coco.exists() and not ours else []
    if foreign:
        raise UserError(f"{out_dir} holds results of another evaluation ({', '.join(p.name for p in foreign)}); "
                        f"nothing was written: choose another --out, or pass --overwrite to replace them")


def write_outputs(out: dict[str, Any], out_dir: Path, metric: str) -> list[Path]:
    """``results_<metric>.json`` (with the cache key that marks it ours), then, for COCO data, the standard
    ``coco_results.json``; both atomically. Call :func:`check_outputs` first."""
    path = out_dir / RESULTS_NAMES[metric]
    written = [atomic_write_text(path, json.dumps({k: v for k, v in out.items() if not k.startswith("_")},
                                                  indent=2) + "\n")]
    if "_coco_results" in out:
        from ssd_torch.evaluation.coco_eval import write_results_json

        written.append(write_results_json(out_dir / COCO_RESULTS_NAME, out["_coco_results"]))
    return written


def evaluate_checkpoint(checkpoint: Path, roots: Sequence[Path], split: Optional[str], out_dir: Path, *,
                        images: Optional[Path] = None, backend: str = "auto", device: str = "auto",
                        batch_size: int = 32, use_07_metric: bool = True, coco: bool = False, progress: bool = True,
                        trust_checkpoint: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Inference (or the cache) + VOC scoring, + pycocotools on COCO data (``roots`` = one ``.json`` file and
    ``images`` its image folder; ``split`` must then be None); returns the results dict that
    ``results_<metric>.json`` holds (keys starting with ``_`` hold objects for printing and writing). Refuses
    to start when ``out_dir`` holds another evaluation's results (:func:`check_outputs`); writes only the
    detection cache (:func:`write_outputs` writes the results)."""
    from ssd_torch.evaluation.evaluate import ground_truth_of
    from ssd_torch.inference import load_model_for_inference
    from ssd_torch.voc_eval import evaluate_voc

    if coco or is_coco_data(roots):
        _require_pycocotools("COCO evaluation (--coco, or a COCO annotation file as --data)")
    dev = resolve_device(device)
    model, cfg, names = load_model_for_inference(checkpoint, dev, trust_checkpoint=trust_checkpoint)
    data = _open_data(roots, split, images, names[1:], cfg)
    settings = inference_settings(backend, dev.type, batch_size)
    key = cache_key(checkpoint, data.roots, data.split, settings, data.data_sha256)
    check_outputs(out_dir, key, overwrite)
    cache = out_dir / f"detections-{key}.npz"
    dets, cached, seconds = _detections(model, cfg, data.dataset, settings, cache, dev, progress)
    gt = ground_truth_of(data.dataset)
    result = evaluate_voc(dets, gt, len(names), use_07_metric=use_07_metric, class_names=names)
    out = {"checkpoint": str(checkpoint), "data": [str(r) for r in roots], "split": data.split,
           "metric": "voc07_11point" if use_07_metric else "area", "iou_threshold": 0.5, "mAP": result.mAP,
           "ap": {names[c]: (None if np.isnan(v) else v) for c, v in result.ap.items()},
           "npos": {names[c]: n for c, n in result.npos.items()}, "num_images": len(data.dataset),
           "num_detections": int(sum(len(d[1]) for d in dets.values())), "settings": settings,
           "detections_cache": str(cache), "from_cache": cached, "inference_seconds": seconds, "cache_key": key}
    if data.is_coco:
        out.update(_score_coco(data.dataset, dets, out_dir / COCO_RESULTS_NAME))
    elif coco:
        sizes = {a.image_id: (a.width, a.height) for a in map(data.dataset.annotation, range(len(data.dataset)))}
        out["coco"] = coco_metrics(dets, gt, len(names), sizes)
    out["_result"] = result
    return out


def _score_coco(dataset: Any, dets: DetectionsByImage, path: Path) -> dict[str, Any]:
    """pycocotools on COCO data; the detections as the standard results list (file ids), to be written to
    ``path`` by :func:`write_outputs`."""
    from ssd_torch.evaluation.coco_eval import coco_ground_truth, coco_results, run_cocoeval

    results = coco_results(dataset, dets)
    scored = run_cocoeval(coco_ground_truth(dataset), results)
    return {"images": str(dataset.images_dir), "coco": scored.stats, "coco_results": str(path),
            "_coco_results": results,
            "coco_ap": {name: (None if np.isnan(v) else v) for name, v in scored.per_class.items()},
            "_coco": scored}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssd-eval", description="mAP of an SSD300 checkpoint on a VOC split, or COCO "
                                                             "metrics (pycocotools) on a COCO annotation file.")
    p.add_argument("checkpoint", type=Path, help="checkpoint file written by ssd-train")
    add_data_flags(p, required=True, default_split="test",
                   data_help="VOC year folder(s), e.g. data/VOCdevkit/VOC2007; or one COCO instances file, e.g. "
                             "coco/annotations/instances_val2017.json (with --images)")
    p.add_argument("--backend", choices=("torch", "numba", "auto"), default="auto",
                   help="NMS backend (default: %(default)s = numba where it runs, else torch)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: %(default)s)")
    p.add_argument("--metric", choices=("07", "area"), default="07",
                   help="VOC AP: 07 = VOC2007 11-point AP (default); area = all-point AP (VOC2010+)")
    p.add_argument("--out", type=Path, default=None,
                   help="results + detection cache folder (default: eval_<split> or eval_<json name> next to the "
                        "checkpoint)")
    p.add_argument("--coco", action="store_true",
                   help="VOC data: also COCO-style AP (needs pycocotools); COCO data always gets the COCO metrics")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of another evaluation in --out (results_*.json, coco_results.json); "
                        "without it they are kept and nothing is written")
    add_trust_flag(p)
    return p


def _coco_table(out: dict[str, Any], names: Sequence[str]) -> str:
    """Per class: COCO AP@[.5:.95] and the VOC AP of the same detections, with the VOC npos."""
    lines = [f"{'class':>16s}  {'AP@.5:.95':>9s}  {'VOC AP':>7s}  {'npos':>5s}"]
    for name in names[1:]:
        coco, voc = out["coco_ap"].get(name), out["ap"].get(name)
        cells = [("%.4f" % v) if v is not None else "n/a" for v in (coco, voc)]
        lines.append(f"{name:>16s}  {cells[0]:>9s}  {cells[1]:>7s}  {out['npos'].get(name, 0):>5d}")
    return "\n".join(lines)


def _print_results(out: dict[str, Any], names: Sequence[str]) -> None:
    from ssd_torch.evaluation.evaluate import format_ap_table

    source = "cached detections" if out["from_cache"] else f"inference {out['inference_seconds']:.1f} s"
    where = out["split"] if out["split"] is not None else out["data"][0]
    print(f"{where}: {out['num_images']} images, {out['num_detections']} detections ({source}), "
          f"VOC metric {out['metric']}")
    if "_coco" in out:
        print(_coco_table(out, names))
        print(f"{'VOC mAP':>16s}  {out['mAP']:.4f}")
        print("COCO metrics (pycocotools COCOeval, bbox):")
        print(out["_coco"].summary.rstrip())
        print(f"COCO results list: {out['coco_results']}")
        return
    print(format_ap_table(out["_result"], list(names)))
    if "coco" in out:
        print("COCO: " + "  ".join(f"{k} {v:.4f}" for k, v in out["coco"].items()))


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    default_out = f"eval_{args.data[0].stem}" if is_coco_data(args.data) else f"eval_{args.split or 'test'}"
    out_dir = args.out if args.out is not None else args.checkpoint.parent / default_out
    out = evaluate_checkpoint(args.checkpoint, args.data, args.split, out_dir, images=args.images,
                              backend=args.backend, device=args.device, batch_size=args.batch_size,
                              use_07_metric=args.metric == "07", coco=args.coco, progress=not args.no_progress,
                              trust_checkpoint=args.trust_checkpoint, overwrite=args.overwrite)
    _print_results(out, out["_result"].class_names)
    print(f"results: {', '.join(str(p) for p in write_outputs(out, out_dir, args.metric))}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, "ssd-eval")


if __name__ == "__main__":
    raise SystemExit(main())
