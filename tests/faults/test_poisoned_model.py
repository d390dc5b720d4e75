"""Issue #19 s1: never save or bless a poisoned model (non-finite settings, weights or buffers)."""
from __future__ import annotations

import math

import pytest
import torch

from ssd_torch.checkpoint import atomic_save, build_checkpoint, read_checkpoint
from ssd_torch.cli import train
from ssd_torch.data.collate import collate_detection
from ssd_torch.errors import CheckpointError, ConfigError
from ssd_torch.training.checkpoint import CheckpointManager
from ssd_torch.training.step import NonFiniteGuard, TrainingDiverged, train_step
from ssd_torch.training.train_config import resolve_config
from ssd_torch.training.trainer import SideJobs
from train_fixtures import NaNLossAt, ToyDetection, components, make_trainer, one_line, tiny_config


@pytest.mark.parametrize("override", ["optim.base_lr=Infinity", "optim.grad_clip=Infinity",
                                      "model.l2norm_scale=Infinity",
                                      "optim.weight_decay=Infinity"])
def test_infinite_float_settings_are_refused(override):
    field = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{field} must be a finite number"):
        resolve_config("demo", None, [override])


def test_lr_inf_on_the_command_line_is_one_line(tmp_path, capsys):
    assert train.main(["--preset", "demo", "--output-dir", str(tmp_path / "r"), "--lr", "inf"]) == 2
    assert "optim.base_lr must be a finite number" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_a_skipped_step_leaves_the_model_exactly_as_before_buffers_included():
    """Defect: the guard skipped the optimizer step but the forward pass had already moved BatchNorm's running
    statistics (and num_batches_tracked), so a run of skipped steps drifted them to inf/NaN."""
    data, cfg = ToyDetection(2), tiny_config(batch_norm=True)
    model, _, match_fn, loss_fn = components(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = train_step(model=model, micro_batches=[collate_detection([data[0], data[1]])], match_fn=match_fn,
                     loss_fn=NaNLossAt(loss_fn, {1}), optimizer=opt, scaler=None, device=torch.device("cpu"))
    assert not out.stepped
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def _poisoned_state(cfg):
    model, *_ = components(cfg)
    with torch.no_grad():
        next(b for n, b in model.named_buffers() if n.endswith("running_var")).fill_(float("inf"))
    return model


def test_no_checkpoint_is_written_from_non_finite_buffers(tmp_path):
    cfg = tiny_config(batch_norm=True)
    t = make_trainer(cfg, ToyDetection(4), batch=2, total_steps=4, stop_at=1,
                     checkpoints=CheckpointManager(tmp_path, keep_last=2))
    t.fit()
    good = tmp_path / "step_00000001.pt"
    assert good.is_file()
    with torch.no_grad():
        next(b for n, b in t.model.named_buffers() if n.endswith("running_var")).fill_(float("nan"))
    t.span = type(t.span)(4, 2)
    with pytest.raises(TrainingDiverged) as err:
        t.fit()
    text = str(err.value)
    assert "non-finite" in text and "running_var" in text and str(good) in text and "--resume" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "step_00000001.pt"]


def test_nan_guard_stop_leaves_a_good_checkpoint_and_names_it(tmp_path):
    data, cfg = ToyDetection(12), tiny_config(batch_norm=True)
    _, _, _, loss_fn = components(cfg)
    t = make_trainer(cfg, data, batch=2, total_steps=6, loss_fn=NaNLossAt(loss_fn, {2, 3, 4, 5}),
                     guard=NonFiniteGuard(max_skips=3, window=10), checkpoints=CheckpointManager(tmp_path))
    with pytest.raises(TrainingDiverged) as err:
        t.fit()
    text = str(err.value)
    assert "\n" not in text and "step 5" in text
    kept = read_checkpoint(tmp_path / "last.pt")  # refuses non-finite weights: this one is good
    assert kept["step"] == 5 and str(tmp_path / "step_00000005.pt") in text and "--resume" in text


@pytest.mark.slow
def test_best_is_strictly_better_finite_and_above_zero(tmp_path):
    """Defect: best.pt started from -inf, so a broken model scoring 0.0 became "best"."""
    scores = iter([0.0, 0.0, math.nan, 0.3, 0.2, 0.3])
    t = make_trainer(tiny_config(), ToyDetection(4), batch=2, total_steps=6, eval_fn=lambda m: {"mAP": next(scores)},
                     jobs=SideJobs(eval_every=1), checkpoints=CheckpointManager(tmp_path))
    t.fit()
    assert read_checkpoint(tmp_path / "best.pt")["step"] == 4 and t.best_map == 0.3
    zeros = make_trainer(tiny_config(), ToyDetection(4), batch=2, total_steps=2, eval_fn=lambda m: {"mAP": 0.0},
                         jobs=SideJobs(eval_every=1), checkpoints=CheckpointManager(tmp_path / "z"))
    zeros.fit()
    assert not (tmp_path / "z" / "best.pt").exists() and zeros.best_map == -math.inf


def test_readers_refuse_non_finite_weights_in_one_line(tmp_path, capsys):
    cfg = tiny_config(batch_norm=True)
    ckpt = build_checkpoint(model=_poisoned_state(cfg), model_config=cfg.to_dict(),
                            class_names=["background", "a", "b", "c"], step=3, epoch=0)
    path = atomic_save(ckpt, tmp_path / "bad.pt")
    from ssd_torch.checkpoint import check_finite
    with pytest.raises(CheckpointError, match=r"bad\.pt: non-finite values \(NaN/inf\) in .*running_var"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="non-finite"):
        check_finite({"w": torch.tensor([1.0, math.nan])}, "x")
    check_finite({"w": torch.ones(2), "n": torch.tensor(3)}, "x")  # integer buffers are fine
    from PIL import Image

    from ssd_torch.cli import detect, eval as eval_cli, export
    Image.new("RGB", (8, 8)).save(tmp_path / "img.jpg")
    for main, argv in ((eval_cli.main, [str(path), "--data", str(tmp_path)]),
                       (detect.main, [str(path), str(tmp_path / "img.jpg"), "--out", str(tmp_path / "det")]),
                       (export.main, [str(path), "--onnx", str(tmp_path / "m.onnx")])):
        assert main(argv) == 2
        assert "non-finite values" in one_line(capsys.readouterr().err)
    from ssd_torch.modeling.finetune import init_from_checkpoint
    from ssd_torch.modeling.model import model_from_config
    with pytest.raises(CheckpointError, match="non-finite"):
        init_from_checkpoint(model_from_config(cfg), cfg, ["background", "a", "b", "c"], str(path))
