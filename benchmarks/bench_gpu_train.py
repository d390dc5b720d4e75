"""SSD300 training-step and inference throughput on synthetic on-device batches (images / second).

``python -m benchmarks.bench_gpu_train [--device cuda] [--batch 64] [--preset ssd300_vgg16] [--out DIR]``

* train step: the step ``ssd-train`` runs, ``ssd_torch.training.step.train_step`` (matching of the whole
  step, forward (channels_last), MultiBox loss normalised by the step's positives, backward, finiteness check,
  SGD step), with ``match_fn`` / ``loss_fn`` from ``ssd_torch.training.objective.build_objective`` and the
  optimizer from ``model_setup.build_optimizer`` (momentum 0.9, weight decay 5e-4 on weights only), exactly as
  ``ssd_torch.training.train`` builds them; fp32 and bf16 autocast (the loss in float32), with the matcher on
  ``backend="torch"`` and ``"numba"``;
* inference: forward (fp32 / bf16 autocast) + ``ssd_torch.nms.postprocess`` (``backend="torch"`` and
  ``"numba"``). A random-init network scores every class almost uniformly, so every class has the full 400
  NMS candidates: the post-processing's worst case, slower than with a trained detector.

The images, gt boxes (1..8 per image) and labels are generated once on the device, so no data loading is
measured. Each setting: ``--warmup`` untimed steps (cuDNN autotuning), then ``--windows`` windows of
``--steps`` steps, each timed with CUDA events (wall clock on the CPU); the median window gives img/s.
JSON to ``gpu_train_<device>.json`` in the results folder (``benchmarks.common.default_results_dir``:
``runs/bench/``, ``benchmarks/results/`` when recording) (or ``--out``), rewritten after every setting so that a run
stopped by a time limit keeps what it measured.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from benchmarks.common import format_table, write_results

MODES = ("fp32", "bf16")


def synthetic_batch(batch: int, num_classes: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Images ``[B, 3, 300, 300]`` (channels_last) and a padded gt batch with 1..8 boxes per image."""
    gen = torch.Generator().manual_seed(seed)
    max_gt = 8
    counts = torch.randint(1, max_gt + 1, (batch,), generator=gen)
    centre = torch.rand(batch, max_gt, 2, generator=gen) * 0.6 + 0.2
    size = torch.rand(batch, max_gt, 2, generator=gen) * 0.3 + 0.05
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1)
    labels = torch.randint(1, num_classes, (batch, max_gt), generator=gen)
    images = torch.randn(batch, 3, 300, 300, generator=gen)
    return {"images": images.to(device).contiguous(memory_format=torch.channels_last),
            "boxes": boxes.to(device), "labels": labels.to(device), "counts": counts.to(device)}


def autocast(mode: str, device: torch.device) -> contextlib.AbstractContextManager:
    if mode == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def measure(step: Callable[[], Any], device: torch.device, batch: int, warmup: int, steps: int,
            windows: int) -> dict[str, Any]:
    """img/s of ``step`` (one batch each): the median over ``windows`` timed windows of ``steps`` steps."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(windows):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                step()
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            seconds = time.perf_counter() - t0
        rates.append(batch * steps / seconds)
    return {"img_per_s": statistics.median(rates), "windows_img_per_s": rates, "batch": batch,
            "steps_per_window": steps}


def train_step_fn(model: torch.nn.Module, priors: torch.Tensor, optimizer: torch.optim.Optimizer,
                  data: dict[str, torch.Tensor], mode: str, backend: str) -> Callable[[], None]:
    """One ``ssd-train`` optimizer step (``training.step.train_step``) on the fixed synthetic batch."""
    from ssd_torch.data.collate import Batch
    from ssd_torch.training.objective import build_objective
    from ssd_torch.training.step import amp_settings, train_step
    from ssd_torch.training.train_config import LossConfig

    device = data["images"].device
    match_fn, loss_fn = build_objective(LossConfig(backend=backend), priors, (0.1, 0.2))  # the presets' variances
    batch = Batch(data["images"], data["boxes"], data["labels"], data["counts"])
    amp_dtype, _ = amp_settings("none" if mode == "fp32" else mode, device)  # runtime.amp's names

    def step() -> None:
        train_step(model=model, micro_batches=[batch], match_fn=match_fn, loss_fn=loss_fn, optimizer=optimizer,
                   scaler=None, device=device, amp_dtype=amp_dtype, channels_last=True)

    return step


def inference_fn(model: torch.nn.Module, priors: torch.Tensor, data: dict[str, torch.Tensor], mode: str,
                 backend: str) -> Callable[[], None]:
    """Forward + post-processing to per-image detections (the detections are returned to Python)."""
    from ssd_torch.nms import postprocess

    device = data["images"].device

    def step() -> None:
        with torch.inference_mode():
            with autocast(mode, device):
                loc, conf = model(data["images"])
            postprocess(loc.float(), conf.float(), priors, backend=backend)

    return step


def build(preset: str, device: torch.device) -> tuple[torch.nn.Module, torch.Tensor, int]:
    """The model (channels_last, on ``device``), its priors and its number of classes."""
    from ssd_torch.modeling.model_config import PRESETS
    from ssd_torch.modeling.model import model_from_config
    from ssd_torch.priors import default_boxes

    cfg = PRESETS[preset]()
    model = model_from_config(cfg).to(device).to(memory_format=torch.channels_last)
    return model, default_boxes(cfg.prior_spec, device=device), cfg.num_classes


def run(args: argparse.Namespace, save: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """All settings in turn; ``save(results)`` after each one, so a run cut short still leaves its numbers."""
    from ssd_torch.training.model_setup import build_optimizer

    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    model, priors, num_classes = build(args.preset, device)
    data = synthetic_batch(args.batch, num_classes, device)
    results: dict[str, Any] = {"preset": args.preset, "batch": args.batch, "channels_last": True,
                               "train": [], "inference": []}
    optimizer = build_optimizer(model, lr=1e-4, momentum=0.9, weight_decay=5e-4)
    model.train()
    for mode, backend in args.train_settings:
        row = measure(train_step_fn(model, priors, optimizer, data, mode, backend), device, args.batch,
                      args.warmup, args.steps, args.windows)
        results["train"].append({"mode": mode, "match_backend": backend, **row})
        print(f"train     {mode:5s} match={backend:6s} {row['img_per_s']:9.1f} img/s", flush=True)
        save(_with_memory(results, device))
    model.eval()
    for mode, backend in args.inference_settings:
        row = measure(inference_fn(model, priors, data, mode, backend), device, args.batch, args.warmup,
                      args.steps, args.windows)
        results["inference"].append({"mode": mode, "nms_backend": backend, **row})
        print(f"inference {mode:5s} nms={backend:6s}   {row['img_per_s']:9.1f} img/s", flush=True)
        save(_with_memory(results, device))
    return results


def _with_memory(results: dict[str, Any], device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        results["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    return results


def _settings(text: str) -> list[tuple[str, str]]:
    """``"fp32:torch,bf16:numba"`` -> [("fp32", "torch"), ("bf16", "numba")]."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        mode, _, backend = item.partition(":")
        if mode not in MODES or backend not in ("torch", "numba"):
            raise argparse.ArgumentTypeError(f"bad setting {item!r}: want MODE:BACKEND, MODE in {MODES}, "
                                             f"BACKEND in torch/numba")
        out.append((mode, backend))
    return out


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="ssd300_vgg16", help="ssd_torch.modeling.model_config preset")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--train-settings", type=_settings, default=_settings("fp32:torch,bf16:torch,bf16:numba"))
    parser.add_argument("--inference-settings", type=_settings,
                        default=_settings("fp32:torch,bf16:torch,bf16:numba"))
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: runs/bench, benchmarks/results when recording)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    print(f"device {args.device}, preset {args.preset}, batch {args.batch}", flush=True)
    filename = f"gpu_train_{torch.device(args.device).type}.json"
    results = run(args, save=lambda partial: write_results(filename, partial, results_dir=args.out))
    rows = [["train", r["mode"], r["match_backend"], r["img_per_s"]] for r in results["train"]]
    rows += [["inference", r["mode"], r["nms_backend"], r["img_per_s"]] for r in results["inference"]]
    print(format_table(["what", "mode", "backend", "img/s"], rows))
    print(f"wrote {write_results(filename, results, results_dir=args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
