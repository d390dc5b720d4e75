"""ssd-report on two fake run folders (the files ssd-train writes), one of them incomplete."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ssd_torch.cli import report


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def _full_run(root: Path) -> Path:
    run = root / "bs8_acc4"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(
        {"name": "x", "optim": {"batch_size": 8, "accumulation": 4, "base_lr": 1e-3, "reference_batch": 32}}))
    _write_csv(run / "metrics.csv", ["step", "epoch", "loss", "lr", "images_per_s"],
               [{"step": s, "epoch": 0, "loss": 10.0 / s, "lr": 1e-3, "images_per_s": 5.0} for s in (1, 2, 3)])
    _write_csv(run / "epochs.csv", ["epoch", "step", "mean_loss", "seconds", "images_per_s", "peak_memory_mb"],
               [{"epoch": 0, "step": 2, "mean_loss": 5, "seconds": 3600, "images_per_s": 10.0, "peak_memory_mb": 900},
                {"epoch": 1, "step": 3, "mean_loss": 4, "seconds": 60, "images_per_s": 30.0, "peak_memory_mb": 1200},
                {"epoch": 2, "step": 4, "mean_loss": 4, "seconds": 1, "images_per_s": 20.0, "peak_memory_mb": 1000}])
    _write_csv(run / "eval.csv", ["step", "epoch", "mAP", "seconds"],
               [{"step": 2, "epoch": 0, "mAP": 0.5, "seconds": 2}, {"step": 3, "epoch": 1, "mAP": 0.75, "seconds": 2}])
    return run


def _partial_run(root: Path) -> Path:
    """No config.json, no eval.csv, and a metrics.csv without an lr column."""
    run = root / "partial"
    run.mkdir()
    _write_csv(run / "metrics.csv", ["step", "loss"], [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5}])
    return run


def test_summary_reads_each_column(tmp_path: Path) -> None:
    s = report.summarize_run(_full_run(tmp_path))
    assert (s.batch_size, s.accumulation, s.effective_batch) == (8, 4, 32)
    assert s.lr == pytest.approx(1e-3)  # base LR per 32 images x 32 / 32
    assert s.mAP == 0.75  # the last evaluation, not the best one
    assert s.peak_memory_mb == 1200
    assert s.images_per_s == 20.0  # median over epochs
    assert s.wall_s == 3600 + 60 + 1 + 2 + 2


def test_missing_columns_read_na(tmp_path: Path) -> None:
    s = report.summarize_run(_partial_run(tmp_path))
    assert s.batch_size is None and s.mAP is None and s.lr is None and s.wall_s is None
    row = report.markdown_table([s]).splitlines()[-1]
    assert row.count("n/a") == 9  # every cell but the run name


def test_cli_table_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = [_full_run(tmp_path), _partial_run(tmp_path)]
    png, md = tmp_path / "out" / "curves.png", tmp_path / "table.md"
    assert report.main([str(r) for r in runs] + ["--plot", str(png), "--markdown", str(md)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("|")]
    assert len(lines) == 4  # header, separator, two runs
    # an eval.csv without a metric column was written when ssd-train evaluated VOC07 only
    assert lines[2].split("|")[1:-1] == [" bs8_acc4 ", " 8 ", " 4 ", " 32 ", " 0.001 ", " 0.7500 ",
                                          " VOC07 mAP@0.5 (11-point) ", " 1200 ", " 20.0 ", " 1:01:05 "]
    assert md.read_text().strip() == "\n".join(lines)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_run_folder_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "nope")]) == 2
    assert "nope does not exist" in capsys.readouterr().err
    assert report.main([str(tmp_path / "empty")]) == 2
    assert "not a training run folder" in capsys.readouterr().err


def test_a_coco_run_reports_its_headline_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """eval.csv of a COCO training: ``mAP`` is pycocotools' AP@[.5:.95] and the ``metric`` column says so; the
    table names it (the VOC mAP of the same detections, ``voc_mAP``, is not the headline)."""
    run = tmp_path / "coco_run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": {"dataset": "coco"}, "optim": {"batch_size": 4,
                                                                                       "accumulation": 1}}))
    _write_csv(run / "eval.csv", ["step", "epoch", "metric", "mAP", "seconds", "AP", "AP50", "voc_mAP"],
               [{"step": 5, "epoch": 0, "metric": "coco", "mAP": 0.125, "seconds": 1, "AP": 0.125, "AP50": 0.3,
                 "voc_mAP": 0.4}])
    s = report.summarize_run(run)
    assert (s.mAP, s.metric) == (0.125, "coco")
    assert report.main([str(run), "--plot", str(tmp_path / "c.png")]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| coco_run")][0]
    assert row.split("|")[6:8] == [" 0.1250 ", " COCO AP@[.5:.95] "]
