"""Issue #20 s4 + issue #19 s5: resume and rotation keep the user's checkpoints (the resume point, an abandoned
continuation, the best model), last.pt is independent of its step file, --resume auto falls back, leftovers of
an interrupted write go."""
from __future__ import annotations

import pytest
import torch

from ssd_torch.checkpoint import atomic_save, build_checkpoint, read_checkpoint
from ssd_torch.cli import train
from ssd_torch.training.checkpoint import CheckpointManager
from ssd_torch.training.resume import Resumed, open_resume, resume_trainer
from ssd_torch.training.train_config import resolve_config
from ssd_torch.training.trainer import SideJobs
from train_fixtures import CLASS_NAMES, ToyDetection, csv_steps, make_trainer, tiny_config, tiny_run_args


def _ckpt(step):
    return build_checkpoint(model=torch.nn.Linear(2, 4), model_config=tiny_config().to_dict(),
                            class_names=list(CLASS_NAMES), step=step, epoch=0)


def test_last_pt_is_independent_of_its_step_file(tmp_path):
    """Defect: last.pt was a hard link, so damaging it damaged the newest step file too."""
    mgr = CheckpointManager(tmp_path, keep_last=3)
    for step in (1, 2):
        mgr.save(_ckpt(step))
    (tmp_path / "last.pt").write_bytes(b"damaged")
    assert read_checkpoint(tmp_path / "step_00000002.pt")["step"] == 2


def test_resume_auto_falls_back_to_the_newest_checkpoint_that_loads(tmp_path):
    mgr = CheckpointManager(tmp_path / "checkpoints", keep_last=3)
    for step in (1, 2):
        mgr.save(_ckpt(step))
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"damaged")
    (tmp_path / "checkpoints" / "step_00000002.pt").write_bytes(b"damaged too")
    said = []
    cfg = resolve_config("demo", None, [f'run.output_dir="{tmp_path}"'])
    got = open_resume("auto", mgr, cfg, CLASS_NAMES, trust=False, accept_changes=True, say=said.append)
    assert got.path == tmp_path / "checkpoints" / "step_00000001.pt" and got.checkpoint["step"] == 1
    assert len(said) == 1 and "last.pt" in said[0] and "step_00000002.pt" in said[0] and "step_00000001" in said[0]


def test_rotation_never_deletes_the_resume_point_and_set_aside_keeps_the_abandoned(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (7, 20, 30):
        mgr.save(_ckpt(step))
    atomic_save(_ckpt(7), tmp_path / "step_00000007.pt")
    mgr.protect(tmp_path / "step_00000007.pt")
    folder = mgr.set_aside(7)
    assert folder.parent == tmp_path and folder.name.startswith("abandoned-")
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "step_00000020.pt", "step_00000030.pt"]
    for step in (8, 9, 10):
        mgr.save(_ckpt(step))
    assert [p.name for p in mgr.step_files()] == ["step_00000007.pt", "step_00000009.pt", "step_00000010.pt"]
    assert mgr.set_aside(10) is None


def test_leftover_temp_files_are_removed_only_ours(tmp_path):
    mgr = CheckpointManager(tmp_path)
    ours = [tmp_path / ".step_00000004.pt.k2j3h.tmp", tmp_path / ".last.pt.abc.tmp", tmp_path / ".best.pt.x.link"]
    theirs = [tmp_path / ".notes.txt.tmp", tmp_path / "step_4.pt.tmp", tmp_path / "mine.tmp"]
    for p in ours + theirs:
        p.write_bytes(b"x" * 100)
    assert mgr.remove_leftovers() == sorted(ours)
    assert sorted(p for p in tmp_path.iterdir()) == sorted(theirs)


@pytest.mark.slow
def test_best_score_survives_a_resume_from_an_earlier_checkpoint(tmp_path):
    """Defect: resuming from an earlier checkpoint took its best score, so a worse model replaced best.pt."""
    mgr = CheckpointManager(tmp_path, keep_last=5)
    scores = iter([0.1, 0.5])
    first = make_trainer(tiny_config(), ToyDetection(4), batch=2, total_steps=2, checkpoints=mgr,
                         eval_fn=lambda m: {"mAP": next(scores)}, jobs=SideJobs(eval_every=1, checkpoint_every=1))
    first.fit()
    assert read_checkpoint(tmp_path / "best.pt")["step"] == 2
    again = make_trainer(tiny_config(), ToyDetection(4), batch=2, total_steps=2, checkpoints=mgr,
                         eval_fn=lambda m: {"mAP": 0.3}, jobs=SideJobs(eval_every=1, checkpoint_every=1))
    ckpt = read_checkpoint(tmp_path / "step_00000001.pt")
    resume_trainer(again, Resumed(tmp_path / "step_00000001.pt", ckpt, tiny_config(), []), say=lambda s: None)
    assert again.best_map == 0.5
    again.fit()
    assert read_checkpoint(tmp_path / "best.pt")["step"] == 2 and read_checkpoint(tmp_path / "best.pt")[
        "metrics"]["mAP"] == 0.5


@pytest.mark.slow
def test_resume_from_an_earlier_checkpoint_then_a_finished_run(tmp_path, capsys):
    """Defects: ``--resume step_3.pt`` rotated away the file it resumed from and mixed the abandoned step 4 into
    the new continuation; ``--resume auto`` on a finished run evaluated again (a second eval.csv row)."""
    import shutil
    data, run = tmp_path / "syn", tmp_path / "run"
    ckpts, keep = run / "checkpoints", tmp_path / "kept.pt"

    def ssd_train(*extra, steps=4):
        return train.main(tiny_run_args(data, run, "--set", "run.checkpoint_every=1", "--set", "run.keep_last=1",
                                        *extra, steps=steps, batch=2))

    assert ssd_train(steps=2) == 0
    early = ckpts / "step_00000002.pt"
    shutil.copy(early, keep)
    assert ssd_train("--resume", "auto") == 0  # on to step 4: keep_last=1 rotates step 2 away
    shutil.copy(keep, early)  # the user kept a copy of step 2 and wants to go back to it
    leftover = ckpts / ".step_00000005.pt.q1w2e3.tmp"
    leftover.write_bytes(b"\0" * 1000)  # what a SIGKILL during a checkpoint write leaves
    capsys.readouterr()
    assert ssd_train("--resume", str(early)) == 0
    out = capsys.readouterr().out
    assert early.is_file(), "the resume point was rotated away"
    assert not leftover.exists() and leftover.name in out
    abandoned = [p for p in ckpts.iterdir() if p.is_dir()]
    assert len(abandoned) == 1 and str(abandoned[0]) in out
    assert sorted(p.name for p in abandoned[0].iterdir()) == ["last.pt", "step_00000004.pt"]
    assert read_checkpoint(ckpts / "last.pt")["step"] == 4
    rows = csv_steps(run / "eval.csv")
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    assert ssd_train("--resume", "auto") == 0
    assert "already finished" in capsys.readouterr().out
    assert csv_steps(run / "eval.csv") == rows == [2, 4]
    assert before == {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
