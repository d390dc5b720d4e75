"""Atomic checkpoint writes, keep-last-K rotation, the format tag, RNG capture."""
import random

import numpy as np
import pytest
import torch

from ssd_torch import checkpoint as ck
from ssd_torch.checkpoint import FORMAT, atomic_save, build_checkpoint, read_checkpoint
from ssd_torch.training.checkpoint import CheckpointManager, capture_rng, restore_rng


def _ckpt(step, value=0.0):
    model = torch.nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.fill_(value)
    return build_checkpoint(model=model, model_config={"num_classes": 3}, class_names=["background", "a", "b"],
                            step=step, epoch=0)


def test_format_and_round_trip(tmp_path):
    path = atomic_save(_ckpt(7, 1.5), tmp_path / "c.pt")
    got = read_checkpoint(path)
    assert got["format"] == FORMAT and got["step"] == 7 and got["class_names"][0] == "background"
    assert torch.equal(got["model"]["weight"], torch.full((3, 2), 1.5))
    for key in ("model", "model_config", "class_names", "step", "epoch", "optimizer", "scheduler", "scaler",
                "rng", "train_config", "metrics"):
        assert key in got


def test_crash_mid_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    atomic_save(_ckpt(1, 1.0), path)
    real_save = torch.save

    def crashing_save(obj, f, *a, **k):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save(_ckpt(2, 2.0), path)
    monkeypatch.setattr(ck.torch, "save", real_save)
    got = read_checkpoint(path)
    assert got["step"] == 1 and torch.equal(got["model"]["weight"], torch.full((3, 2), 1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind


def test_keep_last_k_and_best(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (10, 20, 30, 40):
        mgr.save(_ckpt(step))
    assert [p.name for p in mgr.step_files()] == ["step_00000030.pt", "step_00000040.pt"]
    assert read_checkpoint(mgr.latest())["step"] == 40
    mgr.save_best(_ckpt(20))
    mgr.save(_ckpt(50))
    assert read_checkpoint(tmp_path / "best.pt")["step"] == 20
    assert [p.name for p in mgr.step_files()] == ["step_00000040.pt", "step_00000050.pt"]
    assert read_checkpoint(tmp_path / "last.pt")["step"] == 50


def test_bad_files_named(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="x.pt"):
        read_checkpoint(tmp_path / "x.pt")
    torch.save({"format": "other/1"}, tmp_path / "y.pt")
    with pytest.raises(ValueError, match="y.pt.*format"):
        read_checkpoint(tmp_path / "y.pt")
    with pytest.raises(ValueError, match="file not found"):
        read_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="background"):
        build_checkpoint(model=torch.nn.Linear(1, 1), model_config={}, class_names=["a"], step=0, epoch=0)


def test_rng_capture_restore():
    state = capture_rng()
    a = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng(state)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
