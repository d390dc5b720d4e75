"""The run's logs: ``metrics.csv`` (every logged step), ``epochs.csv``, ``eval.csv`` and, when tensorboard is
installed and enabled, the same scalars under ``tb/``.

``eval.csv`` has the columns ``step, epoch, metric, mAP, seconds`` (``metric`` says which metric ``mAP`` is:
``ssd_torch.evaluation.headline``) plus every other number an evaluation returns without a ``/`` in its name:
a COCO evaluation adds ``AP``, ``AP50``, ``AP75``, ``AP_small`` ... ``AR_large`` and ``voc_mAP`` (per-class APs,
``AP/<class>``, go to tensorboard only). When a row brings a column the file lacks (a COCO evaluation after VOC
rows, or a file written by an earlier version), the file is rewritten atomically with the wider header, the
earlier rows getting empty cells: every row always has the header's cells.

Rows are appended as training goes, whole (``ssd_torch.files.append_text``: a write that fails, e.g. on a full
disk, is cut back, never half a row). A resumed run first ``rewind``s the logs to the step of its checkpoint:
rows of later steps (logged by the interrupted run after that checkpoint) are dropped by an atomic rewrite, and
tensorboard purges its events after that step, so every step has exactly one row (``ssd-report`` reads them).
"""
from __future__ import annotations

import csv
import io
import math
import resource
from pathlib import Path
from typing import Any

import torch

from ssd_torch.files import append_text, atomic_write_text
from ssd_torch.run_files import EPOCHS_FILE, EVAL_FILE, METRICS_FILE, TENSORBOARD_DIR

__all__ = ["LOG_FILES", "OPEN_KINDS", "TENSORBOARD_DIR", "MetricsLogger", "peak_memory_mb"]

#: kind -> (file name, columns); every row has a ``step`` (optimizer steps done when it was logged).
LOG_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "step": (METRICS_FILE, ("step", "epoch", "loss", "loc_loss", "conf_loss", "lr", "num_pos", "images_per_s",
                             "grad_norm", "skipped_total")),
    "epoch": (EPOCHS_FILE, ("epoch", "step", "mean_loss", "seconds", "images_per_s", "peak_memory_mb")),
    "eval": (EVAL_FILE, ("step", "epoch", "metric", "mAP", "seconds")),
}
#: kinds whose rows may bring more columns than :data:`LOG_FILES` names (see the module docstring)
OPEN_KINDS = frozenset({"eval"})


def peak_memory_mb(device: torch.device) -> float:
    """CUDA max allocated (since the last reset) on a GPU, else the process's peak RSS (getrusage, KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MetricsLogger:
    """Appends rows to the CSV files of :data:`LOG_FILES` in ``run_dir`` (and tensorboard scalars)."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.tensorboard = tensorboard
        self.writer: Any = None
        self._purge_step: int | None = None

    def rewind(self, step: int) -> None:
        """Drop the rows logged after optimizer step ``step`` (atomic rewrite of each CSV that has such rows)."""
        for name, _ in LOG_FILES.values():
            path = self.run_dir / name
            if not path.is_file():
                continue
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                header, rows = reader.fieldnames or [], list(reader)
            keep = [r for r in rows if _step_of(r) <= step]
            if len(keep) != len(rows):
                _atomic_rewrite(path, header, keep)
        self._purge_step = step + 1

    def log(self, kind: str, row: dict[str, Any]) -> None:
        """``kind`` in :data:`LOG_FILES`; numbers also go to tensorboard as ``kind/name``."""
        name, fields = LOG_FILES[kind]
        path = self.run_dir / name
        wanted = list(fields)
        if kind in OPEN_KINDS:
            wanted += [k for k, v in row.items() if k not in fields and _extra_column(k, v)]
        header = _header(path)
        if header and any(c not in header for c in wanted):
            with path.open(newline="") as f:
                old_rows = list(csv.DictReader(f))
            header += [c for c in wanted if c not in header]
            _atomic_rewrite(path, header, old_rows)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        text = io.StringIO(newline="")
        w = csv.DictWriter(text, fieldnames=header or wanted, extrasaction="ignore")
        if not header:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in header or wanted})
        append_text(path, text.getvalue())  # whole rows: a full disk cuts the file back, never half a row
        self._tensorboard(kind, row)

    def _tensorboard(self, kind: str, row: dict[str, Any]) -> None:
        if self.tensorboard and self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(self.run_dir / TENSORBOARD_DIR), purge_step=self._purge_step)
            except Exception:  # noqa: BLE001 - tensorboard missing or broken: the CSV files still work
                self.tensorboard = False
        if self.writer is None:
            return
        for k, v in row.items():
            if k not in ("step", "epoch") and isinstance(v, (int, float)) and math.isfinite(v):
                self.writer.add_scalar(f"{kind}/{k}", v, row.get("step", 0))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _extra_column(name: str, value: Any) -> bool:
    """A CSV column of an open kind: a number or a string (not an object), not a per-class ``a/b`` entry."""
    return "/" not in name and isinstance(value, (int, float, str))


def _header(path: Path) -> list[str]:
    """The column names of an existing CSV log ([] when it is absent or empty)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return next(csv.reader(f), [])


def _step_of(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or "nan")
    except ValueError:
        return math.nan  # an unreadable row is dropped too (nan <= step is False)


def _atomic_rewrite(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=header, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, text.getvalue())
