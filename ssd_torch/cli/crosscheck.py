"""``ssd-crosscheck``: every fast path against the NumPy reference, on the same real batches, in one table.

What a user runs first on a new machine or a new version. A thin shell over :mod:`ssd_torch.parity` (the checks,
their tolerances and the table are documented there): the paths are ``torch-cpu`` and ``numba-cpu``, plus
``torch-cuda`` and ``numba-cuda`` when a GPU is present. The batches come from a dataset through the *training*
augmentation: VOC year folders (``--data ROOT --split S``), COCO data (``--data instances.json --images DIR``,
as for ``ssd-eval``), or a synthetic VOC tree generated in a temporary folder when ``--data`` is absent. Model
outputs come from ``--checkpoint`` (its classes, priors and input convention), else from a randomly initialised
slim SSD300 (seeded) for the data's classes: the synthetic shapes for a synthetic tree, a COCO file's
categories, else VOC's 20.

Exit status 0 when every row meets its tolerance, 1 when any row leaves it (each failing row is named on a
``FAIL:`` line), 2 on a user error (a missing folder, an unknown ``--paths`` entry, a bad checkpoint).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, Sequence

from ssd_torch.labels import categories_of, object_classes_of
from ssd_torch.cli import UserError, add_data_flags, add_trust_flag, check_data_flags, run_cli

__all__ = ["main"]


def _class_names_for(roots: Sequence[Path]) -> tuple[str, ...]:
    """A COCO file's categories; the synthetic classes for a tree written by ``ssd_torch.data.synthetic``;
    else the 20 VOC classes."""
    from ssd_torch.data.coco import coco_file_categories, is_coco_data
    from ssd_torch.data.synthetic import SYNTHETIC_CLASSES
    from ssd_torch.data.voc import VOC_CLASSES

    if is_coco_data(roots):
        return coco_file_categories(roots[0])
    return SYNTHETIC_CLASSES if (roots[0] / "synthetic.json").is_file() else VOC_CLASSES


def _predictor(checkpoint: Path | None, class_names: Sequence[str] | None, seed: int,
               trust_checkpoint: bool = False) -> Any:
    """The checkpoint's ``Predictor`` (its variances and post-processing settings), or a seeded random slim
    SSD300 for ``class_names`` with the contract's defaults."""
    import torch

    from ssd_torch.modeling.model import model_from_config
    from ssd_torch.modeling.model_config import ssd300_slim
    from ssd_torch.modeling.predictor import Predictor, load_predictor

    if checkpoint is not None:
        return load_predictor(checkpoint, "cpu", trust_checkpoint=trust_checkpoint)
    torch.manual_seed(seed)
    cfg = ssd300_slim(num_classes=len(class_names) + 1)
    return Predictor(model_from_config(cfg).eval(), cfg, categories_of(class_names))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssd-crosscheck",
                                description="Compare every fast path (torch/numba, CPU/CUDA) with the NumPy reference.")
    add_data_flags(p, required=False, default_split="trainval",
                   data_help="VOC year folder(s), or one COCO instances .json (with --images); default: a "
                             "synthetic tree generated in a temporary folder")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="model outputs from this checkpoint (default: a seeded random slim model)")
    p.add_argument("--batches", type=int, default=2, help="number of batches (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="augmentation / random model seed")
    p.add_argument("--paths", default=None,
                   help="comma-separated subset of the paths to check (default: every available one)")
    add_trust_flag(p)
    return p


def _select_paths(spec: str | None) -> list[Any]:
    """The ``--paths`` subset of ``ssd_torch.parity.available_paths()`` (all of them without the flag)."""
    from ssd_torch.parity import available_paths

    paths = available_paths()
    if spec is None:
        return paths
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    names = [p.name for p in paths]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise UserError(f"--paths: {unknown} not available here; available: {names}")
    return [p for p in paths if p.name in wanted]


def _crosscheck(args: argparse.Namespace, roots: list[Path], paths: list[Any]) -> list[Any]:
    """Model + batches from the flags, then ``ssd_torch.parity.run_parity``: the rows."""
    from ssd_torch.modeling.categories import coco_matching
    from ssd_torch.parity import load_batches, run_parity

    names_given = None if args.checkpoint is not None else _class_names_for(roots)
    predictor = _predictor(args.checkpoint, names_given, args.seed, args.trust_checkpoint)
    cfg = predictor.config
    names, ids = object_classes_of(predictor.categories), None
    if args.images is not None:  # COCO data: by id where the checkpoint carries COCO ids, else by name
        names, ids = coco_matching(predictor.categories, predictor.category_ids, f"checkpoint {args.checkpoint}")
    batches = load_batches(roots, args.split, names, args.batch_size, args.batches, args.seed, cfg.preprocess,
                           images=args.images, category_ids=ids)
    where = f" ({args.split})" if args.split else f" (images {args.images})"
    print(f"{len(batches)} batches x {args.batch_size} images from {', '.join(map(str, roots))}{where}, "
          f"model: {args.checkpoint or f'random {cfg.name} (seed {args.seed})'}; "
          f"paths: {', '.join(p.name for p in paths)}")
    return run_parity(batches, predictor, paths)


def _report(rows: list[Any]) -> int:
    """Print the table and one ``FAIL:`` line per failing row; the exit status (1 when any row failed)."""
    from ssd_torch.parity import format_rows

    print(format_rows(rows))
    failed = [r for r in rows if not r.ok]
    for r in failed:
        print(f"FAIL: {r.check} on {r.path}: agreement {100 * r.agreement:.3f}% < "
              f"{100 * r.tolerance.min_agreement:.3f}% ({r.note})")
    print("all paths within tolerance" if not failed else f"{len(failed)} row(s) out of tolerance")
    return 1 if failed else 0


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.batches < 1 or args.batch_size < 1:
        raise UserError(f"--batches and --batch-size must be >= 1, got {args.batches} and {args.batch_size}")
    paths = _select_paths(args.paths)  # a bad path list is reported before any work
    if args.data is not None:
        args.split = check_data_flags(args.data, args.images, args.split, default_split="trainval")
        return _report(_crosscheck(args, list(args.data), paths))
    if args.images is not None:
        raise UserError("--images goes with --data instances.json (COCO data)")
    from ssd_torch.data.synthetic import generate_voc

    with tempfile.TemporaryDirectory(prefix="ssd-crosscheck-") as tmp:
        root = generate_voc(Path(tmp) / "VOC2007", args.batches * args.batch_size, 0, seed=args.seed)
        args.split = "trainval"
        return _report(_crosscheck(args, [root], paths))


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, "ssd-crosscheck")


if __name__ == "__main__":
    raise SystemExit(main())
