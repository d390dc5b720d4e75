"""``ssd-detect CHECKPOINT IMAGE_OR_FOLDER --out DIR``: a checkpoint's detections on image files, drawn and listed.

**Inputs**: one file, or the files of a folder in every format PIL reads (``.jpg .png .webp .tif .bmp .gif``
...; sorted by path; ``--recursive`` adds the subfolders, never the ``--out`` folder nor a subfolder that holds
an earlier run's results, recognised by its ``detections.jsonl`` journal). Each file is decoded as a
viewer shows it (``ssd_torch.data.images``: EXIF orientation applied and reported per image, 16-bit images
scaled to 8 bits). A file that cannot be decoded is skipped, counted and listed; a run in which no file can be
read is an error.

**Detection**: :class:`ssd_torch.Detector` with the checkpoint's preprocessing and post-processing settings;
``--nms-threshold`` and ``--max-detections`` replace the checkpoint's, ``--classes`` keeps the best
``max-detections`` of the named classes. Listed and drawn: the detections with score >= ``--score-threshold``.
``--runtime onnxruntime`` / ``onnxruntime-int8`` (``--calibration-data``) run the network in onnxruntime on a
graph exported on first use into ``--onnx-cache`` (``ssd_torch.deploy.runtime``); the post-processing is the same.
Boxes: pixels, xyxy, 0-based continuous coordinates of the displayed image (``x = x_normalized * width``).

**Outputs** in ``--out``:

- ``<input path relative to IMAGE_OR_FOLDER>.png``: the drawing (``a.jpg`` -> ``a.jpg.png``, ``a.png`` ->
  ``a.png.png``, ``sub/b.tif`` -> ``sub/b.tif.png``): unique per input, and names its input;
- ``detections.jsonl``, streamed: a ``"run"`` line (checkpoint, settings), then per batch, as soon as it is done,
  one line per image (``"image"``: file, drawing, size, orientation, detections) or unreadable file
  (``"skipped"``: file, error). An interrupted run keeps everything finished;
- ``detections.json`` when the run completes: every image in input order, the skipped files and the counts.

**Never replacing a user's file**: a run into a folder that already holds a previous run's results is refused
with the way forward: ``--resume`` continues that run (same checkpoint and settings; finished images are not
recomputed), ``--overwrite`` replaces the files ssd-detect wrote there (claimed in its ``detections.jsonl``, the
journal: ``ssd_torch.files.Journal``), or a new ``--out``. A file that ssd-detect did not write is never
replaced, even with ``--overwrite`` (a ``detections.jsonl`` that is not our journal included). One run at a time
per ``--out`` folder (``ssd_torch.files.lock_folder``): a second one is refused, naming the PID of the first.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from ssd_torch.cli import UserError, add_trust_flag, run_cli
from ssd_torch.files import (Journal, atomic_write, atomic_write_text, check_output_path, file_sha256,
                             lock_folder, refuse_existing)

__all__ = ["LOG_NAME", "RESULT_NAME", "LOG_FORMAT", "Item", "journal", "plan_inputs", "read_log", "detect_images",
           "build_parser", "main"]

LOG_NAME, RESULT_NAME = "detections.jsonl", "detections.json"
LOG_FORMAT = "ssd-detect/1"
_INTERRUPTED_EXIT = 130  # the shell's code for a run stopped by Ctrl-C


class Item(NamedTuple):
    """One input file: ``path``, ``relative`` (POSIX path under the input folder: its identity in the log) and
    ``drawing`` (its drawing's path under ``--out``: ``relative + ".png"``)."""

    path: Path
    relative: str
    drawing: str


def journal(out_dir: Path) -> Journal:
    """The run's journal ``detections.jsonl`` in ``out_dir`` (the ownership rule: ``ssd_torch.files.Journal``)."""
    return Journal(out_dir / LOG_NAME, LOG_FORMAT)


def plan_inputs(source: Path, recursive: bool, out_dir: Path) -> list[Item]:
    """The input files (``ssd_torch.data.images.find_images``) with their identities and drawing names; the
    files in a subfolder that holds an earlier run's results (its journal) are not inputs."""
    from ssd_torch.data.images import find_images

    root = source.parent if source.is_file() else source
    results: dict[Path, bool] = {}  # folder -> holds our journal (each folder read once)

    def in_results(path: Path) -> bool:
        below = [d for d in path.parents if d != root and root in d.parents]
        return any(results.setdefault(d, journal(d).header() is not None) for d in below)

    items = []
    for path in find_images(source, recursive=recursive, exclude=out_dir):
        if recursive and in_results(path):
            continue
        relative = path.relative_to(root).as_posix()
        items.append(Item(path, relative, relative + ".png"))
    return items


def read_log(path: Path) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]], set[str]]:
    """``(run header, last record per relative path, every drawing the journal claims)`` of a
    ``detections.jsonl``; a line torn by an interruption is ignored; ``(None, {}, set())`` when ``path`` is not
    our journal."""
    log = Journal(path, LOG_FORMAT)
    lines = log.records()
    records = {rec["relative"]: rec for rec in lines if rec.get("type") in ("image", "skipped")}
    return (lines[0] if lines else None), records, set(log.claims(lines).files)


def _settings(checkpoint: Path, source: Path, recursive: bool, score_threshold: float, detector: Any) -> dict:
    """What a resumed run must share with the run it continues: the same inputs, model and settings."""
    classes = None if detector.class_ids is None else [detector.categories[i] for i in detector.class_ids]
    return {"checkpoint": str(checkpoint.resolve()), "checkpoint_sha256": file_sha256(checkpoint),
            "source": str(source.resolve()), "recursive": recursive, "score_threshold": score_threshold,
            "classes": classes, "postprocess": detector.postprocess.to_dict(), **detector.runtime_settings()}


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"postprocess": {"top_k": 400}}`` -> ``{"postprocess.top_k": 400}`` (names in a resume refusal)."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        flat.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return flat


def _way_out(out_dir: Path) -> str:
    return (f"--resume continues that run, --overwrite replaces the files ssd-detect wrote in {out_dir}, or "
            "choose a new --out folder")


def _check_resume(out_dir: Path, header: dict[str, Any] | None, settings: dict[str, Any]) -> None:
    if header is None:
        raise UserError(f"--resume: nothing to resume: no {LOG_NAME} of a previous run in {out_dir} (run without "
                        "--resume)")
    old, new = _flat(header.get("settings", {})), _flat(settings)
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
               if old.get(k) != new.get(k)]
    if changed:
        raise UserError(f"--resume: the run in {out_dir} used other settings ({'; '.join(changed)}); resume with "
                        "the same ones, --overwrite to start over there, or choose a new --out folder")


def prepare_output(out_dir: Path, items: Sequence[Item], settings: dict[str, Any], *, resume: bool,
                   overwrite: bool) -> dict[str, dict[str, Any]]:
    """Check that the run may write into ``out_dir`` (module docstring: the rules) and start or reopen its log;
    returns the finished records of the run being resumed (empty otherwise)."""
    check_output_path(out_dir, "--out", folder=True)
    log, result = out_dir / LOG_NAME, out_dir / RESULT_NAME
    header, records, ours = read_log(log)
    if log.exists() and header is None:
        raise UserError(f"{log} is not a journal of ssd-detect (a file it did not write): ssd-detect never replaces "
                        "it, even with --overwrite; move it away or choose a new --out folder")
    if resume:
        _check_resume(out_dir, header, settings)
    elif not overwrite:
        refuse_existing([log, result], f"--out {out_dir} holds a previous run's results: this run",
                        _way_out(out_dir))
    refuse_existing([out_dir / it.drawing for it in items if it.drawing not in ours],
                    "ssd-detect", "it only replaces files it wrote: move them away or choose a new --out folder")
    if result.exists():
        result.unlink()  # the previous result of this very log (resumed or overwritten): rewritten at the end
    if not resume:  # drawings of the replaced run stay ssd-detect's, so a later --overwrite may replace them too
        journal(out_dir).start({"settings": settings}, files=ours)
        return {}
    return {k: r for k, r in records.items() if r["type"] == "image" and (out_dir / r["drawing"]).is_file()}


def _process(detector: Any, chunk: Sequence[Item], out_dir: Path, score_threshold: float) -> list[dict]:
    """Decode, detect, draw and describe one batch; unreadable files become ``"skipped"`` records."""
    from ssd_torch.data.images import read_image
    from ssd_torch.errors import DatasetError

    decoded, records = [], []
    for item in chunk:
        try:
            decoded.append((item, read_image(item.path)))
        except DatasetError as e:
            records.append({"type": "skipped", "file": str(item.path), "relative": item.relative,
                            "error": e.reason or str(e)})
    journal(out_dir).claim(it.drawing for it, _ in decoded)  # claimed before written: ours to replace later
    for (item, image), result in zip(decoded, detector.detect([d for _, d in decoded])):
        shown = result.select(min_score=score_threshold)
        atomic_write(out_dir / item.drawing, lambda f, s=shown, im=image: s.draw(im.image).save(f, format="PNG"))
        records.append({"type": "image", "file": str(item.path), "relative": item.relative,
                        "drawing": item.drawing, **shown.to_dict()})
    order = {it.relative: i for i, it in enumerate(chunk)}
    return sorted(records, key=lambda r: order[r["relative"]])


def _report(record: dict[str, Any]) -> str:
    if record["type"] == "skipped":
        return f"{record['file']}: skipped ({record['error']})"
    turned = record["orientation"]["exif"] != 1
    return (f"{record['file']}: {len(record['detections'])} detections -> {record['drawing']}"
            + (f" (EXIF orientation {record['orientation']['exif']}: {record['orientation']['applied']})"
               if turned else ""))


def _document(items: Sequence[Item], records: dict[str, dict], settings: dict, device: str) -> dict[str, Any]:
    from ssd_torch.detector import BOX_FORMAT

    images = [records[it.relative] for it in items if records.get(it.relative, {}).get("type") == "image"]
    skipped = [records[it.relative] for it in items if records.get(it.relative, {}).get("type") == "skipped"]
    strip = ("type",)
    return {**settings, "device": device, "box_format": BOX_FORMAT,
            "counts": {"images": len(images), "skipped": len(skipped),
                       "detections": sum(len(r["detections"]) for r in images)},
            "images": [{k: v for k, v in r.items() if k not in strip} for r in images],
            "skipped": [{k: v for k, v in r.items() if k not in strip} for r in skipped]}


def detect_images(checkpoint: Path, source: Path, out_dir: Path, *, recursive: bool = False,
                  score_threshold: float = 0.3, classes: Sequence[str] | None = None,
                  nms_threshold: float | None = None, max_detections: int | None = None, device: str = "auto",
                  backend: str = "auto", batch_size: int = 8, trust_checkpoint: bool = False, resume: bool = False,
                  overwrite: bool = False, runtime: str = "torch", cache_dir: Path | None = None,
                  calibration: Any = None) -> dict[str, Any]:
    """Run ``checkpoint`` on the images of ``source`` into ``out_dir`` (module docstring); returns the content
    of ``detections.json``. Prints one line per image as it is done. ``runtime``, ``cache_dir``,
    ``calibration``: ``Detector.from_checkpoint``'s ``runtime``, ``cache_dir``, ``calibration_data``."""
    from ssd_torch.detector import Detector

    check_output_path(out_dir, "--out", folder=True)  # before the (slow) model load
    if source.is_dir() and out_dir.resolve() == source.resolve():
        raise UserError(f"--out {out_dir} is the input folder: the drawings would become inputs of the next run; "
                        "choose another folder")
    items = plan_inputs(source, recursive, out_dir)
    with lock_folder(out_dir, "ssd-detect", "--out"):  # one run per --out folder, for the life of this run
        detector = Detector.from_checkpoint(checkpoint, device, trust_checkpoint, backend=backend,
                                            batch_size=batch_size, classes=classes, nms_threshold=nms_threshold,
                                            max_detections=max_detections, runtime=runtime, cache_dir=cache_dir,
                                            calibration_data=calibration)
        if score_threshold < detector.postprocess.score_threshold:  # list what was asked for, not just > 0.01
            detector.predictor.postprocess = detector.postprocess.replace(score_threshold=score_threshold)
        settings = _settings(checkpoint, source, recursive, score_threshold, detector)
        done = prepare_output(out_dir, items, settings, resume=resume, overwrite=overwrite)
        pending = [it for it in items if it.relative not in done]
        if done:
            print(f"resuming: {len(done)} of {len(items)} images already done")
        for start in range(0, len(pending), batch_size):
            records = _process(detector, pending[start:start + batch_size], out_dir, score_threshold)
            journal(out_dir).append(records)
            for rec in records:
                print(_report(rec), flush=True)
        doc = _document(items, read_log(out_dir / LOG_NAME)[1], settings, str(detector.device))
        atomic_write_text(out_dir / RESULT_NAME, json.dumps(doc, indent=1) + "\n")
    return doc


def build_parser() -> argparse.ArgumentParser:
    from ssd_torch.deploy.runtime import RUNTIMES

    p = argparse.ArgumentParser(prog="ssd-detect", description="Draw and list an SSD300 checkpoint's detections "
                                "on image files (see the module docstring of ssd_torch.cli.detect).")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("images", type=Path, metavar="IMAGE_OR_FOLDER")
    p.add_argument("--out", type=Path, required=True, help="folder for the drawings, detections.jsonl and .json")
    p.add_argument("--recursive", action="store_true", help="also the images in the folder's subfolders")
    p.add_argument("--score-threshold", type=float, default=0.3, help="draw / list scores >= this (default 0.3)")
    p.add_argument("--classes", action="append", default=None, metavar="NAME[,NAME...]",
                   help="keep only these classes (comma-separated or repeated)")
    p.add_argument("--nms-threshold", type=float, default=None, help="NMS IoU threshold (default: the checkpoint's "
                   "post-processing settings, else 0.45)")
    p.add_argument("--max-detections", type=int, default=None, help="most detections per image (default: the "
                   "checkpoint's, else 200)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: %(default)s)")
    p.add_argument("--backend", choices=("torch", "numba", "auto"), default="auto",
                   help="NMS backend (default: %(default)s, numba where it runs)")
    p.add_argument("--batch-size", type=int, default=8)
    r = p.add_argument_group("runtime")
    r.add_argument("--runtime", choices=RUNTIMES, default="torch", help="where the network runs (default: "
                   "%(default)s); the onnxruntime ones export the network on first use into --onnx-cache")
    r.add_argument("--onnx-cache", type=Path, default=None, metavar="DIR", help="the exported graphs' cache "
                   "(default: $XDG_CACHE_HOME/ssd300/onnx, else ~/.cache/ssd300/onnx)")
    r.add_argument("--calibration-data", type=Path, default=None, metavar="PATH", help="onnxruntime-int8: a VOC "
                   "year folder or a COCO instances .json (with --calibration-image-dir)")
    r.add_argument("--calibration-images", type=int, default=100, metavar="N", help="images to calibrate on")
    r.add_argument("--calibration-split", default="trainval", help="VOC split of the calibration images")
    r.add_argument("--calibration-image-dir", type=Path, default=None, metavar="DIR",
                   help="COCO calibration data: the folder its file_name entries are relative to")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    mode.add_argument("--overwrite", action="store_true", help="replace the files a previous ssd-detect run wrote "
                      "in --out (never other files)")
    add_trust_flag(p)
    return p


def _main(argv: Sequence[str] | None) -> int:
    from ssd_torch.deploy.quantize import Calibration
    from ssd_torch.deploy.runtime import check_runtime

    args = build_parser().parse_args(argv)
    if not 0.0 <= args.score_threshold <= 1.0:
        raise UserError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    calibration = None if args.calibration_data is None else Calibration(
        args.calibration_data, args.calibration_images, args.calibration_split, args.calibration_image_dir)
    check_runtime(args.runtime, calibration)
    classes = None if args.classes is None else [c.strip() for arg in args.classes for c in arg.split(",")
                                                 if c.strip()]
    try:
        doc = detect_images(args.checkpoint, args.images, args.out, recursive=args.recursive,
                            score_threshold=args.score_threshold, classes=classes, nms_threshold=args.nms_threshold,
                            max_detections=args.max_detections, device=args.device, backend=args.backend,
                            batch_size=args.batch_size, trust_checkpoint=args.trust_checkpoint,
                            resume=args.resume, overwrite=args.overwrite, runtime=args.runtime,
                            cache_dir=args.onnx_cache, calibration=calibration)
    except KeyboardInterrupt:
        print(f"ssd-detect: interrupted; {args.out / LOG_NAME} keeps the finished images: run the same command "
              "with --resume to continue", file=sys.stderr)
        return _INTERRUPTED_EXIT
    return _summary(doc, args.out)


def _summary(doc: dict[str, Any], out_dir: Path) -> int:
    counts, skipped = doc["counts"], doc["skipped"]
    if counts["images"] == 0 and skipped:
        more = f" (+{len(skipped) - 1} more)" if len(skipped) > 1 else ""
        raise UserError(f"no image could be read: {skipped[0]['file']}: {skipped[0]['error']}{more}")
    print(f"{counts['images']} images, {counts['detections']} detections with score >= {doc['score_threshold']}; "
          f"drawings, {LOG_NAME} and {RESULT_NAME} in {out_dir}")
    if skipped:
        names = ", ".join(Path(s["file"]).name for s in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        print(f"{len(skipped)} unreadable file(s) skipped ({names}): listed in {out_dir / RESULT_NAME}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, "ssd-detect")


if __name__ == "__main__":
    raise SystemExit(main())
