"""Full disks and read-only folders (issue #19 s5): every tool ends in ONE line (exit 2) naming what was being
written, the folder, what is safe on disk and how to go on (``ssd_torch.cli.run_cli`` with
``ssd_torch.files.disk_error_line``), and what was on disk before stays whole.

Reproduced defects: a full disk while writing a checkpoint, while appending to metrics.csv, in ssd-detect or
ssd-export, and a read-only output folder in any tool ended in a traceback (exit 1) with the ENOSPC buried in a
chained exception; atomic writes created files with mode 0600 whatever the umask. Tests run as root, so a
full disk and a read-only or forbidden folder are simulated by monkeypatching the OS call that meets them.
"""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

import pytest
import torch

from cli_fixtures import write_tiny_checkpoint
from ssd_torch.cli import detect, export, report, train
from ssd_torch.data.synthetic import SYNTHETIC_CLASSES, render_image
from ssd_torch.files import WriteFailed, append_text, atomic_write, atomic_write_text, disk_error_line
from ssd_torch.training.checkpoint import CheckpointManager
from ssd_torch.training.metrics_log import MetricsLogger
from train_fixtures import csv_steps, one_line, tiny_run_args

NAMES = ["background", *SYNTHETIC_CLASSES]


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_new_files_get_the_mode_a_plain_open_gives(tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        made = [atomic_write_text(tmp_path / "a.json", "{}"), append_text(tmp_path / "b.csv", "x\n")]
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert want == 0o666 & ~mask
    assert [stat.S_IMODE(p.stat().st_mode) for p in made] == [want, want]
    os.chmod(made[0], 0o600)  # a file the user restricted keeps its mode when it is replaced
    atomic_write_text(made[0], "[]")
    assert stat.S_IMODE(made[0].stat().st_mode) == 0o600


def test_atomic_write_on_a_full_disk_names_its_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    target.write_text("the previous results")

    def half_then_full(f):
        f.write(b"half of it")
        _full_disk()

    with pytest.raises(WriteFailed) as info:
        atomic_write(target, half_then_full)
    line = disk_error_line(info.value)
    assert "no space left" in line and "results.json" in line and str(tmp_path) in line and "ENOSPC" in line
    assert target.read_text() == "the previous results" and sorted(tmp_path.iterdir()) == [target]


def _step_ckpt(step: int) -> dict:
    return {"step": step, "weights": torch.full((1000,), float(step))}


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    manager = CheckpointManager(tmp_path / "checkpoints")
    manager.save(_step_ckpt(1))
    real_save = torch.save

    def save_then_full(obj, f, *args, **kwargs):  # what torch.save does when the disk fills up mid-file
        real_save(obj, f, *args, **kwargs)
        _full_disk()

    monkeypatch.setattr(torch, "save", save_then_full)
    with pytest.raises(Exception) as info:
        manager.save(_step_ckpt(2))
    assert "step_00000002.pt" in disk_error_line(info.value)
    monkeypatch.undo()
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "step_00000001.pt"]  # no temp file left
    for name in ("last.pt", "step_00000001.pt"):
        assert torch.load(folder / name)["step"] == 1


def test_a_full_disk_while_logging_leaves_whole_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log("step", {"step": 1, "loss": 2.0})
    before = (tmp_path / "metrics.csv").read_bytes()
    real_write = os.write

    def some_bytes_then_full(fd, data):
        if len(data) > 4:
            real_write(fd, bytes(data[:4]))  # the disk takes the start of the row, then is full
            return 4
        _full_disk()

    monkeypatch.setattr(os, "write", some_bytes_then_full)
    with pytest.raises(WriteFailed) as info:
        logger.log("step", {"step": 2, "loss": 1.5})
    monkeypatch.undo()
    assert "metrics.csv" in disk_error_line(info.value)
    assert (tmp_path / "metrics.csv").read_bytes() == before  # cut back: no half row
    logger.log("step", {"step": 2, "loss": 1.5})
    assert csv_steps(tmp_path / "metrics.csv") == [1, 2]


def _picture(path: Path, seed: int) -> Path:
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    render_image(96, 64, np.random.default_rng(seed))[0].save(path)
    return path


@pytest.mark.slow  # three ssd-detect runs: 8 s on a 2-core machine
def test_detect_on_a_full_disk_is_one_line_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt", NAMES)
    src, out = tmp_path / "in", tmp_path / "out"
    _picture(src / "a.png", 1), _picture(src / "b.png", 2)
    argv = [str(checkpoint), str(src), "--out", str(out), "--device", "cpu", "--batch-size", "1"]
    real_mkstemp, calls = tempfile.mkstemp, []

    def full_at_the_second_drawing(*args, **kwargs):
        calls.append(kwargs.get("prefix", ""))
        if ".b.png.png." in calls:
            _full_disk()
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", full_at_the_second_drawing)
    assert detect.main(argv) == 2
    monkeypatch.undo()
    line = one_line(capsys.readouterr().err)
    assert "no space left" in line and "b.png.png" in line and str(out) in line and "--resume" in line
    assert detect.main(argv + ["--resume"]) == 0
    assert "resuming: 1 of 2 images already done" in capsys.readouterr().out


@pytest.mark.parametrize("code, words", [(errno.EROFS, "read-only"), (errno.EACCES, "permission denied")])
def test_export_and_report_into_a_folder_that_takes_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str], code: int,
                                                           words: str) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt", NAMES)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("step,loss\n1,3.0\n")
    out = tmp_path / "ro"

    def refused(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(out / ".model.onnx.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    assert export.main([str(checkpoint), "--onnx", str(out / "model.onnx")]) == 2
    line = one_line(capsys.readouterr().err)
    assert words in line and "model.onnx" in line and str(out) in line and "--overwrite" in line
    assert report.main([str(run), "--markdown", str(out / "table.md")]) == 2
    line = one_line(capsys.readouterr().err)
    assert words in line and "table.md" in line


def test_ssd_train_into_a_read_only_folder_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data, run = tmp_path / "syn", tmp_path / "ro" / "run"
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self == run:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert train.main(tiny_run_args(data, run)) == 2
    line = one_line(capsys.readouterr().err)
    assert "read-only" in line and str(run) in line and "--resume auto" in line
    assert not data.exists()  # refused before the data was generated


@pytest.mark.slow
def test_ssd_train_on_a_full_disk_keeps_its_checkpoint_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    data, run = tmp_path / "syn", tmp_path / "run"
    real_save = torch.save

    def full_at_step_2(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 2:
            f.write(b"the start of a checkpoint")
            _full_disk()
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_at_step_2)
    assert train.main(tiny_run_args(data, run, "--set", "run.checkpoint_every=1", steps=2)) == 2
    monkeypatch.undo()
    line = one_line(capsys.readouterr().err)
    assert "no space left" in line and str(run / "checkpoints") in line and "--resume auto" in line
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=False)["step"] == 1
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    assert train.main(tiny_run_args(data, run, "--set", "run.checkpoint_every=1", "--resume", "auto",
                                    steps=2)) == 0
    assert csv_steps(run / "metrics.csv") == [1, 2]
