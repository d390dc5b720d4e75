"""The run folder: recognising ssd-train's own files (its manifest), refusing / overwriting / keeping an earlier
run, and rewinding the CSV logs on resume."""
from __future__ import annotations

import csv

import pytest

from ssd_torch.cli import train
from ssd_torch.errors import ConfigError
from ssd_torch.training.metrics_log import MetricsLogger
from ssd_torch.training.run_folder import (check_new_run, claim_run_folder, keep_previous_run, owned_files,
                                           remove_previous_run)
from train_fixtures import csv_steps, tiny_run_args

OURS = ["config.json", "metrics.csv", "epochs.csv", "eval.csv", "curves.png", "checkpoints/step_00000300.pt",
        "checkpoints/last.pt", "checkpoints/best.pt", "checkpoints/.last.pt.ab12cd.tmp",
        "tb/events.out.tfevents.1700000000.host.1.0", "detections/000400.png"]
THEIRS = ["notes.txt", "checkpoints/step_final.pt", "checkpoints/my_model.pt", "checkpoints/best.pt.bak",
          "tb/readme.md", "detections/picked.jpg", "analysis/metrics.csv"]


def _touch(root, names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)


def test_owned_files_are_recognised_by_the_manifest_not_by_name(tmp_path):
    _touch(tmp_path, OURS + THEIRS)
    assert owned_files(tmp_path) == []  # no manifest: none of them is ours, whatever its name
    with pytest.raises(ConfigError, match="config.json.*did not write.*another --output-dir"):
        check_new_run(tmp_path, overwrite=True)  # a new run would replace them: refused even with --overwrite
    claim_run_folder(tmp_path)  # what a run does before writing anything
    assert sorted(str(p.relative_to(tmp_path)) for p in owned_files(tmp_path)) == sorted(OURS)
    with pytest.raises(ConfigError, match="already holds a run.*--resume auto.*--output-dir.*--overwrite"):
        check_new_run(tmp_path)
    check_new_run(tmp_path, overwrite=True)
    removed = remove_previous_run(tmp_path)
    assert len(removed) == len(OURS)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == sorted(THEIRS + ["written.jsonl"]) and all((tmp_path / n).read_text() == n for n in THEIRS)
    check_new_run(tmp_path)  # only the user's files are left: a new run may start here


def test_a_users_file_named_like_the_manifest_is_not_ours(tmp_path):
    _touch(tmp_path, ["written.jsonl"])
    with pytest.raises(ConfigError, match="written.jsonl.*did not write"):
        check_new_run(tmp_path, overwrite=True)


def test_user_files_alone_do_not_block_a_new_run(tmp_path):
    _touch(tmp_path, THEIRS)
    check_new_run(tmp_path)
    check_new_run(tmp_path / "absent")


def test_keep_previous_run_takes_the_first_free_name(tmp_path):
    run = tmp_path / "demo"
    assert keep_previous_run(run) is None  # nothing there
    run.mkdir()
    assert keep_previous_run(run) is None and run.is_dir()  # empty: used as is
    (tmp_path / "demo.1").mkdir()
    _touch(run, ["metrics.csv"])
    kept = keep_previous_run(run)
    assert kept == tmp_path / "demo.2" and (kept / "metrics.csv").read_text() == "metrics.csv"
    assert not run.exists() and (tmp_path / "demo.1").is_dir()


def _write_log(path, header, rows):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_rewind_drops_the_rows_after_the_resumed_step(tmp_path):
    _write_log(tmp_path / "metrics.csv", ["step", "loss"], [[s, 1.0 / s] for s in range(1, 8)])
    _write_log(tmp_path / "eval.csv", ["step", "mAP"], [[3, 0.1], [6, 0.2]])
    _write_log(tmp_path / "epochs.csv", ["epoch", "step"], [[0, 4]])
    before = (tmp_path / "epochs.csv").stat().st_mtime_ns
    MetricsLogger(tmp_path, tensorboard=False).rewind(4)
    assert csv_steps(tmp_path / "metrics.csv") == [1, 2, 3, 4]
    assert csv_steps(tmp_path / "eval.csv") == [3]
    assert (tmp_path / "epochs.csv").stat().st_mtime_ns == before  # nothing to drop: not rewritten
    with (tmp_path / "metrics.csv").open() as f:
        assert next(csv.reader(f)) == ["step", "loss"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epochs.csv", "eval.csv", "metrics.csv"]  # no temp left


@pytest.mark.slow
def test_resume_from_an_older_checkpoint_logs_every_step_once(tmp_path, capsys):
    """A run killed after step 3 whose newest checkpoint is step 2: resuming from it re-runs step 3, and
    metrics.csv / eval.csv keep one row per step (the rows after step 2 are dropped first)."""
    data, run = tmp_path / "syn", tmp_path / "run"
    assert train.main(tiny_run_args(data, run, "--set", "run.checkpoint_every=2", steps=3)) == 0
    assert csv_steps(run / "metrics.csv") == [1, 2, 3] and csv_steps(run / "eval.csv") == [3]
    older = run / "checkpoints" / "step_00000002.pt"
    assert train.main(tiny_run_args(data, run, "--set", "run.checkpoint_every=2", "--resume", str(older),
                                    steps=4)) == 0
    assert f"resumed from {older} at step 2" in capsys.readouterr().out
    assert csv_steps(run / "metrics.csv") == [1, 2, 3, 4] and csv_steps(run / "eval.csv") == [4]
