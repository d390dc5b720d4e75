"""Inputs that are not what they claim, each one line and exit 2 (reproduced as tracebacks first): a --config
file that is not UTF-8, nested 100,000 deep, a folder or a photo; ssd-report on a run whose CSV is not text;
--resume on a checkpoint whose ``model`` is not a state dict."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cli_fixtures import tiny_checkpoint_dict
from ssd_torch.cli import report, train
from train_fixtures import one_line, tiny_run_args


@pytest.mark.parametrize("content, fragment", [
    (b"\xff\xfe{\"a\": 1}", "is not UTF-8 text"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"\xff\xd8\xff\xe0 a JPEG", "is not UTF-8 text"),
])
def test_a_config_file_that_is_not_a_config(tmp_path: Path, capsys, content: bytes, fragment: str) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(content)
    assert train.main(["--preset", "demo", "--config", str(path), "--output-dir", str(tmp_path / "r")]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(path) in line and fragment in line
    assert not (tmp_path / "r").exists()


def test_a_config_folder(tmp_path: Path, capsys) -> None:
    assert train.main(["--preset", "demo", "--config", str(tmp_path), "--output-dir", str(tmp_path / "r")]) == 2
    assert "is a folder, not a JSON config file" in one_line(capsys.readouterr().err)


def test_ssd_report_on_a_csv_that_is_not_text(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_bytes(b"\x00\x01\xff\xfe")
    assert report.main([str(run)]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(run / "metrics.csv") in line and "not a CSV text file" in line


def test_resume_on_a_checkpoint_whose_model_is_not_a_state_dict(tmp_path: Path, capsys) -> None:
    ckpt = tiny_checkpoint_dict(["background", "circle", "square", "triangle", "ring", "cross", "star"], seed=0)
    ckpt["model"] = [1, 2, 3]
    path = tmp_path / "odd.pt"
    torch.save(ckpt, path)
    assert train.main(tiny_run_args(tmp_path / "syn", tmp_path / "run", "--resume", str(path))) == 2
    line = one_line(capsys.readouterr().err)
    assert str(path) in line and "state dict" in line
