"""``ssd-train``: resolve a ``TrainConfig`` from a preset, a JSON file and flags, then train.

Single process: ``ssd-train --preset voc07 --set data.roots='["VOCdevkit/VOC2007","VOCdevkit/VOC2012"]'``.
Several GPUs / nodes: ``torchrun --nproc_per_node=8 -m ssd_torch.cli.train --preset voc07 ...`` (DDP; nccl on
GPU, gloo on CPU). ``--batch-size`` is PER PROCESS. A user error (bad config value, missing split, corrupt
image without ``data.skip_bad``) prints one line and exits 2 (``ssd_torch.cli.run_cli``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from ssd_torch.cli import add_trust_flag, run_cli
from ssd_torch.errors import ConfigError
from ssd_torch.training.train_config import PRESETS, TrainConfig, resolve_config

__all__ = ["parse_args", "config_from_args", "main"]

_FLAGS = {  # flag -> (config path, type)
    "output_dir": ("run.output_dir", str), "batch_size": ("optim.batch_size", int),
    "accumulation": ("optim.accumulation", int), "lr": ("optim.base_lr", float), "epochs": ("schedule.epochs", int),
    "max_steps": ("schedule.max_steps", int), "device": ("runtime.device", str), "amp": ("runtime.amp", str),
    "workers": ("data.num_workers", int), "seed": ("runtime.seed", int), "resume": ("run.resume", str),
    "schedule": ("schedule.kind", str), "grad_clip": ("optim.grad_clip", float),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ssd-train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Resolution: preset < --config file < --set < the named flags.")
    p.add_argument("--preset", default="voc07", choices=sorted(PRESETS), help="training preset (default voc07)")
    p.add_argument("--config", help="JSON config file (nested like config.json in a run folder; may be partial)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any field, value as JSON (e.g. --set data.roots='[\"a\",\"b\"]'); repeatable")
    p.add_argument("--data-root", action="append", metavar="DIR", help="a dataset root (repeat for 07+12)")
    for name, (path, typ) in _FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=typ, help=f"sets {path}")
    p.add_argument("--channels-last", action="store_true", default=None, help="sets runtime.channels_last")
    p.add_argument("--compile", action="store_true", default=None, help="sets runtime.compile (torch.compile)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_trust_flag(p)
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = list(args.set)
    for name, (path, _) in _FLAGS.items():
        value = getattr(args, name)
        if value is not None:
            overrides.append(f"{path}={json.dumps(value)}")
    if args.data_root:
        overrides += [f"data.roots={json.dumps(args.data_root)}", f"data.val_roots={json.dumps(args.data_root[:1])}"]
    if args.channels_last:
        overrides.append("runtime.channels_last=true")
    if args.compile:
        overrides.append("runtime.compile=true")
    if args.no_progress:
        overrides.append("run.progress=false")
    return resolve_config(args.preset, args.config, overrides)


def _main(argv: Sequence[str] | None) -> int:
    import torch.distributed as dist

    from ssd_torch.training.train import DistInfo, run_training, say

    args = parse_args(argv)
    try:
        cfg = config_from_args(args)
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from e
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    summary = run_training(cfg, trust_checkpoint=args.trust_checkpoint)
    if dist.is_initialized():
        dist.destroy_process_group()
    best = summary["best_map"]
    say(DistInfo(rank=int(os.environ.get("RANK", "0"))),
         f"done: {summary['step']} steps, final mAP {summary['last_metrics'].get('mAP')}, best mAP {best:.4f}, "
         f"run folder {summary['run_dir']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, "ssd-train")


if __name__ == "__main__":
    sys.exit(main())
