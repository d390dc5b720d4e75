"""``ssd-report RUN_DIR...``: the seed's results table (one Markdown row per training run); ``--plot FILE.png``
adds a loss-curve PNG, ``--markdown FILE`` writes the table to a file (neither replaces an existing file unless
``--overwrite``; a plain call writes nothing, so it works every time).

Reads what ``ssd-train`` (``ssd_torch.training.trainer`` and ``metrics_log``) leaves in a run folder —
``config.json`` (the resolved ``TrainConfig``), ``metrics.csv`` (per logged step: ``step, loss, lr,
images_per_s, ...``), ``epochs.csv`` (``seconds, images_per_s, peak_memory_mb``) and ``eval.csv`` (``step,
metric, mAP, seconds``, and a COCO evaluation's AP50, AP75, ..., voc_mAP) — and tolerates any of them being
absent or lacking a column: the cell then reads ``n/a``.

Columns: batch size, accumulation steps, effective batch (batch x accumulation x world size), LR (the peak LR
after linear scaling: ``base_lr * effective / reference_batch``, else the largest logged LR), mAP (the headline
of the last evaluation) and metric (which one it is: ``VOC07 mAP@0.5 (11-point)`` for VOC data, ``COCO
AP@[.5:.95]`` for COCO data; ``ssd_torch.evaluation.headline``), peak memory (MiB, the largest per-epoch value),
img/s (median over epochs), wall time (training epochs + evaluations).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ssd_torch.cli import UserError, run_cli
from ssd_torch.files import atomic_write, atomic_write_text, check_output_path, refuse_existing
from ssd_torch.run_files import CONFIG_FILE, EPOCHS_FILE, EVAL_FILE, METRICS_FILE
from ssd_torch.evaluation.headline import headline_label, headline_of_run
from ssd_torch.evaluation.visualize import read_csv_rows

__all__ = ["RunSummary", "summarize_run", "markdown_table", "plot_loss_curves", "main"]

HEADERS = ("run", "batch", "accum", "eff. batch", "LR", "mAP", "metric", "peak mem (MiB)", "img/s", "wall time")


@dataclass(frozen=True)
class RunSummary:
    """One row of the table; ``None`` means the run folder did not record it (shown as ``n/a``)."""

    name: str
    batch_size: int | None
    accumulation: int | None
    effective_batch: int | None
    lr: float | None
    mAP: float | None
    metric: str | None
    peak_memory_mb: float | None
    images_per_s: float | None
    wall_s: float | None


def _floats(rows: list[dict[str, str]], column: str) -> list[float]:
    """The finite numbers in ``column`` (missing column, blanks and non-numbers skipped)."""
    out = []
    for row in rows:
        try:
            value = float(row.get(column) or "nan")
        except ValueError:
            continue
        if math.isfinite(value):
            out.append(value)
    return out


def _get(d: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e})") from e
    return config if isinstance(config, dict) else {}


def _int_or_none(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _effective_lr(config: dict[str, Any], effective: int | None, step_rows: list[dict[str, str]]) -> float | None:
    """Linear scaling rule (base LR per ``reference_batch`` images), else the largest LR in metrics.csv."""
    base, ref = _get(config, "optim", "base_lr"), _get(config, "optim", "reference_batch") or 32
    if isinstance(base, (int, float)) and effective:
        return float(base) * effective / float(ref)
    lrs = _floats(step_rows, "lr")
    return max(lrs) if lrs else None


def summarize_run(run_dir: str | Path) -> RunSummary:
    """Summarise one run folder (see the module docstring for where each number comes from)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist")
    config = _read_config(run_dir)
    steps, epochs, evals = (read_csv_rows(run_dir / n) for n in (METRICS_FILE, EPOCHS_FILE, EVAL_FILE))
    if not (config or steps or epochs or evals):
        raise UserError(f"{run_dir} is not a training run folder (no {CONFIG_FILE}, {METRICS_FILE}, {EPOCHS_FILE} "
                        f"or {EVAL_FILE})")
    batch = _int_or_none(_get(config, "optim", "batch_size"))
    accum = _int_or_none(_get(config, "optim", "accumulation"))
    world = _int_or_none(_get(config, "runtime", "world_size")) or _int_or_none(config.get("world_size")) or 1
    effective = batch * accum * world if batch and accum else None
    maps, peaks, rates = _floats(evals, "mAP"), _floats(epochs, "peak_memory_mb"), _floats(epochs, "images_per_s")
    seconds = _floats(epochs, "seconds") + _floats(evals, "seconds")
    return RunSummary(name=run_dir.name, batch_size=batch, accumulation=accum, effective_batch=effective,
                      lr=_effective_lr(config, effective, steps), mAP=maps[-1] if maps else None,
                      metric=headline_of_run([r for r in evals if _floats([r], "mAP")]),
                      peak_memory_mb=max(peaks) if peaks else None,
                      images_per_s=statistics.median(rates) if rates else None,
                      wall_s=sum(seconds) if seconds else None)


def _fmt_wall(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _cells(s: RunSummary) -> list[str]:
    def fmt(v: Any, spec: str) -> str:
        return "n/a" if v is None else format(v, spec)

    return [s.name, fmt(s.batch_size, "d"), fmt(s.accumulation, "d"), fmt(s.effective_batch, "d"),
            fmt(s.lr, ".3g"), fmt(s.mAP, ".4f"), "n/a" if s.metric is None else headline_label(s.metric),
            fmt(s.peak_memory_mb, ".0f"), fmt(s.images_per_s, ".1f"),
            "n/a" if s.wall_s is None else _fmt_wall(s.wall_s)]


def markdown_table(summaries: Sequence[RunSummary]) -> str:
    """A GitHub-Markdown table, one row per run, numbers right-aligned."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join([":---"] + ["---:"] * (len(HEADERS) - 1)) + "|"]
    lines += ["| " + " | ".join(_cells(s)) + " |" for s in summaries]
    return "\n".join(lines)


def plot_loss_curves(run_dirs: Sequence[str | Path], out_png: str | Path) -> Path:
    """One line per run: training loss (metrics.csv ``loss``) against optimizer step, written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must precede pyplot
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for run_dir in map(Path, run_dirs):
        rows = [r for r in read_csv_rows(run_dir / METRICS_FILE) if _floats([r], "step") and _floats([r], "loss")]
        if rows:
            ax.plot(_floats(rows, "step"), _floats(rows, "loss"), label=run_dir.name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (loc + conf)")
    ax.set_title("Training loss")
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend()
    out_png = atomic_write(out_png, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)
    return out_png


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssd-report", description="Markdown table + loss curves of training runs.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders written by ssd-train")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="also write a PNG comparing the runs' loss curves (e.g. loss_curves.png)")
    p.add_argument("--markdown", default=None, help="also write the table to this file")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --plot / --markdown file (without it an existing file is kept and "
                        "nothing is written)")
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    outputs = [check_output_path(path, flag, folder=False)
               for flag, path in (("--plot", args.plot), ("--markdown", args.markdown)) if path]
    if not args.overwrite:
        refuse_existing(outputs, "ssd-report", "nothing was written: choose other --plot / --markdown names, or "
                                               "pass --overwrite to replace them")
    table = markdown_table([summarize_run(d) for d in args.run_dirs])
    print(table)
    if args.markdown:
        atomic_write_text(args.markdown, table + "\n")
    if args.plot:
        print(f"\nloss curves: {plot_loss_curves(args.run_dirs, args.plot)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, "ssd-report")


if __name__ == "__main__":
    raise SystemExit(main())
