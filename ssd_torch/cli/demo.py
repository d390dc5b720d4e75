"""``make demo`` (``python -m ssd_torch.demo``): the whole pipeline on the embedded synthetic VOC data, on CPU.

1. generates the synthetic VOC tree into ``data/synthetic`` if missing (set-up, not timed; a folder holding
   anything else is refused);
2. trains the slim SSD300 with the ``demo`` training preset (``ssd_torch.training.train_config.demo``),
   evaluating every 5 epochs;
3. evaluates VOC07 mAP (11-point) on the held-out ``test`` split and prints the per-class AP table;
4. leaves in ``runs/demo/``: ``checkpoints/`` (last, best), ``metrics.csv`` / ``epochs.csv`` / ``eval.csv``,
   ``curves.png``, ``config.json`` and ``detections/*.png`` (a few test images with the detections drawn).

Re-runnable: a previous ``runs/demo/`` is kept as ``runs/demo.1/`` (``.2``, ... the first free name).
Ctrl-C stops after the current step with a checkpoint; ``--resume`` continues that run instead of starting a
new one. ``--quick`` runs a tiny version (a few images and steps) for an end-to-end test; ``--set`` overrides
any field of the training config (e.g. ``--set schedule.epochs=4``).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = ["demo_config", "draw_examples", "run_demo", "main"]


def demo_config(*, data_root: str | None, output_dir: str, quick: bool, overrides: Sequence[str] = (),
                resume: bool = False, generate: bool = False) -> Any:
    """The ``demo`` preset with the data and run folders set. ``data_root``: None is the demo's own synthetic
    tree (``data/synthetic``, ``data/synthetic_quick`` with ``quick``), generated when absent; a folder the
    user names is the user's data, read as a VOC year folder (it must exist), unless ``generate`` (a folder
    the caller owns, e.g. a benchmark's temporary one). ``quick``: 24 + 8 images, 2 steps of 4, an evaluation
    after each; ``resume``: continue the run in ``output_dir``."""
    from ssd_torch.training.datasets import user_data_root_overrides
    from ssd_torch.training.train_config import resolve_config
    root = data_root or f"data/synthetic{'_quick' if quick else ''}"
    sets = [f"data.roots={json.dumps([root])}", f"data.val_roots={json.dumps([root])}",
            f"run.output_dir={json.dumps(output_dir)}"]
    if data_root is not None and not generate:
        sets += user_data_root_overrides([data_root])
    if quick:
        sets += ["data.synthetic_trainval=24", "data.synthetic_test=8", "optim.batch_size=4", "schedule.epochs=1",
                 "schedule.max_steps=2", "schedule.warmup_iterations=0", "data.num_workers=0",
                 "run.progress=false", "run.log_every=1", "run.eval_batch_size=8", "run.eval_every=1"]
    if resume:
        sets.append('run.resume="auto"')
    return resolve_config("demo", None, [*sets, *overrides])


def draw_examples(checkpoint: Path, data: Any, out_dir: Path, count: int = 6,
                  score_threshold: float = 0.3) -> list[Path]:
    """Detections of ``checkpoint`` on the first ``count`` held-out images of the data section ``data``, drawn
    into ``out_dir`` as ``<image id>.png`` by ``ssd_torch.Detector`` (the checkpoint's own preprocessing and
    post-processing; boxes in 0-based continuous pixels, as ``ImageDetections.draw`` draws them)."""
    from ssd_torch import Detector
    from ssd_torch.labels import object_classes_of
    from ssd_torch.training.datasets import FirstN, build_val_set

    detector = Detector.from_checkpoint(checkpoint, device="cpu")
    subset = FirstN(build_val_set(data, object_classes_of(detector.categories)), count)
    images = [subset.load_image(i) for i in range(len(subset))]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (image, result) in enumerate(zip(images, detector(images))):
        path = out_dir / f"{Path(str(subset.annotation(i).image_id)).name}.png"
        result.draw(image, score_threshold=score_threshold).save(path)
        paths.append(path)
    return paths


def run_demo(cfg: Any) -> dict[str, Any]:
    """Set-up (untimed), training + evaluation (timed), pictures; returns mAP (and per class), seconds and the
    run folder (``stopped_by``: the signal that stopped training, 0 when it ran to its end)."""
    from ssd_torch.evaluation.evaluate import format_ap_table
    from ssd_torch.training.datasets import ensure_synthetic
    from ssd_torch.files import check_output_path
    from ssd_torch.training.run_folder import CHECKPOINT_DIR, DETECTIONS_DIR, check_keepable, keep_previous_run
    from ssd_torch.training.train import run_training

    check_output_path(cfg.data.roots[0], "--data-root", folder=True)  # path mistakes before any slow work
    if cfg.run.resume is None:
        check_keepable(cfg.run.output_dir)
    else:
        check_output_path(cfg.run.output_dir, "--output-dir", folder=True)
    ensure_synthetic(cfg.data)  # first: a refused data folder leaves the run folder alone too
    if cfg.run.resume is None:
        kept = keep_previous_run(cfg.run.output_dir)
        if kept is not None:
            print(f"kept the previous {cfg.run.output_dir} as {kept}")
    start = time.perf_counter()
    summary = run_training(cfg)
    seconds = time.perf_counter() - start
    run_dir = Path(summary["run_dir"])
    if summary["stopped_by"]:
        return {"stopped_by": summary["stopped_by"], "steps": summary["step"], "run_dir": str(run_dir)}
    result = summary["last_eval"].get("result")
    if result is not None:
        print("\nVOC07 11-point AP on the synthetic test split:")
        print(format_ap_table(result, summary["class_names"]))
    best = run_dir / CHECKPOINT_DIR / "best.pt"
    pictures = draw_examples(best if best.is_file() else run_dir / CHECKPOINT_DIR / "last.pt", cfg.data,
                             run_dir / DETECTIONS_DIR)
    final_map = summary["last_metrics"].get("mAP")
    print(f"\ndemo: final mAP {final_map:.4f} (best {summary['best_map']:.4f}) after {summary['step']} steps; "
          f"training + evaluation took {seconds:.0f} s; results in {run_dir}/ "
          f"({len(pictures)} pictures in {run_dir / DETECTIONS_DIR})")
    per_class = {} if result is None else {summary["class_names"][c]: ap for c, ap in result.ap.items()}
    return {"mAP": final_map, "best_mAP": summary["best_map"], "seconds": seconds, "run_dir": str(run_dir),
            "steps": summary["step"], "pictures": [str(p) for p in pictures], "stopped_by": 0,
            "per_class_AP": per_class}


def _main(argv: Sequence[str] | None) -> int:
    from ssd_torch.training.interrupt import exit_code

    p = argparse.ArgumentParser(prog="python -m ssd_torch.demo", description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("--data-root", help="your own VOC year folder to train on (it must exist); default: the demo's "
                                       "synthetic tree data/synthetic (with --quick data/synthetic_quick), "
                                       "generated when absent")
    p.add_argument("--output-dir", help="run folder; an existing one is kept as <folder>.1 (.2, ...) unless "
                                        "--resume (default runs/demo, with --quick runs/demo_quick)")
    p.add_argument("--resume", action="store_true", help="continue the (interrupted) run in --output-dir")
    p.add_argument("--quick", action="store_true", help="a tiny run (seconds) for end-to-end tests")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a training-config field (value as JSON); repeatable")
    args = p.parse_args(argv)
    suffix = "_quick" if args.quick else ""  # the quick tree has other parameters: it never meets the full one
    cfg = demo_config(data_root=args.data_root,
                      output_dir=args.output_dir or f"runs/demo{suffix}", quick=args.quick, overrides=args.set,
                      resume=args.resume)
    try:
        out = run_demo(cfg)
    except KeyboardInterrupt:  # a second Ctrl-C
        print(f"demo: aborted at once; the latest checkpoint (if any) is in {cfg.run.output_dir}/checkpoints",
              file=sys.stderr)
        return exit_code(2)
    if out["stopped_by"]:
        given = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--resume"]
        again = " ".join(shlex.quote(a) for a in [*given, "--resume"])
        print(f"demo: interrupted at step {out['steps']}; resume with: python -m ssd_torch.demo {again}",
              file=sys.stderr)
        return exit_code(out["stopped_by"])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from ssd_torch.cli import run_cli
    return run_cli(_main, argv, "demo")


if __name__ == "__main__":
    sys.exit(main())
