"""The names of the files in a training run folder: the one list (``ssd-train`` writes them, the run folder's
ownership rule claims them, ``ssd-report`` and the curves read them).

Layout (``run.output_dir``)::

    written.jsonl               the manifest: the names this run claims (``ssd_torch.files.Journal``)
    config.json                 the config this run uses (rewritten when a resume changes a field)
    metrics.csv epochs.csv eval.csv   the logs (``ssd_torch.training.metrics_log``)
    curves.png                  loss / LR / mAP curves (written at the end and on a stop)
    checkpoints/step_XXXXXXXX.pt last.pt best.pt   (``ssd_torch.training.checkpoint.CheckpointManager``)
    tb/events.out.tfevents.*    tensorboard scalars (when enabled)
    detections/*.png            the demo's pictures (``python -m ssd_torch.demo``)
"""
from __future__ import annotations

__all__ = ["CONFIG_FILE", "METRICS_FILE", "EPOCHS_FILE", "EVAL_FILE", "CURVES_FILE", "CHECKPOINT_DIR",
           "TENSORBOARD_DIR", "DETECTIONS_DIR", "MANIFEST_FILE", "MANIFEST_FORMAT", "RUN_FILES", "RUN_PATTERNS"]

CONFIG_FILE = "config.json"
METRICS_FILE, EPOCHS_FILE, EVAL_FILE = "metrics.csv", "epochs.csv", "eval.csv"
CURVES_FILE = "curves.png"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tb"
DETECTIONS_DIR = "detections"
#: the run's manifest (``ssd_torch.files.Journal`` of this format): a file is the run's own only when it claims it
MANIFEST_FILE, MANIFEST_FORMAT = "written.jsonl", "ssd-train/1"
#: what a run writes, relative to the run folder: exact names, and glob patterns (a step file is
#: ``step_<digits>.pt``: a user's ``step_final.pt`` does not match)
RUN_FILES = (CONFIG_FILE, METRICS_FILE, EPOCHS_FILE, EVAL_FILE, CURVES_FILE, f"{CHECKPOINT_DIR}/last.pt",
             f"{CHECKPOINT_DIR}/best.pt")
RUN_PATTERNS = (f"{CHECKPOINT_DIR}/step_[0-9]*[0-9].pt", f"{TENSORBOARD_DIR}/events.out.tfevents.*",
                f"{DETECTIONS_DIR}/*.png")
