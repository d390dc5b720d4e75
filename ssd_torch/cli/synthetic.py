"""``python -m ssd_torch.cli.synthetic ROOT``: write the synthetic shapes (``ssd_torch.data.synthetic``) as a VOC
year folder, or with ``--format coco`` as COCO files, into an absent or empty folder (or complete a synthetic
tree of the same parameters there).

Every argument is checked before a file is written: a refused folder, ``--trainval 0 --test 0`` or a side
under 32 pixels is one line on stderr and exit 2.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from ssd_torch.cli import run_cli
from ssd_torch.data.synthetic import (check_counts, check_image_size, ensure_voc, generate_coco, generate_voc)
from ssd_torch.errors import UserError

__all__ = ["parse_args", "main"]

PROG = "python -m ssd_torch.cli.synthetic"


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].replace("``", ""))
    parser.add_argument("root", help="folder to write, e.g. data/synthetic/VOCdevkit/VOC2007 (absent, empty, "
                                     "or a synthetic tree of the same parameters)")
    parser.add_argument("--trainval", type=int, default=2000, help="images of the trainval split")
    parser.add_argument("--test", type=int, default=500, help="images of the test split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, nargs=2, default=(300, 300), metavar=("W", "H"),
                        help="image width and height in pixels, each >= 32 (default 300 300)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--force", action="store_true",
                        help="rewrite the files of a synthetic tree of the same parameters even if it is complete")
    parser.add_argument("--format", choices=("voc", "coco"), default="voc",
                        help="voc: a VOC year folder; coco: images/ + annotations/instances_<split>.json of the "
                             "same scenes (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.force and args.format == "coco":
        parser.error("--force applies to --format voc only (a COCO tree of the same parameters is left as it is)")
    return args


def _check(args: argparse.Namespace) -> None:
    """The generator's argument rules as user errors, before anything is written."""
    try:
        check_counts(args.trainval, args.test)
        check_image_size(tuple(args.size))
    except ValueError as err:
        raise UserError(f"{args.root}: {err} (--trainval, --test, --size); nothing was written") from None
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")


def _main(argv: Optional[Sequence[str]]) -> int:
    args = parse_args(argv)
    _check(args)
    kwargs = dict(image_size=tuple(args.size), workers=args.workers)
    if args.format == "coco":
        generate_coco(args.root, args.trainval, args.test, args.seed, **kwargs)
        print(f"synthetic COCO tree at {args.root}: trainval {args.trainval}, test {args.test}, seed {args.seed} "
              f"(images/, annotations/instances_<split>.json)")
        return 0
    (generate_voc if args.force else ensure_voc)(args.root, args.trainval, args.test, args.seed, **kwargs)
    print(f"synthetic VOC tree at {args.root}: trainval {args.trainval}, test {args.test}, seed {args.seed}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; a user error is one line on stderr and exit 2 (``ssd_torch.cli.run_cli``)."""
    return run_cli(_main, argv, PROG)


if __name__ == "__main__":
    raise SystemExit(main())
