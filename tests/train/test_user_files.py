"""Issue #10 "never lose a user's work", training side: ssd-train never writes into a user's dataset and never
clobbers an earlier run folder."""
from __future__ import annotations

from pathlib import Path

import pytest

from ssd_torch.cli import train
from train_fixtures import csv_steps, one_line, tiny_run_args


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_ssd_train_leaves_a_users_dataset_alone(tmp_path, capsys):
    """Defect: ``ssd-train --preset demo --data-root data/realvoc`` regenerated synthetic images over the
    user's JPEGImages/000005.jpg, Annotations/000005.xml and ImageSets/Main/trainval.txt."""
    root = tmp_path / "realvoc"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    (root / "JPEGImages" / "000005.jpg").write_bytes(b"\xff\xd8 the user's photo \xff\xd9")
    (root / "Annotations" / "000005.xml").write_text("<annotation><filename>000005.jpg</filename></annotation>")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("000005\n")
    before = _snapshot(root)
    assert train.main(tiny_run_args(root, tmp_path / "run")) == 2
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert "realvoc" in line and "data.dataset=voc" in line and "generating" not in captured.out
    assert _snapshot(root) == before


@pytest.mark.slow
def test_new_run_refuses_a_folder_with_checkpoints_and_overwrite_removes_only_ours(tmp_path, capsys):
    """Defect: a second run with the same --output-dir and no --resume replaced best.pt (mAP 0.80 -> 0.0036) and
    appended duplicate step rows to metrics.csv / eval.csv."""
    data, run = tmp_path / "syn", tmp_path / "run"
    assert train.main(tiny_run_args(data, run)) == 0
    capsys.readouterr()
    # last.pt: a 1-step model scores 0, and a score of 0 never makes a best.pt (tests/faults)
    best = (run / "checkpoints" / "last.pt").read_bytes()
    logs = {name: (run / name).read_bytes() for name in ("metrics.csv", "eval.csv", "config.json")}
    assert train.main(tiny_run_args(data, run, "--seed", "1")) == 2
    line = one_line(capsys.readouterr().err)
    assert all(s in line for s in (str(run), "--resume auto", "--output-dir", "--overwrite")), line
    assert (run / "checkpoints" / "last.pt").read_bytes() == best
    assert {name: (run / name).read_bytes() for name in logs} == logs
    # --overwrite removes what ssd-train wrote, as its manifest written.jsonl claims, and nothing else
    (run / "notes.txt").write_text("the user's notes")
    (run / "checkpoints" / "my_model.pt").write_bytes(b"the user's own file")
    assert train.main(tiny_run_args(data, run, "--seed", "1", "--overwrite")) == 0
    out = capsys.readouterr().out
    assert "removed" in out and "checkpoints/last.pt" in out and "notes.txt" not in out
    assert (run / "notes.txt").read_text() == "the user's notes"
    assert (run / "checkpoints" / "my_model.pt").read_bytes() == b"the user's own file"
    assert csv_steps(run / "metrics.csv") == [1] and csv_steps(run / "eval.csv") == [1]
    assert (run / "checkpoints" / "last.pt").read_bytes() != best
