"""Pictures: detections drawn on an image (``ssd-detect``, the demo) and the loss / LR curves of a run.

Boxes here are PIXELS, xyxy, in the 0-based continuous convention of ``ssd_torch.Detector`` (``x = x_normalized *
width``: what ``PIL.ImageDraw`` draws); ``ImageDetections.draw`` (ssd-detect, the demo's pictures) calls
:func:`draw_detections`.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ssd_torch.errors import UserError
from ssd_torch.evaluation.headline import headline_label, headline_of_run
from ssd_torch.files import atomic_write
from ssd_torch.run_files import CURVES_FILE, EVAL_FILE, METRICS_FILE

__all__ = ["class_colour", "draw_detections", "plot_training_curves", "read_csv_rows"]

_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
            (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
            (0, 0, 128), (128, 128, 128)]


def class_colour(label: int) -> tuple[int, int, int]:
    """A stable, distinct RGB colour per class label (1..C-1)."""
    return _PALETTE[(int(label) - 1) % len(_PALETTE)]


def draw_detections(image: Image.Image, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                    class_names: Sequence[str], score_threshold: float = 0.3, line_width: int = 2) -> Image.Image:
    """A copy of ``image`` (RGB) with each detection of score >= ``score_threshold`` drawn as a rectangle and a
    ``"name 0.87"`` tag. ``boxes[D, 4]`` pixels xyxy, ``scores[D]``, ``labels[D]`` indexing ``class_names``
    (index 0 = background)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"draw_detections: {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels")
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    for i in np.argsort(scores, kind="stable"):  # best drawn last, on top
        if scores[i] < score_threshold:
            continue
        colour = class_colour(int(labels[i]))
        x0, y0, x1, y1 = boxes[i].tolist()
        # a degenerate box (max < min, e.g. VOC pixels of a sub-pixel box: +1 on the min corner) is a point
        x1, y1 = max(x0, x1), max(y0, y1)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=line_width)
        label = int(labels[i])
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        text = f"{name} {scores[i]:.2f}"
        tx0, ty0, tx1, ty1 = draw.textbbox((x0, y0), text, font=font)
        ty = y0 - (ty1 - ty0) - 2 if y0 - (ty1 - ty0) - 2 >= 0 else y0
        draw.rectangle([x0, ty, x0 + (tx1 - tx0) + 4, ty + (ty1 - ty0) + 2], fill=colour)
        draw.text((x0 + 2, ty), text, fill=(0, 0, 0), font=font)
    return out


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a run's CSV log (``metrics.csv``, ``epochs.csv``, ``eval.csv``: a header, then one dict per
    row), or ``[]`` when the file is absent or empty. The one reader of ``ssd-report`` and the curves here."""
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: not a CSV text file as ssd-train writes ({type(e).__name__}); the run folder "
                        f"holds a damaged log: move it away, or point ssd-report at another run") from None


def _column(rows: list[dict[str, str]], key: str) -> np.ndarray:
    vals = []
    for r in rows:
        try:
            vals.append(float(r.get(key, "nan") or "nan"))
        except ValueError:
            vals.append(math.nan)
    return np.asarray(vals, dtype=np.float64)


def plot_training_curves(run_dir: str | Path, out_name: str = CURVES_FILE) -> Path | None:
    """Loss (total, loc, conf), LR and — when ``eval.csv`` exists — the evaluations' headline metric (labelled
    by ``ssd_torch.evaluation.headline``) against the step, from the run's ``metrics.csv``; written as
    ``run_dir/out_name`` (matplotlib, Agg backend). None if nothing was logged."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_csv_rows(run_dir / METRICS_FILE)
    if not rows:
        return None
    evals = read_csv_rows(run_dir / EVAL_FILE)
    step = _column(rows, "step")
    fig, axes = plt.subplots(1, 3 if evals else 2, figsize=(15 if evals else 10, 4))
    for key in ("loss", "loc_loss", "conf_loss"):
        axes[0].plot(step, _column(rows, key), label=key)
    axes[0].set(xlabel="optimizer step", ylabel="loss", title="MultiBox loss (sum / N)")
    axes[0].legend()
    axes[1].plot(step, _column(rows, "lr"))
    axes[1].set(xlabel="optimizer step", ylabel="learning rate", title="LR")
    if evals:
        axes[2].plot(_column(evals, "step"), _column(evals, "mAP"), marker="o")
        axes[2].set(xlabel="optimizer step", ylabel=headline_label(headline_of_run(evals)), title="held-out mAP",
                    ylim=(0, 1))
    fig.tight_layout()
    path = atomic_write(run_dir / out_name, lambda f: fig.savefig(f, format="png", dpi=90))
    plt.close(fig)
    return path
