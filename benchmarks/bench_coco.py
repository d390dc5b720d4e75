"""COCO reader and COCO evaluation on a file the size of COCO 2017 val (5,000 images, ~36,800 boxes).

``python -m benchmarks.bench_coco [--images 5000] [--scan-images 500] [--dets 100]`` generates, in a temporary
folder, an instances JSON shaped like ``instances_val2017.json``: COCO's 80 non-contiguous category ids, ~7.4
boxes per image, ~1% images without annotations, ~1% crowd regions with RLE masks, polygons on the rest (so the
file is of the real one's order of size). It reports median wall times of:

- **load**: ``CocoDataset(..., check_images=False)`` from a cold parse cache (JSON parse + validation + index),
  next to two baselines timed interleaved in the same run: ``json.load`` of the file alone (the floor) and
  pycocotools' ``COCO(path)`` (what other pipelines construct first);
- **scan**: the per-image cost of the construction-time image check on a real tree of ``--scan-images`` JPEGs
  (640x480): the cheap check (``check_images=True``) and the full decode (``verify_images=True``), each minus
  the JSON-only construction of the same file;
- **evaluation** of ``--dets`` generated detections per image: mapping them to the file's ids
  (``coco_results``), the ground truth (``coco_ground_truth``), pycocotools' ``COCOeval``
  (``run_cocoeval``: evaluate + accumulate + summarize) and, for comparison, the fast VOC07 scorer on the same
  detections.

JSON goes to ``coco_cpu.json`` in the results folder (``benchmarks.common.default_results_dir``: ``runs/bench/``,
``benchmarks/results/`` when recording) (with the machine; the medians say nothing about an idle one if the machine
was shared, which the ``note`` field records).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from benchmarks.common import format_table, ratio, time_call, time_interleaved, write_results
from ssd_torch.data.coco import CocoDataset, clear_file_cache

#: COCO 2017's 80 category ids (1..90 with gaps).
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
SIZES = ((640, 480), (480, 640), (640, 427), (500, 375), (612, 612))


def _polygon(rng: np.random.Generator, box: np.ndarray) -> list[list[float]]:
    n = int(rng.integers(10, 30))  # points; COCO val polygons: tens of points
    x = box[0] + rng.random(n) * box[2]
    y = box[1] + rng.random(n) * box[3]
    return [np.round(np.stack([x, y], axis=1).reshape(-1), 2).tolist()]


def _annotations(rng: np.random.Generator, image_id: int, size: tuple[int, int], first_id: int) -> list[dict]:
    n = 0 if rng.random() < 0.01 else int(rng.poisson(7.36))
    w, h = size
    out = []
    for k in range(n):
        bw, bh = rng.uniform(4, w * 0.8), rng.uniform(4, h * 0.8)
        box = np.round([rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh], 2)
        crowd = rng.random() < 0.01
        seg: Any = {"counts": rng.integers(1, 200, 60).tolist(), "size": [h, w]} if crowd else _polygon(rng, box)
        out.append({"segmentation": seg, "area": round(float(box[2] * box[3] * 0.6), 2), "iscrowd": int(crowd),
                    "image_id": image_id, "bbox": box.tolist(), "category_id": int(rng.choice(COCO_CATEGORY_IDS)),
                    "id": first_id + k})
    return out


def make_instances(num_images: int, seed: int = 0) -> dict:
    """An instances dict like COCO 2017 val (see the module docstring)."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(np.arange(1, 600000), size=num_images, replace=False)
    images, annotations = [], []
    for image_id in ids.tolist():
        w, h = SIZES[int(rng.integers(len(SIZES)))]
        images.append({"license": 1, "file_name": f"{image_id:012d}.jpg", "coco_url": "", "height": h, "width": w,
                       "date_captured": "2013-11-14 17:02:52", "flickr_url": "", "id": image_id})
        annotations += _annotations(rng, image_id, (w, h), first_id=len(annotations) + 1)
    categories = [{"supercategory": "thing", "id": c, "name": f"class{c}"} for c in COCO_CATEGORY_IDS]
    return {"info": {"description": "generated like COCO 2017 val"}, "licenses": [], "images": images,
            "annotations": annotations, "categories": categories}


def _write_images(folder: Path, doc: dict, count: int) -> dict:
    """JPEGs for the first ``count`` images of ``doc``; returns the instances dict of those images."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    images = doc["images"][:count]
    for im in images:
        noise = rng.integers(0, 256, (im["height"] // 8, im["width"] // 8, 3), dtype=np.uint8)
        Image.fromarray(noise).resize((im["width"], im["height"])).save(folder / im["file_name"], quality=90)
    keep = {im["id"] for im in images}
    return {**doc, "images": images, "annotations": [a for a in doc["annotations"] if a["image_id"] in keep]}


def _detections(ds: CocoDataset, per_image: int, seed: int = 0) -> dict:
    """``per_image`` detections per image (VOC pixels): jittered gt boxes (70% right class) and random boxes."""
    rng = np.random.default_rng(seed)
    classes = len(ds.class_names)
    out = {}
    for i in range(len(ds)):
        ann = ds.annotation(i)
        g = len(ann.labels)
        near = min(g * 4, per_image // 2) if g else 0
        pick = rng.integers(0, max(g, 1), near)
        boxes = ann.boxes[pick] + rng.normal(0, 8, (near, 4)) if g else np.zeros((0, 4))
        labels = np.where(rng.random(near) < 0.7, ann.labels[pick] if g else 1, rng.integers(1, classes + 1, near))
        xy = rng.uniform(1, [ann.width, ann.height], (per_image - near, 2))
        far = np.concatenate([xy, xy + rng.uniform(4, 200, (per_image - near, 2))], axis=1)
        out[ann.image_id] = (np.concatenate([boxes, far]), rng.random(per_image),
                             np.concatenate([labels, rng.integers(1, classes + 1, per_image - near)]))
    return out


def bench_load(path: Path, repeats: int) -> dict[str, Any]:
    import contextlib
    import io

    from pycocotools.coco import COCO

    def ours() -> CocoDataset:
        clear_file_cache()
        return CocoDataset(path.parent, path, check_images=False)

    def pycocotools_coco() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            COCO(str(path))

    def json_only() -> None:
        with open(path, "rb") as fh:
            json.load(fh)

    t = time_interleaved({"ours": ours, "json": json_only, "pycocotools": pycocotools_coco},
                         names={"ours": "CocoDataset (parse + index)", "json": "json.load only",
                                "pycocotools": "pycocotools COCO(path)"}, repeats=repeats, warmup=1)
    return {"timings": t, "ours_over_json_load": ratio(t["ours"], t["json"]),
            "pycocotools_over_ours": ratio(t["pycocotools"], t["ours"])}


def bench_scan(tmp: Path, doc: dict, count: int, repeats: int) -> dict[str, Any]:
    small = _write_images(tmp / "scan_images", doc, count)
    path = tmp / "scan.json"
    path.write_text(json.dumps(small))
    folder = tmp / "scan_images"
    variants = {"json": dict(check_images=False), "cheap": dict(check_images=True),
                "decode": dict(check_images=True, verify_images=True)}
    t = time_interleaved({k: (lambda kw=kw: CocoDataset(folder, path, **kw)) for k, kw in variants.items()},
                         names={"json": f"no image check, {count} img", "cheap": f"cheap check, {count} img",
                                "decode": f"full decode, {count} img"}, repeats=repeats, warmup=1)
    per_image = {k: (t[k].median_s - t["json"].median_s) / count * 1e3 for k in ("cheap", "decode")}
    return {"images": count, "image_size": "640x480 JPEG", "timings": t, "ms_per_image": per_image}


def bench_eval(ds: CocoDataset, per_image: int, repeats: int) -> dict[str, Any]:
    from ssd_torch.evaluation.coco_eval import coco_ground_truth, coco_results, run_cocoeval
    from ssd_torch.evaluation.evaluate import evaluate_detections

    dets = _detections(ds, per_image)
    results, gt = coco_results(ds, dets), coco_ground_truth(ds)
    scored: list = []
    t = {"results": time_call(lambda: coco_results(ds, dets), name="coco_results (map to file ids)",
                              repeats=repeats, warmup=0),
         "ground_truth": time_call(lambda: coco_ground_truth(ds), name="coco_ground_truth", repeats=repeats,
                                   warmup=0),
         "cocoeval": time_call(lambda: scored.append(run_cocoeval(gt, results)),
                               name="pycocotools COCOeval (run_cocoeval)", repeats=repeats, warmup=0),
         "voc07": time_call(lambda: evaluate_detections(ds, dets), name="fast VOC07 on the same detections",
                            repeats=repeats, warmup=0)}
    return {"detections": len(results), "timings": t, "stats": scored[-1].stats,
            "cocoeval_over_voc07": ratio(t["cocoeval"], t["voc07"])}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--scan-images", type=int, default=500)
    p.add_argument("--dets", type=int, default=100, help="detections per image in the evaluation timing")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--eval-repeats", type=int, default=3)
    p.add_argument("--note", default="", help="free text stored with the results (e.g. that the machine was shared)")
    args = p.parse_args(argv)
    doc = make_instances(args.images)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "instances.json"
        path.write_text(json.dumps(doc))
        payload: dict[str, Any] = {"images": len(doc["images"]), "annotations": len(doc["annotations"]),
                                   "file_mb": round(path.stat().st_size / 2**20, 1), "note": args.note}
        payload["load"] = bench_load(path, args.repeats)
        payload["scan"] = bench_scan(tmp, doc, args.scan_images, args.repeats)
        payload["evaluation"] = bench_eval(CocoDataset(tmp, path, check_images=False), args.dets, args.eval_repeats)
    rows = [(t.name, t.median_s) for part in ("load", "scan", "evaluation") for t in payload[part]["timings"].values()]
    print(f"{payload['images']} images, {payload['annotations']} boxes, {payload['file_mb']} MB JSON")
    print(format_table(["step", "median s"], rows))
    print(f"image check per image (ms): {payload['scan']['ms_per_image']}")
    print(f"results: {write_results('coco_cpu.json', payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
