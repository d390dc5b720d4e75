"""Files -> detections: ``ssd_torch.Detector`` in each runtime against torchvision's ``ssd300_vgg16`` with the same
weights, on the same 500x375 JPEGs (issue #21, section 5).

``PYTHONPATH=. python -m benchmarks.bench_inference [--record] [--repeats 5] [--threads 2] [--device cpu]``

* **weights**: a randomly initialised torchvision ``ssd300_vgg16(weights=None, weights_backbone=None)`` (91 COCO
  outputs; its own initialisation, so its exact layout), saved as a ``.pth`` and imported as a user would
  (``ssd_torch.modeling.importers.imported_checkpoint("torchvision", path)``: torchvision's preprocessing,
  variances and post-processing settings, the N/A outputs folded);
* **images**: ``--images`` synthetic scenes of 500x375 written as JPEG (``ssd_torch.data.synthetic.generate_voc``,
  whose trainval images calibrate INT8) in a temporary folder;
* **timed, end to end from the file paths**: ours ``Detector.from_checkpoint(ckpt, runtime=R)(paths)`` (decode,
  resize, network, post-processing, boxes in pixels) for R in torch, onnxruntime, onnxruntime-int8 (the CPU only),
  plus torch with the other ``workers`` choice (a decode/resize thread pool or none: the default is none on the CPU,
  2 threads on CUDA; several images only) and torch with the network
  in the contiguous memory format instead of channels_last, to measure what each choice gives; torchvision
  ``model([decode_jpeg(read_file(p)) / 255 ...])`` (its own decoder, transform, network and
  ``postprocess_detections``). Batch 1 (one file a call) and batch 8 (eight files a call), every variant
  interleaved round-robin (``benchmarks.common.time_interleaved``), medians;
* **post-processing alone** at B=8: ``Predictor.decode`` (``ssd_torch.nms.postprocess``, numba where it runs) vs
  torchvision's ``SSD.postprocess_detections`` on the same network outputs (our ``loc``/``conf`` of the 8 images;
  torchvision's heads have the same prior and class order), at ``--score-threshold`` and at the checkpoint's own
  0.01 (with random weights: 400 candidates in each of the 90 classes, the worst case);
* **detections**: the count per image of every variant at ``--score-threshold`` (random weights pass hundreds
  of thousands of candidates at 0.01 and every image would hit the cap of 200: 0.5 keeps ~100-170); the counts of
  the runtimes must agree with torch's (``counts_agree``); torchvision's are reported beside them (its bilinear
  tensor resize is not PIL's, so a detection at the threshold may differ).

Goals (``benchmarks.goals.inference_goals``, ratios to torchvision in the same run, batch 8): onnxruntime fp32
>= 1.5x, INT8 >= 2.5x, torch >= 1.25x; post-processing alone >= 8x. Writes ``inference_<device>.json``
(``benchmarks.common.default_results_dir``: ``runs/bench/``; ``--record``: ``benchmarks/results/``). On CUDA
(``benchmarks/gpu_suite.sh``) only the torch runtime and torchvision run, at batch 1 and 32 (NMS included).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from benchmarks.common import RECORD_ENV, Timing, cpu_ms, format_table, ms, ratio, time_interleaved, write_results

CPU_RUNTIMES = ("torch", "onnxruntime", "onnxruntime-int8")
#: the counts of torchvision run on our resized pixels (its own resize differs: bilinear without antialiasing)
SAME_PIXELS = "torchvision on our pixels"
#: the checkpoint's own threshold (torchvision's 0.01): random weights make every class a candidate, the worst case
POSTPROCESS_DENSE_THRESHOLD = 0.01


def make_data(folder: Path, images: int, calibration: int, seed: int = 0) -> tuple[Path, list[Path]]:
    """``(VOC folder, the test JPEG paths)``: ``calibration`` trainval + ``images`` test scenes of 500x375."""
    from ssd_torch.data.synthetic import generate_voc

    voc = generate_voc(folder / "VOC", calibration, images, seed=seed, image_size=(500, 375))
    ids = (voc / "ImageSets" / "Main" / "test.txt").read_text().split()
    return voc, [voc / "JPEGImages" / f"{i}.jpg" for i in ids]


def make_weights(folder: Path, seed: int = 0) -> tuple[Any, Path]:
    """``(torchvision model in eval mode, our imported checkpoint file)`` with the same random weights."""
    from torchvision.models.detection import ssd300_vgg16

    from ssd_torch.checkpoint import atomic_save
    from ssd_torch.modeling.importers import imported_checkpoint

    torch.manual_seed(seed)
    model = ssd300_vgg16(weights=None, weights_backbone=None).eval()
    peer = folder / "torchvision_ssd300_random.pth"
    torch.save(model.state_dict(), peer)
    ckpt, _ = imported_checkpoint("torchvision", peer)
    return model, atomic_save(ckpt, folder / "imported.pt")


def torchvision_fn(model: Any, paths: Sequence[Path], device: torch.device) -> Callable[[], list]:
    """Files -> torchvision detections: its JPEG decoder, then ``model(list of images)``."""
    from torchvision.io import decode_jpeg, read_file

    def run() -> list:
        images = [decode_jpeg(read_file(str(p))).to(device).float() / 255.0 for p in paths]
        with torch.inference_mode():
            return model(images)

    return run


def detectors(ckpt: Path, runtimes: Sequence[str], voc: Path, cache: Path, threshold: float, device: str,
              calibration: int) -> dict[str, Any]:
    """One ``Detector`` per variant (graphs exported into ``cache`` first, outside the timing)."""
    from ssd_torch import Detector
    from ssd_torch.deploy.quantize import Calibration

    out = {}
    for runtime in runtimes:
        cal = Calibration(voc, calibration) if runtime == "onnxruntime-int8" else None
        out[runtime] = Detector.from_checkpoint(ckpt, device, runtime=runtime, cache_dir=cache, calibration_data=cal,
                                                score_threshold=threshold)
    if "torch" in runtimes:
        other = 0 if out["torch"].workers else 2  # the default's alternative: overlap or not
        out[f"torch workers={other}"] = Detector.from_checkpoint(ckpt, device, runtime="torch", workers=other,
                                                                 score_threshold=threshold)
        plain = out["torch contiguous"] = Detector.from_checkpoint(ckpt, device, score_threshold=threshold)
        plain.predictor.model.to(memory_format=torch.contiguous_format)  # the memory format channels_last replaced
        plain.predictor.channels_last = False
    return out


def end_to_end(dets: dict[str, Any], tv: Any, paths: Sequence[Path], batch: int, device: torch.device,
               repeats: int, threshold: float) -> dict[str, Any]:
    """Interleaved timings of every variant on ``paths[:batch]``, and each variant's detection counts (from its
    last timed call). The ``workers`` alternative only where there is something to overlap (several images)."""
    chunk = list(paths[:batch])
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    last: dict[str, Any] = {}

    def keep(name: str, fn: Callable[[], Any]) -> Callable[[], None]:
        return lambda: last.__setitem__(name, fn())

    variants = {k: d for k, d in dets.items() if batch > 1 or "workers" not in k}
    fns = {name: keep(name, lambda d=d: d(chunk)) for name, d in variants.items()}
    fns["torchvision"] = keep("torchvision", torchvision_fn(tv, chunk, device))
    for d in variants.values():
        d.batch_size = batch
    timings = time_interleaved(fns, repeats=repeats, warmup=1, sync=sync)
    counts = {name: [len(r) for r in last[name]] for name in variants}
    counts["torchvision"] = [int((o["scores"] > threshold).sum()) for o in last["torchvision"]]
    counts[SAME_PIXELS] = [int((o["scores"] > threshold).sum()) for o in torchvision_on_our_pixels(tv, chunk, device)]
    return {"timings": timings, "counts": counts}


def torchvision_on_our_pixels(tv: Any, paths: Sequence[Path], device: torch.device) -> list:
    """torchvision's detections on the very pixels our network sees (read and resized to 300x300 as
    ``Predictor.prepare`` does, ``ssd_torch.deploy.quantize.pixel_transform``; its own resize is then the
    identity): the check that both sides hold the same weights and decode alike (untimed)."""
    from ssd_torch.data.images import read_image
    from ssd_torch.deploy.quantize import pixel_transform

    resize = pixel_transform(300, "float32")
    images = [resize(read_image(p).image, None, None)[0].to(device) / 255.0 for p in paths]
    with torch.inference_mode():
        return tv(images)


def postprocess_alone(det: Any, tv: Any, paths: Sequence[Path], repeats: int,
                      thresholds: Sequence[float]) -> dict[str, dict[str, Timing]]:
    """B=8 post-processing on the same network outputs, ours (``Predictor.decode``) vs torchvision's, at each
    score threshold (torchvision's own ``score_thresh`` set alike)."""
    from ssd_torch.boxes import cxcywh_to_xyxy
    from ssd_torch.data.images import read_image

    pred = det.predictor
    batch = torch.stack([pred.prepare(read_image(p).image) for p in paths[:8]])
    loc, conf = det.network(batch)
    head = {"bbox_regression": loc.to(pred.device), "cls_logits": conf.to(pred.device)}
    anchors = [cxcywh_to_xyxy(pred.priors) * 300.0] * len(batch)
    sync = torch.cuda.synchronize if pred.device.type == "cuda" else None
    out = {}
    for t in thresholds:
        def theirs(t: float = t) -> Any:
            tv.score_thresh = t
            return tv.postprocess_detections(head, anchors, [(300, 300)] * len(batch))

        fns = {"ours": lambda t=t: pred.decode(loc, conf, score_threshold=t), "torchvision": theirs}
        out[f"score_threshold={t:g}"] = time_interleaved(
            fns, repeats=repeats, warmup=1, sync=sync,
            names={"ours": f"Predictor.decode (backend {pred.backend}), threshold {t:g}",
                   "torchvision": f"SSD.postprocess_detections, threshold {t:g}"})
    return out


def load() -> Optional[str]:
    """``uptime``'s load averages (other work on the machine skews the timings)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return None


def _rows(results: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for case, res in results["end_to_end"].items():
        tv = res["timings"]["torchvision"]
        for name, t in res["timings"].items():
            rows.append([case, name, ms(t), cpu_ms(t), ratio(tv, t), res["counts"][name]])
        rows.append([case, f"{SAME_PIXELS} (untimed)", "", "", "", res["counts"][SAME_PIXELS]])
    for case in (results.get("postprocess_B8") or {}).values():
        for t in case.values():
            rows.append(["post-processing B=8", t.name, ms(t), cpu_ms(t), ratio(case["torchvision"], t), ""])
    return rows


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="timed interleaved rounds (median reported)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (onnxruntime follows it)")
    p.add_argument("--device", default="cpu", help="cpu (every runtime) or cuda (torch runtime and torchvision)")
    p.add_argument("--images", type=int, default=8, help="test JPEGs (batch 8 uses 8 of them)")
    p.add_argument("--calibration-images", type=int, default=16, help="INT8 calibration images")
    p.add_argument("--score-threshold", type=float, default=0.5,
                   help="the detectors' score threshold (random weights pass hundreds of thousands of candidates at "
                        "the checkpoint's 0.01: 0.5 keeps ~100-170 detections per image, under the cap of 200)")
    p.add_argument("--runtimes", default=None, help="comma-separated (default: every runtime on the CPU, torch on "
                   "CUDA)")
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default: 1,8 on the CPU, 1,32 on "
                   "CUDA)")
    p.add_argument("--record", action="store_true", help="write into benchmarks/results/ (the committed figures)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks.common's)")
    return p.parse_args(argv)


def _plan(args: argparse.Namespace) -> tuple[torch.device, tuple[str, ...], tuple[int, ...]]:
    """``(device, runtimes, batches)``: every runtime at 1 and 8 on the CPU; the torch runtime at 1 and 32 on CUDA
    (onnxruntime runs on the CPU only), unless ``--runtimes`` / ``--batches`` say otherwise."""
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    runtimes = tuple(args.runtimes.split(",")) if args.runtimes else (CPU_RUNTIMES if cpu else ("torch",))
    batches = tuple(int(b) for b in args.batches.split(",")) if args.batches else ((1, 8) if cpu else (1, 32))
    return device, runtimes, batches


def run(args: argparse.Namespace) -> dict[str, Any]:
    device, runtimes, batches = _plan(args)
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        folder = Path(tmp)
        voc, paths = make_data(folder, max(args.images, *batches), args.calibration_images)
        tv, ckpt = make_weights(folder)
        tv.to(device)
        dets = detectors(ckpt, runtimes, voc, folder / "onnx-cache", args.score_threshold, str(device),
                         args.calibration_images)
        results: dict[str, Any] = {"end_to_end": {}}
        for b in batches:
            tv.score_thresh = args.score_threshold  # torchvision's own post-processing setting, as ours
            print(f"timing batch {b} ...", flush=True)
            results["end_to_end"][f"B={b}"] = end_to_end(dets, tv, paths, b, device, args.repeats,
                                                          args.score_threshold)
        if "torch" in dets and 8 in batches:
            thresholds = sorted({args.score_threshold, POSTPROCESS_DENSE_THRESHOLD})
            results["postprocess_B8"] = postprocess_alone(dets["torch"], tv, paths, args.repeats, thresholds)
    for res in results["end_to_end"].values():
        want = res["counts"].get("torch")
        res["counts_agree"] = {name: c == want for name, c in res["counts"].items()}
    return results


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.record:
        os.environ[RECORD_ENV] = "1"
    torch.set_num_threads(args.threads)
    before = load()
    results = run(args)
    print(format_table(["case", "variant", "wall ms", "cpu ms", "tv/this", "detections per image"], _rows(results)))
    from benchmarks.goals import inference_goals

    goals = inference_goals({"results": results})
    for goal in goals:
        print(f"  {goal.name:28s} {goal.verdict:12s} {goal.measured or '-'}   [target {goal.target}]")
    device, runtimes, batches = _plan(args)
    settings = {"device": args.device, "runtimes": list(runtimes), "batches": list(batches),
                "threads": torch.get_num_threads(), "repeats": args.repeats, "warmup": 1,
                "images": "synthetic scenes 500x375, JPEG quality 90 (ssd_torch.data.synthetic.generate_voc)",
                "weights": "torchvision ssd300_vgg16 random init (91 outputs), imported with "
                           "imported_checkpoint('torchvision')",
                "score_threshold": args.score_threshold, "calibration_images": args.calibration_images,
                "timing": "every variant interleaved round-robin; medians of wall and process CPU time",
                "load_before": before, "load_after": load()}
    path = write_results(f"inference_{torch.device(args.device).type}.json",
                         {"settings": settings, "results": results,
                          "goals": [{**g.__dict__, "verdict": g.verdict} for g in goals]}, results_dir=args.out)
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
