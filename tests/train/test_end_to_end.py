"""A short end-to-end run on a tiny generated synthetic VOC tree: train + eval + pictures, then resume."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from ssd_torch.cli import train
from ssd_torch.cli import demo
from ssd_torch.checkpoint import read_checkpoint
from ssd_torch.modeling.predictor import load_predictor
from ssd_torch.training.train_config import TrainConfig
from train_fixtures import csv_steps


@pytest.mark.slow
def test_quick_demo_then_resume(tmp_path, capsys):
    data, run = tmp_path / "syn", tmp_path / "run"
    run.mkdir()
    (run / "earlier.txt").write_text("a previous demo run")
    assert demo.main(["--quick", "--data-root", str(data), "--set", "data.dataset=\"synthetic\"",
                      "--output-dir", str(run),
                      "--set", "run.tensorboard=false"]) == 0
    out = capsys.readouterr().out
    assert "VOC07 11-point AP" in out and "mAP" in out
    # make demo is re-runnable: the previous runs/demo/ is kept under the first free name
    assert (tmp_path / "run.1" / "earlier.txt").read_text() == "a previous demo run"
    assert f"kept the previous {run} as {tmp_path / 'run.1'}" in out
    assert not (run / "earlier.txt").exists()
    assert csv_steps(run / "eval.csv") == [1, 2]  # the quick demo evaluates during training too
    for name in ("config.json", "metrics.csv", "eval.csv", "curves.png", "checkpoints/last.pt",
                 "checkpoints/best.pt", "checkpoints/step_00000002.pt"):
        assert (run / name).is_file(), name
    assert len(list((run / "detections").glob("*.png"))) == 6
    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert cfg.schedule.max_steps == 2 and cfg.data.roots == (str(data),)
    ckpt = read_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2 and ckpt["class_names"][0] == "background" and 0.0 <= ckpt["metrics"]["mAP"] <= 1.0
    _p = load_predictor(run / "checkpoints" / "last.pt")
    mcfg, names = _p.config, list(_p.categories)
    assert names == ckpt["class_names"] and mcfg.name == "ssd300_slim"
    # resume through the ssd-train CLI: one more step on top of the two
    cfg_file = run / "config.json"
    resume = ["--preset", "demo", "--config", str(cfg_file), "--resume", "auto", "--max-steps", "3"]
    # a changed LR is listed and refused (issue #10.4: it used to be ignored silently)...
    config_before = cfg_file.read_bytes()
    assert train.main([*resume, "--lr", "0.4"]) == 2
    err = capsys.readouterr().err
    assert "optim.base_lr: 0.2 -> 0.4" in err and "--resume-with-changes" in err
    assert cfg_file.read_bytes() == config_before
    assert read_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2
    # ... and applied for real with --resume-with-changes: config.json and the LR of step 3 say 0.4
    assert train.main([*resume, "--lr", "0.4", "--resume-with-changes"]) == 0
    out = capsys.readouterr().out
    assert "optim.base_lr: 0.2 -> 0.4" in out and "schedule.max_steps: 2 -> 3" in out
    assert json.loads(cfg_file.read_text())["optim"]["base_lr"] == 0.4
    with (run / "metrics.csv").open() as f:
        lr3 = [float(r["lr"]) for r in csv.DictReader(f) if r["step"] == "3"]
    # 0.4 per 32 images at batch 4, cosine over 6 steps without warmup: factor (1 + cos(pi * 2 / 6)) / 2 at step 2
    assert lr3 == [pytest.approx(0.4 * 4 / 32 * 0.75)]
    again = read_checkpoint(run / "checkpoints" / "last.pt")
    assert again["step"] == 3 and again["epoch"] == 0 and again["extra"]["step_in_epoch"] == 3
    with (run / "metrics.csv").open() as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == [1, 2, 3]
    moved = any(not torch.equal(ckpt["model"][k], again["model"][k]) for k in ckpt["model"])
    assert moved


def test_cli_reports_config_errors(capsys):
    assert train.main(["--preset", "demo", "--set", "optim.batchsize=2"]) == 2
    assert "unknown key 'batchsize'" in capsys.readouterr().err
    assert train.main(["--preset", "demo", "--print-config", "--batch-size", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["optim"]["batch_size"] == 3


@pytest.mark.slow
def test_compiled_run_checkpoints_plain_weights_and_resumes_uncompiled(tmp_path, capsys):
    """``runtime.compile=true`` (torch.compile, inductor on the CPU): the checkpoint holds the plain module's
    keys (no ``_orig_mod.`` prefix), loads for inference, and a plain (uncompiled) run resumes from it."""
    data, run = tmp_path / "syn", tmp_path / "run"
    assert demo.main(["--quick", "--data-root", str(data), "--set", "data.dataset=\"synthetic\"",
                      "--output-dir", str(run), "--set", "run.tensorboard=false",
                      "--set", "runtime.compile=true"]) == 0
    assert "mAP" in capsys.readouterr().out
    ckpt = read_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2 and ckpt["train_config"]["runtime"]["compile"] is True
    assert not [k for k in ckpt["model"] if "_orig_mod" in k or k.startswith("module.")]
    _p = load_predictor(run / "checkpoints" / "last.pt")
    model, _, _ = _p.model, _p.config, list(_p.categories)
    assert set(model.state_dict()) == set(ckpt["model"])
    assert train.main(["--preset", "demo", "--config", str(run / "config.json"), "--resume", "auto",
                       "--max-steps", "3", "--set", "runtime.compile=false"]) == 0
    again = read_checkpoint(run / "checkpoints" / "last.pt")
    assert again["step"] == 3 and again["train_config"]["runtime"]["compile"] is False
    assert any(not torch.equal(ckpt["model"][k], again["model"][k]) for k in ckpt["model"])
