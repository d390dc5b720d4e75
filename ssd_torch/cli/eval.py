"""``ssd-eval CHECKPOINT --data ROOT --split test`` (VOC) or ``--data instances.json --images DIR`` (COCO).

A thin shell over ``ssd_torch.evaluation.checkpoint_eval``: the checkpoint's ``Predictor`` (its variances and
post-processing settings; backend ``auto`` (default) / ``torch`` /
``numba``, progress bar), scored with the fast devkit-exact evaluator (``ssd_torch.voc_eval``): the 11-point AP
by default, ``--metric area`` for the all-point AP. Prints the per-class AP table and writes
``results_<metric>.json`` into ``--out``.

COCO data (``--data`` is one ``.json`` instances file, ``--images`` the folder its ``file_name`` entries are
relative to; ``ssd_torch.data.coco.CocoDataset``, categories matched to the checkpoint's classes by id where the
checkpoint carries COCO ids, e.g. an imported torchvision model, else by name: docs/CONTRACT.md "Classes of a
checkpoint and a COCO file"):
the same detections are also scored by pycocotools' ``COCOeval`` (AP@[.5:.95], AP50, AP75, AP/AR by size,
AR1/10/100; ``ssd_torch.evaluation.coco_eval``), written with the file's image and category ids as the
standard results list ``coco_results.json``, and the VOC AP above is reported next to them.

The detections are cached in ``--out`` as ``detections-<key>.npz``, where ``key`` hashes the checkpoint's
bytes, the data (each image's and annotation's name, size and modification time, the parsed annotations, the
split) and every inference setting — not the metric: re-scoring with ``--metric area`` or ``--coco`` reads the
cache instead of re-running the model; ``--overwrite`` never reads it. ``--coco`` on
VOC data adds COCO-style AP (pycocotools, an optional extra; difficult boxes become ``iscrowd`` regions, i.e.
ignored, as in the VOC rules).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional, Sequence


from ssd_torch.labels import object_classes_of
from ssd_torch.cli import UserError, add_data_flags, add_trust_flag, check_data_flags, resolve_device, run_cli
from ssd_torch.data.coco import is_coco_data
from ssd_torch.evaluation.checkpoint_eval import (EvalData, default_out_dir, describe_files, evaluate_checkpoint,
                                                  write_outputs)

__all__ = ["main"]


def _require_pycocotools(why: str) -> None:
    try:
        import pycocotools.cocoeval  # noqa: F401
    except ImportError as e:
        raise UserError(f"{why} needs pycocotools, which is not installed (pip install pycocotools, or the "
                        "project's 'coco' extra)") from e


def _class_hint(err: Exception, class_names: Sequence[str]) -> str:
    return f" (the checkpoint's classes are {list(class_names)})" if "class" in str(err) else ""


def _open_data(data: Sequence[Path], split: Optional[str], images: Optional[Path], predictor: Any,
               checkpoint: Path) -> EvalData:
    """The VOC split or COCO file with the checkpoint's classes (a COCO file's categories matched by
    ``ssd_torch.modeling.categories.coco_matching``) and eval transform; a bad file is a UserError."""
    from ssd_torch.data.coco import CocoDataset
    from ssd_torch.data.voc import VOCDataset
    from ssd_torch.errors import DatasetError
    from ssd_torch.modeling.categories import coco_matching

    split = check_data_flags(data, images, split, default_split="test")
    class_names, transform = object_classes_of(predictor.categories), predictor.transform
    try:
        if split is not None:
            dataset = VOCDataset([Path(r) for r in data], split, class_names=tuple(class_names), transform=transform)
            return EvalData(dataset, {"data": describe_files(data), "split": split}, False)
        assert images is not None  # check_data_flags: COCO data comes with its image folder
        names, ids = coco_matching(predictor.categories, predictor.category_ids, f"checkpoint {checkpoint}")
        dataset = CocoDataset(images, data[0], class_names=names, category_ids=ids, transform=transform)
    except DatasetError as e:
        raise UserError(f"{e}{_class_hint(e, class_names)}") from e
    stat = Path(data[0]).stat()  # the file's other bytes (e.g. "info") do not change detections, but say "changed"
    return EvalData(dataset, {"data": describe_files(data), "split": None, "images": describe_files([images])[0],
                              "annotation_file": [stat.st_size, stat.st_mtime_ns]}, True)


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
                   help="results + detection cache folder (default: eval_<checkpoint name>_<split or json name> "
                        "next to the checkpoint)")
    p.add_argument("--coco", action="store_true",
                   help="VOC data: also COCO-style AP (needs pycocotools); COCO data always gets the COCO metrics")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of another evaluation in --out (results_*.json, coco_results.json, "
                        "detection caches) and never reuse cached detections; without it they are kept and nothing "
                        "is written")
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
    from ssd_torch.evaluation.checkpoint_eval import check_outputs, lock_out_dir
    from ssd_torch.modeling.predictor import load_predictor

    split = None if is_coco_data(args.data) else (args.split or "test")
    out_dir = args.out if args.out is not None else default_out_dir(args.checkpoint, args.data, split)
    check_outputs(out_dir, key="", overwrite=True)  # a file in the way is refused before any slow work
    if args.coco or is_coco_data(args.data):
        _require_pycocotools("COCO evaluation (--coco, or a COCO annotation file as --data)")
    with lock_out_dir(out_dir):  # one evaluation per --out folder, for the life of this one
        predictor = load_predictor(args.checkpoint, resolve_device(args.device),
                                   trust_checkpoint=args.trust_checkpoint, backend=args.backend)
        data = _open_data(args.data, args.split, args.images, predictor, args.checkpoint)
        out = evaluate_checkpoint(predictor, args.checkpoint, data, out_dir, batch_size=args.batch_size,
                                  use_07_metric=args.metric == "07", coco=args.coco, progress=not args.no_progress,
                                  overwrite=args.overwrite)
        shown = [n for k, n in enumerate(out["_result"].class_names) if k not in predictor.unused_labels]  # no N/A
        _print_results(out, shown)
        print(f"results: {', '.join(str(p) for p in write_outputs(out, out_dir, args.metric))}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, "ssd-eval")


if __name__ == "__main__":
    raise SystemExit(main())
