"""``make demo`` (``python -m ssd_torch.training.demo``): the whole pipeline on the embedded synthetic VOC data, on CPU.

1. generates the synthetic VOC tree into ``data/synthetic`` if missing (set-up, not timed);
2. trains the slim SSD300 with the ``demo`` training preset (``ssd_torch.training.train_config.demo``);
3. evaluates VOC07 mAP (11-point) on the held-out ``test`` split and prints the per-class AP table;
4. leaves in ``runs/demo/``: ``checkpoints/`` (last, best), ``metrics.csv`` / ``epochs.csv`` / ``eval.csv``,
   ``curves.png``, ``config.json`` and ``detections/*.png`` (a few test images with the detections drawn).

``--quick`` runs a tiny version (a few images and steps) for an end-to-end test; ``--set`` overrides any field
of the training config (e.g. ``--set schedule.epochs=4``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

__all__ = ["demo_config", "draw_examples", "run_demo", "main"]


def demo_config(*, data_root: str, output_dir: str, quick: bool, overrides: Sequence[str] = ()) -> Any:
    """The ``demo`` preset with the data and run folders set; ``quick``: 24 + 8 images, 2 steps of 4."""
    from ssd_torch.training.train_config import resolve_config
    sets = [f"data.roots={json.dumps([data_root])}", f"data.val_roots={json.dumps([data_root])}",
            f"run.output_dir={json.dumps(output_dir)}"]
    if quick:
        sets += ["data.synthetic_trainval=24", "data.synthetic_test=8", "optim.batch_size=4", "schedule.epochs=1",
                 "schedule.max_steps=2", "schedule.warmup_iterations=0", "data.num_workers=0",
                 "run.progress=false", "run.log_every=1", "run.eval_batch_size=8"]
    return resolve_config("demo", None, [*sets, *overrides])


def draw_examples(checkpoint: Path, dataset: Any, out_dir: Path, count: int = 6,
                  score_threshold: float = 0.3) -> list[Path]:
    """Detections of ``checkpoint`` on the first ``count`` images of ``dataset`` drawn into ``out_dir``."""
    from ssd_torch.evaluation.evaluate import run_inference
    from ssd_torch.inference import load_model_for_inference
    from ssd_torch.priors import default_boxes
    from ssd_torch.training.train import _FirstN
    from ssd_torch.evaluation.visualize import draw_detections

    model, cfg, names = load_model_for_inference(checkpoint, "cpu")
    subset = _FirstN(dataset, count)
    dets = run_inference(model, subset, default_boxes(cfg.prior_spec), batch_size=count)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(len(subset)):
        ann = subset.annotation(i)
        boxes, scores, labels = dets[ann.image_id]
        image = dataset.load_image(i)
        path = out_dir / f"{Path(str(ann.image_id)).name}.png"
        draw_detections(image, boxes, scores, labels, names, score_threshold=score_threshold).save(path)
        paths.append(path)
    return paths


def run_demo(cfg: Any) -> dict[str, Any]:
    """Set-up (untimed), training + evaluation (timed), pictures; returns mAP, seconds and the run folder."""
    from ssd_torch.evaluation.evaluate import format_ap_table
    from ssd_torch.training.train import _ensure_synthetic, build_datasets, run_training

    d = cfg.data
    _ensure_synthetic(Path(d.roots[0]), d.synthetic_trainval, d.synthetic_test, d.synthetic_seed, rank=0)
    start = time.perf_counter()
    summary = run_training(cfg)
    seconds = time.perf_counter() - start
    run_dir = Path(summary["run_dir"])
    result = summary["last_eval"].get("result")
    if result is not None:
        print("\nVOC07 11-point AP on the synthetic test split:")
        print(format_ap_table(result, summary["class_names"]))
    _, val_set, _ = build_datasets(
        dataset=d.dataset, roots=d.roots, train_split=d.train_split, val_roots=d.val_roots,
        val_split=d.val_split, augment="none", keep_difficult=d.keep_difficult, skip_bad=d.skip_bad,
        synthetic_trainval=d.synthetic_trainval, synthetic_test=d.synthetic_test,
        synthetic_seed=d.synthetic_seed, max_train_images=None, max_val_images=None)
    best = run_dir / "checkpoints" / "best.pt"
    pictures = draw_examples(best if best.is_file() else run_dir / "checkpoints" / "last.pt", val_set,
                             run_dir / "detections")
    final_map = summary["last_metrics"].get("mAP")
    print(f"\ndemo: final mAP {final_map:.4f} (best {summary['best_map']:.4f}) after {summary['step']} steps; "
          f"training + evaluation took {seconds:.0f} s; results in {run_dir}/ "
          f"({len(pictures)} pictures in {run_dir / 'detections'})")
    return {"mAP": final_map, "best_mAP": summary["best_map"], "seconds": seconds, "run_dir": str(run_dir),
            "steps": summary["step"], "pictures": [str(p) for p in pictures]}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssd_torch.training.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="data/synthetic", help="synthetic VOC tree (generated if missing)")
    p.add_argument("--output-dir", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="a tiny run (seconds) for end-to-end tests")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a training-config field (value as JSON); repeatable")
    args = p.parse_args(argv)
    try:
        cfg = demo_config(data_root=args.data_root, output_dir=args.output_dir, quick=args.quick,
                          overrides=args.set)
    except (ValueError, TypeError) as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    if cfg.runtime.num_threads:
        torch.set_num_threads(cfg.runtime.num_threads)
    run_demo(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
