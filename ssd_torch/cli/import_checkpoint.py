"""``ssd-import FORMAT WEIGHTS --out CHECKPOINT``: a peer's trained SSD300 as one of our checkpoints.

FORMAT is ``torchvision`` (``ssd300_vgg16`` COCO state dict), ``ssd.pytorch`` (``ssd300_mAP_77.43_v2.pth``) or
``lufficc`` (``vgg_ssd300_voc0712.pth``); ``ssd_torch.modeling.importers`` holds the layouts. The checkpoint
carries the peer's priors, input convention and class names, so that ``ssd-eval``, ``ssd-detect``,
``ssd-export`` and fine-tuning work on it unchanged. ``--classes`` names the object classes of a file trained
on other classes than the peer's published model. The peer file is read weights-only (``--trust-checkpoint``:
unpickle in full). ``--out`` must not exist: an existing file is never replaced.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Sequence

from ssd_torch.cli import UserError, add_trust_flag, run_cli
from ssd_torch.files import check_output_path, refuse_existing

__all__ = ["import_to_checkpoint", "main"]


def _refuse_existing(out: Path) -> None:
    """The no-overwrite rule's one message (``ssd_torch.files.refuse_existing``) for ``--out``; the last line
    covers a name that exists only as a dangling link (``exists()`` is False, ``os.link`` still refuses)."""
    way_out = "ssd-import never replaces a file: choose another name or remove it yourself"
    refuse_existing([out], "--out", way_out)
    raise UserError(f"--out {out} already exists as a link; {way_out}")


def _save_new(obj: Any, out: Path) -> Path:
    """Write ``obj`` to ``out`` only if no file has that name: an atomic save under a temporary name in the same
    folder, then a hard link to ``out`` (which fails, leaving the other file alone, if ``out`` appeared in the
    meantime)."""
    from ssd_torch.checkpoint import atomic_save

    if out.exists():
        _refuse_existing(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.import")
    atomic_save(obj, tmp)
    try:
        os.link(tmp, out)
    except FileExistsError:
        _refuse_existing(out)
    except OSError:  # a filesystem without hard links: checked again, then renamed
        if out.exists():
            _refuse_existing(out)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def import_to_checkpoint(fmt: str, weights: Path, out: Path, *, class_names: Sequence[str] | None = None,
                         trust_checkpoint: bool = False) -> str:
    """Convert ``weights`` (a ``fmt`` file) into our checkpoint ``out``; returns the printable report."""
    from ssd_torch.modeling.importers import imported_checkpoint

    check_output_path(out, "--out", folder=False)  # before reading a 100+ MB file
    if out.exists():
        _refuse_existing(out)
    ckpt, report = imported_checkpoint(fmt, weights, class_names=class_names, trust=trust_checkpoint)
    _save_new(ckpt, out)
    return f"{report.text()}\nwrote {out}"


def _parser() -> argparse.ArgumentParser:
    from ssd_torch.modeling.importers import FORMATS

    p = argparse.ArgumentParser(prog="ssd-import", description="Convert a peer's trained SSD300 weights "
                                "into an ssd300 checkpoint (for ssd-eval, ssd-detect, ssd-export, fine-tuning).")
    p.add_argument("format", choices=sorted(FORMATS), help="the layout of WEIGHTS")
    p.add_argument("weights", type=Path, help="the peer's file, e.g. " + ", ".join(f.file for f in FORMATS.values()))
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (must not exist)")
    p.add_argument("--classes", default=None,
                   help="comma-separated object class names in label order (background excluded), for a file "
                        "trained on other classes than the peer's published model")
    add_trust_flag(p)
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    names = None if args.classes is None else [n.strip() for n in args.classes.split(",")]
    if names is not None and (not all(names) or "background" in names):
        raise UserError(f"--classes {args.classes!r}: give non-empty object class names, without 'background'")
    print(import_to_checkpoint(args.format, args.weights, args.out, class_names=names,
                               trust_checkpoint=args.trust_checkpoint))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, "ssd-import")


if __name__ == "__main__":
    raise SystemExit(main())
