"""``ssd-detect CHECKPOINT IMAGE_OR_FOLDER --out DIR``: draw the detections of a checkpoint on images.

For every image (a file, or every ``.jpg/.jpeg/.png/.bmp`` in a folder, sorted): the eval transform (resize to
300 + the checkpoint's ``ModelConfig.preprocess``), the network, post-processing (docs/CONTRACT.md "NMS and
post-processing"), then the
detections with score >= ``--score-threshold`` drawn on the original image (``<stem>.png`` in ``--out``) and
listed in ``--out/detections.json``: per image its size and, per detection, ``box`` as pixel xyxy in the
image's continuous coordinates (``x = x_norm * width``, 0-based; what PIL draws), the normalised box, the
score and the class name. Runs on CPU or GPU (``--device``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ssd_torch.cli import UserError, add_trust_flag, resolve_device, run_cli

__all__ = ["IMAGE_SUFFIXES", "find_images", "read_image", "detect_images", "main"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def find_images(path: Path) -> list[Path]:
    """``[path]`` for a file, the sorted images of a folder; a missing path or an empty folder is a UserError."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"{path}: no such image or folder")
    images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise UserError(f"{path}: folder holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return images


def read_image(path: Path) -> "PIL.Image.Image":  # noqa: F821 - PIL imported lazily
    """The fully decoded RGB image; anything PIL cannot decode is a UserError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"{path}: cannot read image ({e})") from e


def _detections_of(model: Any, priors: Any, images: list, transform: Any, device: Any, backend: str) -> list:
    """Post-processed ``Detections`` (xyxy normalised) of a list of PIL images, as one batch."""
    import torch

    from ssd_torch.nms import postprocess

    empty = torch.zeros((0, 4))
    batch = torch.stack([transform(img, empty, torch.zeros(0, dtype=torch.int64))[0] for img in images])
    with torch.no_grad():
        loc, conf = model(batch.to(device))
    return postprocess(loc.float(), conf.float(), priors, backend=backend)


def _record(path: Path, size: tuple[int, int], det: Any, names: Sequence[str], threshold: float) -> dict[str, Any]:
    boxes = det.boxes.cpu().numpy().astype(np.float64)
    scores, labels = det.scores.float().cpu().numpy(), det.labels.cpu().numpy()
    keep = scores >= threshold
    scale = np.array([size[0], size[1], size[0], size[1]], dtype=np.float64)
    return {"file": str(path), "width": size[0], "height": size[1],
            "detections": [{"box": (b * scale).round(2).tolist(), "box_normalized": b.round(6).tolist(),
                            "score": round(float(s), 6), "label": int(l), "class": names[int(l)]}
                           for b, s, l in zip(boxes[keep], scores[keep], labels[keep])]}


def detect_images(checkpoint: Path, inputs: Sequence[Path], out_dir: Path, *, score_threshold: float = 0.3,
                  device: str = "auto", backend: str = "torch", batch_size: int = 8,
                  trust_checkpoint: bool = False) -> dict[str, Any]:
    """Run the checkpoint on ``inputs``, write ``<stem>.png`` per image and ``detections.json``; return the JSON."""
    from ssd_torch.data.transforms import SSDEvalTransform
    from ssd_torch.inference import load_model_for_inference
    from ssd_torch.priors import default_boxes
    from ssd_torch.evaluation.visualize import draw_detections

    dev = resolve_device(device)
    model, cfg, names = load_model_for_inference(checkpoint, dev, trust_checkpoint=trust_checkpoint)
    priors = default_boxes(cfg.prior_spec, device=dev)
    transform = SSDEvalTransform(size=cfg.image_size, preprocess=cfg.preprocess)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for start in range(0, len(inputs), batch_size):
        paths = inputs[start:start + batch_size]
        images = [read_image(p) for p in paths]
        for path, img, det in zip(paths, images, _detections_of(model, priors, images, transform, dev, backend)):
            rec = _record(path, img.size, det, names, score_threshold)
            records.append(rec)
            boxes = np.array([d["box"] for d in rec["detections"]]).reshape(-1, 4)
            drawn = draw_detections(img, boxes, np.array([d["score"] for d in rec["detections"]]),
                                    np.array([d["label"] for d in rec["detections"]], dtype=np.int64), names,
                                    score_threshold=score_threshold)
            drawn.save(out_dir / f"{path.stem}.png")
    doc = {"checkpoint": str(checkpoint), "score_threshold": score_threshold, "device": str(dev),
           "box_format": "xyxy pixels, 0-based continuous (x = x_normalized * width)", "images": records}
    (out_dir / "detections.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssd-detect", description="Draw an SSD300 checkpoint's detections on images.")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("images", type=Path, metavar="IMAGE_OR_FOLDER")
    p.add_argument("--out", type=Path, required=True, help="folder for the PNGs and detections.json")
    p.add_argument("--score-threshold", type=float, default=0.3, help="draw / list scores >= this (default 0.3)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: %(default)s)")
    p.add_argument("--backend", choices=("torch", "numba", "auto"), default="torch", help="NMS backend")
    p.add_argument("--batch-size", type=int, default=8)
    add_trust_flag(p)
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if not 0.0 <= args.score_threshold <= 1.0:
        raise UserError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    doc = detect_images(args.checkpoint, find_images(args.images), args.out, score_threshold=args.score_threshold,
                        device=args.device, backend=args.backend, batch_size=args.batch_size,
                       trust_checkpoint=args.trust_checkpoint)
    for rec in doc["images"]:
        print(f"{rec['file']}: {len(rec['detections'])} detections")
    print(f"drawings and detections.json in {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, "ssd-detect")


if __name__ == "__main__":
    raise SystemExit(main())
