"""Issue #19 s4: training data changed under a resumed run is refused, saying what changed, unless
--resume-with-changes (which then continues without a traceback)."""
from __future__ import annotations

import pytest

from ssd_torch.cli import train
from ssd_torch.training.resume import data_change
from train_fixtures import one_line, tiny_run_args


def test_data_change_says_what_changed():
    old = {"split": "trainval", "count": 4, "ids_sha256": "x", "annotations_sha256": "y",
           "images": {"a": "1", "b": "2", "c": "3", "d": "4"}}
    new = {"split": "trainval", "count": 3, "ids_sha256": "z", "annotations_sha256": "w",
           "images": {"a": "1", "b": "9", "e": "5"}}
    assert data_change(old, new) == "split trainval: 2 images removed, 1 added, 1 annotations changed"
    assert data_change(old, dict(old)) is None and data_change(None, new) is None


@pytest.mark.slow
def test_a_shrunk_split_is_refused_then_accepted(tmp_path, capsys):
    """Defect: 8 -> 4 images between an interrupt and --resume auto gave ``ValueError: start_step must be in
    [0, 2], got 3``; a smaller change resumed silently with another schedule."""
    data, run = tmp_path / "syn", tmp_path / "run"
    assert train.main(tiny_run_args(data, run, steps=3, batch=2)) == 0
    split = data / "ImageSets" / "Main" / "trainval.txt"
    split.write_text("".join(split.read_text().splitlines(keepends=True)[:4]))
    capsys.readouterr()
    assert train.main(tiny_run_args(data, run, "--resume", "auto", steps=5, batch=2)) == 2
    line = one_line(capsys.readouterr().err)
    assert "training data changed" in line and "4 images removed" in line and "--resume-with-changes" in line
    assert train.main(tiny_run_args(data, run, "--resume", "auto", "--resume-with-changes", steps=5,
                                    batch=2)) == 0
    out = capsys.readouterr().out
    assert "changed training data" in out and "the next epoch begins" in out
