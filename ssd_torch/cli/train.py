"""``ssd-train``: resolve a ``TrainConfig`` from a preset, a JSON file and flags, then train.

Single process: ``ssd-train --preset voc07 --backbone-weights torchvision:IMAGENET1K_FEATURES --data-root
VOCdevkit/VOC2007 --data-root VOCdevkit/VOC2012``. Several GPUs / nodes: ``torchrun --nproc_per_node=8 -m
ssd_torch.cli.train --preset voc07 ...`` (DDP; nccl on GPU, gloo on CPU). ``--batch-size`` is PER PROCESS.

Data: VOC year folders (``--data-root``, repeatable), or COCO: ``--data-root train.json --images DIR
--val-data val.json --val-images DIR`` (a ``.json`` is a COCO instances file, as for ``ssd-eval``), or
``--data-format coco --data-root ROOT`` for COCO's own layout under ROOT (``--preset coco``: ``data/coco``).
``--init-from CHECKPOINT`` starts from a trained model (ours, or a peer's imported with ``ssd-import``) instead
of ImageNet backbone weights.
A user error (bad config value, missing split, corrupt image without ``data.skip_bad``, a run folder that
holds an earlier run) prints one line and exits 2 (``ssd_torch.cli.run_cli``). Ctrl-C / SIGTERM finish the
current step, write a checkpoint, print how to resume and exit 130 / 143.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

from ssd_torch.cli import UserError, add_trust_flag, run_cli
from ssd_torch.data.coco import is_coco_data
from ssd_torch.device import DEVICE_NAMES
from ssd_torch.training.datasets import user_data_root_overrides
from ssd_torch.training.train_config import PRESETS, TrainConfig, load_config_file, resolve_config

__all__ = ["DATA_FORMATS", "parse_args", "config_from_args", "resume_command", "main"]

#: ``--data-format``: the ``data.dataset`` kinds a user's files can be (``synthetic`` is generated, not given).
DATA_FORMATS = ("voc", "coco")

_FLAGS = {  # flag -> (config path, type, help)
    "output_dir": ("run.output_dir", str, "the run folder; a new run refuses a folder that holds an earlier run"),
    "batch_size": ("optim.batch_size", int, "images per micro-batch and process"),
    "accumulation": ("optim.accumulation", int,
                     "micro-batches per optimizer step; the effective batch is batch x accumulation x processes. "
                     "Without BatchNorm (voc07, coco: VGG16) the gradient is the effective batch's (batch 8 x 4 = "
                     "batch 32, to 7e-9); with BatchNorm (the demo's slim model) it is not: BatchNorm normalises each "
                     "micro-batch by its own statistics (2e-3 apart)"),
    "lr": ("optim.base_lr", float,
           "the LR per 32 images (optim.reference_batch), scaled linearly to the effective batch "
           "(batch x accumulation x processes): --lr 1e-3 at an effective batch of 8 trains at 2.5e-4"),
    "epochs": ("schedule.epochs", int, "passes over the training set (instead of schedule.iterations)"),
    "max_steps": ("schedule.max_steps", int, "stop after this many optimizer steps (the LR schedule keeps its "
                                             "full length)"),
    "device": ("runtime.device", str, DEVICE_NAMES),
    "amp": ("runtime.amp", str, "none (fp32), bf16 or fp16 (with a gradient scaler)"),
    "workers": ("data.num_workers", int, "DataLoader worker processes"),
    "seed": ("runtime.seed", int, "initial weights and data order"),
    "resume": ("run.resume", str, "continue a run: 'auto' (the latest checkpoint in --output-dir, if any) or a "
                                  "checkpoint file; settings that differ from the checkpoint's are listed"),
    "schedule": ("schedule.kind", str, "LR shape: multistep or cosine"),
    "grad_clip": ("optim.grad_clip", float, "clip the global gradient norm to this value"),
    "backbone_weights": ("model.backbone_weights", str,
                         "ImageNet VGG16 backbone: a file (torchvision's VGG16 state dict or ssd.pytorch's "
                         "vgg16_reducedfc.pth), torchvision:IMAGENET1K_FEATURES, torchvision:IMAGENET1K_V1, or "
                         "'none' to train from scratch on purpose"),
    "init_from": ("model.init_from", str,
                  "start from this trained checkpoint (ours, or a peer's converted by ssd-import): the backbone, "
                  "extras, loc heads and the conf rows of the classes both have are copied, the rest starts fresh, "
                  "and the run takes the checkpoint's priors and input convention; not with --backbone-weights. "
                  "Unlike --resume, only weights are taken: the run starts at step 0"),
    "images": ("data.train_images", str, "COCO data: the folder that the training file's file_name entries are "
                                         "relative to"),
    "val_images": ("data.val_images", str, "COCO data: the folder of the --val-data file's images"),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ssd-train", description=__doc__.split("\n\n")[0].replace("``", ""),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Resolution: preset < --config file < --set < the named flags.")
    p.add_argument("--preset", default="voc07", choices=sorted(PRESETS), help="training preset (default voc07)")
    p.add_argument("--config", help="JSON config file (nested like config.json in a run folder; may be partial)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any field, value as JSON (e.g. --set data.roots='[\"a\",\"b\"]'); repeatable")
    p.add_argument("--data-root", action="append", metavar="PATH",
                   help="a VOC year folder (repeat for 07+12; sets data.roots, and data.val_roots to the first), a "
                        "COCO root (with --data-format coco: ROOT/annotations/instances_<split>.json and "
                        "ROOT/<split>/), or a COCO instances .json (with --images, --val-data and --val-images)")
    p.add_argument("--data-format", choices=DATA_FORMATS,
                   help="sets data.dataset where --data-root cannot tell (a .json is COCO, a folder VOC)")
    p.add_argument("--val-data", metavar="PATH",
                   help="the held-out data: a VOC year folder (data.val_roots) or a COCO instances .json "
                        "(data.val_annotations, with --val-images)")
    p.add_argument("--classes", metavar="NAMES",
                   help="sets data.class_names: the object classes, comma-separated (label order), or 'auto' to "
                        "read them from the training annotations; default: the data's own (VOC's 20, a COCO "
                        "file's categories)")
    for name, (path, typ, text) in _FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=typ, help=f"sets {path}: {text}")
    p.add_argument("--channels-last", action="store_true", default=None, help="sets runtime.channels_last")
    p.add_argument("--compile", action="store_true", default=None, help="sets runtime.compile (torch.compile)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --output-dir that holds an earlier one, removing only the files "
                        "ssd-train writes there: config.json, metrics.csv, epochs.csv, eval.csv, curves.png, "
                        "checkpoints/step_<N>.pt, last.pt and best.pt, tb/events.out.tfevents.*, detections/*.png "
                        "(and their temp files); anything else in the folder stays")
    p.add_argument("--resume-with-changes", action="store_true",
                   help="with --resume: apply settings that normally cannot change mid-run (model, data order, "
                        "LR and schedule, loss); the effective batch can never change")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_trust_flag(p)
    return p.parse_args(argv)


def _dataset_chosen(args: argparse.Namespace) -> bool:
    """True when ``--data-root`` only says where the data of a chosen kind is: the user named ``data.dataset``
    (``--data-format``, ``--set data.dataset=...``, the ``--config`` file), or the preset's kind is real data
    (voc, coco). A preset's synthetic kind never applies to a folder the user names: that is the user's data."""
    if args.data_format is not None or any(s.replace(" ", "").startswith("data.dataset=") for s in args.set):
        return True
    if args.config is not None and "dataset" in (load_config_file(args.config).get("data") or {}):
        return True
    return PRESETS[args.preset]().data.dataset != "synthetic"


def _data_overrides(args: argparse.Namespace) -> list[str]:
    """``--data-root``, ``--data-format``, ``--val-data`` and ``--classes`` as ``data.*`` overrides: a ``.json``
    is a COCO instances file (``ssd_torch.data.coco.is_coco_data``, the rule of ssd-eval), a folder a VOC
    year folder, or with ``--data-format coco`` a COCO root."""
    out = [] if args.data_format is None else [f"data.dataset={json.dumps(args.data_format)}"]
    roots, val = args.data_root or [], args.val_data
    if roots and is_coco_data(roots):
        if args.data_format == "voc":
            raise UserError(f"--data-root {roots[0]} is a COCO instances file, not VOC data (--data-format voc)")
        if args.images is None or val is None or args.val_images is None:
            raise UserError(f"--data-root {roots[0]} is a COCO instances file: give --images DIR (its images), "
                            f"--val-data VAL.json and --val-images DIR (the held-out file and its images)")
        out += ['data.dataset="coco"', f"data.train_annotations={json.dumps(roots[0])}"]
    elif any(r.lower().endswith(".json") for r in roots):
        raise UserError(f"--data-root: one COCO instances file alone, or VOC / COCO root folders; got {roots}")
    elif roots and _dataset_chosen(args):
        out += [f"data.roots={json.dumps(roots)}", f"data.val_roots={json.dumps(roots[:1])}"]
    elif roots:  # the user's own data: read as VOC year folders, never handed to the synthetic generator
        out += user_data_root_overrides(roots)
    if val is not None and val.lower().endswith(".json"):
        out.append(f"data.val_annotations={json.dumps(val)}")
    elif val is not None:
        out.append(f"data.val_roots={json.dumps([val])}")
    if args.classes is not None:
        names = args.classes if args.classes == "auto" else [n.strip() for n in args.classes.split(",")]
        out.append(f"data.class_names={json.dumps(names)}")
    return out


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = list(args.set)
    for name, (path, _, _) in _FLAGS.items():
        value = getattr(args, name)
        if value is not None:
            overrides.append(f"{path}={json.dumps(value)}")
    overrides += _data_overrides(args)
    if args.channels_last:
        overrides.append("runtime.channels_last=true")
    if args.compile:
        overrides.append("runtime.compile=true")
    if args.no_progress:
        overrides.append("run.progress=false")
    return resolve_config(args.preset, args.config, overrides)


def resume_command(run_dir: str | Path, world_size: int = 1) -> str:
    """The command that continues the run in ``run_dir`` (its config.json holds every setting)."""
    tool = "ssd-train" if world_size <= 1 else f"torchrun --nproc_per_node={world_size} -m ssd_torch.cli.train"
    return f"{tool} --config {shlex.quote(str(Path(run_dir) / 'config.json'))} --resume auto"


def _report(summary: dict[str, Any]) -> int:
    """The last line(s) of a run on rank 0; the exit status (128 + signal after a stop)."""
    from ssd_torch.evaluation.headline import headline_label
    from ssd_torch.training.interrupt import exit_code
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if summary["stopped_by"]:
        if rank0:
            print(f"ssd-train: interrupted at step {summary['step']}; resume with: "
                  f"{resume_command(summary['run_dir'], summary['world_size'])}", file=sys.stderr)
        return exit_code(summary["stopped_by"])
    if not rank0:
        return 0
    best = summary["best_map"]
    best_text = f"best {best:.4f} (best.pt)" if math.isfinite(best) else "no evaluation scored above 0 (no best.pt)"
    if summary.get("finished_before"):
        print(f"ssd-train: the run in {summary['run_dir']} is already finished (step {summary['step']}, final mAP "
              f"{summary['last_metrics'].get('mAP')}, {best_text}); nothing was written. To train longer, raise "
              f"--max-steps or the schedule with --resume-with-changes")
        return 0
    metric = headline_label(summary["last_eval"].get("metric"))
    print(f"done: {summary['step']} steps, final {metric} {summary['last_metrics'].get('mAP')}, {best_text}, run "
          f"folder {summary['run_dir']}")
    return 0


def _main(argv: Sequence[str] | None) -> int:
    import torch.distributed as dist

    from ssd_torch.training.interrupt import exit_code
    from ssd_torch.training.train import run_training

    args = parse_args(argv)
    cfg = config_from_args(args)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    try:
        summary = run_training(cfg, trust_checkpoint=args.trust_checkpoint, overwrite=args.overwrite,
                               accept_changes=args.resume_with_changes)
    except KeyboardInterrupt:  # a second Ctrl-C: no checkpoint of this step, the last one stays intact
        print(f"ssd-train: aborted at once; the latest checkpoint (if any) is in {cfg.run.output_dir}/checkpoints",
              file=sys.stderr)
        return exit_code(2)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return _report(summary)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, "ssd-train")


if __name__ == "__main__":
    sys.exit(main())
