"""ssd-eval and ssd-report never replace a file they did not write for this very evaluation / report.

Reproduced defects: ``ssd-eval`` of a second checkpoint into the same ``--out`` silently replaced the first
checkpoint's ``results_voc07.json``; ``ssd-report`` replaced an existing ``loss_curves.png`` (then its default name,
in the working folder) and an existing ``--markdown`` file; a second plain ``ssd-report`` refused because of its
own default plot.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_fixtures import write_tiny_checkpoint
from ssd_torch.cli import eval as eval_cli
from ssd_torch.cli import report
from ssd_torch.data.synthetic import SYNTHETIC_CLASSES, generate_voc

NAMES = ["background", *SYNTHETIC_CLASSES]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_voc(tmp_path_factory.mktemp("voc") / "VOC2007", 2, 2, seed=3, image_size=(96, 80))


def _eval(checkpoint: Path, tree: Path, out: Path, *extra: str) -> int:
    return eval_cli.main([str(checkpoint), "--data", str(tree), "--split", "test", "--device", "cpu",
                          "--out", str(out), "--no-progress", *extra])


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_eval_keeps_another_evaluations_results(tree: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    first = write_tiny_checkpoint(tmp_path / "first.pt", NAMES, seed=0)
    second = write_tiny_checkpoint(tmp_path / "second.pt", NAMES, seed=1)
    out = tmp_path / "eval"
    assert _eval(first, tree, out) == 0
    kept = (out / "results_voc07.json").read_bytes()
    assert _eval(first, tree, out) == 0  # the same evaluation again: its own results, refreshed from the cache
    assert json.loads((out / "results_voc07.json").read_text())["from_cache"] is True
    kept = (out / "results_voc07.json").read_bytes()
    capsys.readouterr()
    assert _eval(second, tree, out) == 2
    line = _one_error_line(capsys)
    assert "results_voc07.json" in line and "another evaluation" in line and "--overwrite" in line
    assert (out / "results_voc07.json").read_bytes() == kept
    assert _eval(second, tree, out, "--overwrite") == 0
    assert json.loads((out / "results_voc07.json").read_text())["checkpoint"] == str(second)


def test_eval_refuses_a_results_file_it_did_not_write(tree: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "c.pt", NAMES, seed=0)
    out = tmp_path / "eval"
    out.mkdir()
    (out / "results_voc07.json").write_text("my notes\n")
    assert _eval(checkpoint, tree, out) == 2
    assert "results_voc07.json" in _one_error_line(capsys)
    assert (out / "results_voc07.json").read_text() == "my notes\n"


def _run_folder(root: Path) -> Path:
    run = root / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("step,loss,lr\n1,3.0,0.001\n2,2.5,0.001\n")
    return run


def test_report_never_replaces_existing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    run = _run_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    Path("loss_curves.png").write_bytes(b"a user's picture")
    assert report.main([str(run), "--plot", "loss_curves.png"]) == 2
    assert "loss_curves.png" in _one_error_line(capsys)
    assert Path("loss_curves.png").read_bytes() == b"a user's picture"
    Path("table.md").write_text("my table\n")
    assert report.main([str(run), "--plot", "new.png", "--markdown", "table.md"]) == 2
    assert "table.md" in _one_error_line(capsys)
    assert Path("table.md").read_text() == "my table\n" and not Path("new.png").exists()
    assert report.main([str(run), "--plot", "new.png", "--markdown", "new.md"]) == 0
    assert Path("new.png").stat().st_size > 0 and "| " in Path("new.md").read_text()
    assert report.main([str(run), "--plot", "new.png", "--markdown", "new.md", "--overwrite"]) == 0


def test_a_plain_report_works_every_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Defect: the second ``ssd-report runs/x`` refused because its own default ``--plot loss_curves.png``
    existed. A plain call prints the table and writes nothing."""
    run = _run_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert report.main([str(run)]) == 0
        assert "| run |" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
