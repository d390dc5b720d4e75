"""Output paths that cannot be written (issue #20 s5): each is one line and exit 2, checked before any slow work
(a model load, data generation), by one check (``ssd_torch.files.check_output_path``) in every tool.

Reproduced defects: ``ssd-train --output-dir FILE``, an output under a file (``--out photo.jpg/sub``) in the
tools, ``ssd-report --plot DIR`` and ``python -m ssd_torch.demo --quick --output-dir .`` ended in tracebacks.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from ssd_torch.cli import demo, detect, export, import_checkpoint, report, train
from ssd_torch.cli import eval as eval_cli
from train_fixtures import one_line, tiny_run_args


def _tools(tmp: Path, out: Path) -> dict:
    """tool -> (main, argv writing to ``out``); inputs do not exist: the output check must come first."""
    ckpt, data = str(tmp / "missing.pt"), tmp / "data"
    return {
        "ssd-train": (train.main, tiny_run_args(data, out)),
        "ssd-eval": (eval_cli.main, [ckpt, "--data", str(data), "--out", str(out)]),
        "ssd-detect": (detect.main, [ckpt, str(tmp / "photos"), "--out", str(out)]),
        "ssd-export": (export.main, [ckpt, "--onnx", str(out / "model.onnx")]),
        "ssd-report --plot": (report.main, [str(tmp / "run"), "--plot", str(out / "c.png")]),
        "ssd-report --markdown": (report.main, [str(tmp / "run"), "--markdown", str(out / "t.md")]),
        "ssd-import": (import_checkpoint.main, ["torchvision", str(tmp / "peer.pth"), "--out", str(out / "x.pt")]),
        "demo": (demo.main, ["--quick", "--data-root", str(data), "--output-dir", str(out)]),
    }


@pytest.mark.parametrize("tool", sorted(_tools(Path("t"), Path("o"))))
def test_an_output_under_a_file_is_one_line_in_every_tool(tool: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "photo.jpg").write_bytes(b"the user's photo")
    main, argv = _tools(tmp_path, tmp_path / "photo.jpg" / "sub")[tool]
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert f"lies under {tmp_path / 'photo.jpg'}, which is a file" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.jpg"]  # nothing generated, nothing written
    assert (tmp_path / "photo.jpg").read_bytes() == b"the user's photo"


@pytest.mark.parametrize("tool", ["ssd-train", "ssd-eval", "ssd-detect", "demo"])
def test_an_output_folder_that_is_a_file_is_one_line(tool: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("the user's notes")
    main, argv = _tools(tmp_path, tmp_path / "notes.txt")[tool]
    assert main(argv) == 2
    assert f"{tmp_path / 'notes.txt'} is a file, not a folder" in one_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_report_plot_into_a_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("step,loss\n1,3.0\n")
    assert report.main([str(run), "--plot", str(tmp_path)]) == 2
    assert f"--plot {tmp_path} is a folder" in one_line(capsys.readouterr().err)


def test_demo_in_the_working_folder_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("the user's notes")
    for folder in (".", str(tmp_path), ".."):
        assert demo.main(["--quick", "--output-dir", folder]) == 2
        line = one_line(capsys.readouterr().err)
        assert "working folder" in line and "--output-dir runs/demo" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no data generated, nothing renamed
