"""Evaluate a checkpoint file on a VOC split or a COCO file: ``ssd-eval``'s library (the CLI only parses and
prints).

Inference goes through the checkpoint's ``Predictor`` (the one inference path: its variances and
post-processing settings). Detections are cached in the output folder as ``detections-<key>.npz``; the key
covers everything they depend on: the checkpoint's bytes, the data (each image's and annotation's name, size
and modification time, the parsed annotations, the split), and every inference setting. ``overwrite`` never
reads a cache and replaces every result of the earlier evaluation. Results are scored with the fast
devkit-exact evaluator (``ssd_torch.voc_eval``) and, for COCO data, pycocotools.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from ssd_torch.errors import UserError
from ssd_torch.evaluation.evaluate import DetectionsByImage
from ssd_torch.files import (FolderLock, atomic_write, atomic_write_text, check_output_path, file_sha256,
                             lock_folder)

__all__ = ["RESULTS_NAMES", "COCO_RESULTS_NAME", "cache_key", "data_fingerprint", "save_detections",
           "load_detections", "lock_out_dir", "check_outputs", "write_outputs", "evaluate_checkpoint",
           "default_out_dir"]

#: The standard COCO results list of a COCO evaluation.
COCO_RESULTS_NAME = "coco_results.json"
#: The VOC results file of each metric.
RESULTS_NAMES = {"07": "results_voc07.json", "area": "results_area.json"}
_CACHE_PREFIX, _CACHE_SUFFIX = "detections-", ".npz"


def _stat(path: Path) -> list[Any]:
    try:
        st = path.stat()
    except OSError:
        return [path.name, None, None]
    return [path.name, st.st_size, st.st_mtime_ns]


def data_fingerprint(dataset: Any) -> str:
    """sha256 over what a dataset's detections and scores depend on besides the model: the split's fingerprint
    (``ssd_torch.data.fingerprint.split_fingerprint``: image ids and annotation content) and, per image, its
    file name, size and modification time. Cheap (no pixel is read): regenerating or editing data under the
    same path changes it."""
    from ssd_torch.data.fingerprint import split_fingerprint

    files = [_stat(Path(dataset.image_path(i))) for i in range(len(dataset))]
    return hashlib.sha256(json.dumps([split_fingerprint(dataset), files]).encode()).hexdigest()


def cache_key(checkpoint: Path, data: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """16 hex digits of sha256 over the checkpoint's bytes, the data description (:func:`data_fingerprint`,
    split, files) and the inference settings."""
    payload = {"checkpoint_sha256": file_sha256(checkpoint), "data": dict(data), "settings": dict(settings)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_detections(path: Path, detections: DetectionsByImage) -> Path:
    """Write ``{image_id: (boxes[D,4] pixels, scores[D], labels[D])}`` as one ``.npz`` (no pickle), atomically."""
    ids = list(detections)
    parts = [detections[i] for i in ids]

    def joined(k: int, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        return np.concatenate([np.asarray(p[k], dtype).reshape(shape) for p in parts]) if parts else \
            np.zeros((0, *shape[1:]), dtype)

    arrays = {"image_ids": np.array([str(i) for i in ids], dtype=str),
              "counts": np.array([len(p[1]) for p in parts], dtype=np.int64),
              "boxes": joined(0, np.float64, (-1, 4)), "scores": joined(1, np.float64, (-1,)),
              "labels": joined(2, np.int64, (-1,))}
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def load_detections(path: Path) -> DetectionsByImage:
    """Inverse of :func:`save_detections` (image ids come back as ``str``)."""
    with np.load(path, allow_pickle=False) as z:
        ids, counts = z["image_ids"].tolist(), z["counts"]
        boxes, scores, labels = z["boxes"], z["scores"], z["labels"]
    ends = np.cumsum(counts)
    starts = ends - counts
    return {i: (boxes[s:e], scores[s:e], labels[s:e]) for i, s, e in zip(ids, starts, ends)}


def _results_key(path: Path) -> Optional[str]:
    """The ``cache_key`` of a results file this module wrote, else None (missing, unreadable, or not ours)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return doc.get("cache_key") if isinstance(doc, dict) else None


def _ours(out_dir: Path) -> list[Path]:
    """Our earlier results in ``out_dir``: results files carrying a cache key, the COCO list beside them, and
    detection caches named by a key."""
    results = [out_dir / n for n in RESULTS_NAMES.values() if _results_key(out_dir / n) is not None]
    coco = [out_dir / COCO_RESULTS_NAME] if results and (out_dir / COCO_RESULTS_NAME).is_file() else []
    caches = sorted(p for p in out_dir.glob(f"{_CACHE_PREFIX}*{_CACHE_SUFFIX}") if p.is_file()
                    and len(p.name) == len(_CACHE_PREFIX) + 16 + len(_CACHE_SUFFIX))
    return results + coco + caches


def lock_out_dir(out_dir: Path) -> FolderLock:
    """Create and lock ``out_dir`` for this evaluation (``ssd_torch.files.lock_folder``): a second ssd-eval into
    the same folder is refused while this one runs, naming its PID."""
    return lock_folder(out_dir, "ssd-eval", "--out")


def check_outputs(out_dir: Path, key: str, overwrite: bool = False) -> None:
    """Refuse (one-line UserError) an ``out_dir`` that is a file or lies under one
    (``ssd_torch.files.check_output_path``), and results of ANOTHER evaluation there (unless ``overwrite``);
    results of the same evaluation (same ``key``) are ours to replace. A ``coco_results.json`` counts as ours
    when a results file beside it has this key."""
    check_output_path(out_dir, "--out", folder=True)
    if overwrite or not out_dir.is_dir():
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


class EvalData(NamedTuple):
    """The dataset, how it is described in the cache key and results, and whether it is COCO data."""

    dataset: Any
    description: dict[str, Any]
    is_coco: bool


def _detections(predictor: Any, data: EvalData, batch_size: int, cache: Path, *, reuse: bool,
                progress: bool) -> tuple[DetectionsByImage, bool, float]:
    """Cached detections when ``reuse`` and ``cache`` covers the dataset, else run the predictor (and cache)."""
    from ssd_torch.evaluation.evaluate import run_inference

    if reuse and cache.is_file():
        dets = load_detections(cache)
        if set(dets) == set(map(str, data.dataset.image_ids)) or set(dets) == set(data.dataset.image_ids):
            return dets, True, 0.0
    start = time.perf_counter()
    try:
        dets = run_inference(predictor, data.dataset, batch_size, progress=progress)
    except ValueError as e:  # e.g. DatasetError: an image that cannot be decoded (the message names the file)
        raise UserError(str(e)) from e
    seconds = time.perf_counter() - start
    save_detections(cache, dets)
    return dets, False, seconds


def _remove_earlier(out_dir: Path, keep: Path) -> None:
    """``overwrite``: every earlier result of ours in ``out_dir`` goes (the new cache ``keep`` stays)."""
    for p in _ours(out_dir):
        if p != keep:
            p.unlink(missing_ok=True)


def default_out_dir(checkpoint: Path, data: Sequence[Path], split: Optional[str]) -> Path:
    """``eval_<checkpoint stem>_<split or annotation file stem>`` next to the checkpoint: distinct per
    checkpoint and data, so two evaluations never share a default folder."""
    what = Path(data[0]).stem if split is None else split
    return checkpoint.parent / f"eval_{checkpoint.stem}_{what}"


def evaluate_checkpoint(predictor: Any, checkpoint: Path, data: EvalData, out_dir: Path, *, batch_size: int = 32,
                        use_07_metric: bool = True, coco: bool = False, progress: bool = True,
                        overwrite: bool = False) -> dict[str, Any]:
    """Inference (or the cache) + VOC scoring, + pycocotools on COCO data; returns the results dict that
    ``results_<metric>.json`` holds (keys starting with ``_`` hold objects for printing and writing). Refuses
    to start when ``out_dir`` holds another evaluation's results (:func:`check_outputs`); writes only the
    detection cache (:func:`write_outputs` writes the results)."""
    from ssd_torch.evaluation.coco_eval import coco_metrics
    from ssd_torch.evaluation.evaluate import ground_truth_of
    from ssd_torch.voc_eval import evaluate_voc

    names = list(predictor.categories)
    settings = {**predictor.settings(), "batch_size": int(batch_size)}
    key = cache_key(checkpoint, {**data.description, "fingerprint": data_fingerprint(data.dataset)}, settings)
    check_outputs(out_dir, key, overwrite)
    cache = out_dir / f"{_CACHE_PREFIX}{key}{_CACHE_SUFFIX}"
    dets, cached, seconds = _detections(predictor, data, batch_size, cache, reuse=not overwrite, progress=progress)
    if overwrite:
        _remove_earlier(out_dir, cache)
    gt = ground_truth_of(data.dataset)
    result = evaluate_voc(dets, gt, len(names), use_07_metric=use_07_metric, class_names=names)
    out = {"checkpoint": str(checkpoint), **data.description,
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


def describe_files(paths: Sequence[Path]) -> list[str]:
    """Resolved paths for the results (where the data came from)."""
    return [os.fspath(Path(p).resolve()) for p in paths]
