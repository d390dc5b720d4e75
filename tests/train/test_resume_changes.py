"""Resume with changed settings: every difference is listed, fixed ones refuse unless accepted, and an
accepted LR / schedule change really takes effect (it used to be overwritten by the checkpoint's)."""
from __future__ import annotations

import pytest
import torch

from ssd_torch.errors import ConfigError
from ssd_torch.checkpoint import read_checkpoint
from ssd_torch.training.resume import check_changes, config_changes
from ssd_torch.training.schedule import build_lr_factor, build_scheduler, restore_position
from ssd_torch.training.train_config import demo, resolve_config
from train_fixtures import ToyDetection, make_trainer, tiny_config


def test_changes_are_listed_and_classified():
    saved = demo().to_dict()
    cfg = resolve_config("demo", None, ["optim.base_lr=0.4", "data.num_workers=0", "schedule.max_steps=9",
                                        "optim.batch_size=4", "optim.accumulation=2", "runtime.seed=3",
                                        "run.resume=\"auto\""])
    changes = {c.field: c for c in config_changes(saved, cfg)}
    assert set(changes) == {"optim.base_lr", "data.num_workers", "schedule.max_steps", "optim.batch_size",
                            "optim.accumulation", "runtime.seed"}
    assert str(changes["optim.base_lr"]) == "optim.base_lr: 0.2 -> 0.4"
    assert [f for f, c in sorted(changes.items()) if c.fixed] == ["optim.base_lr", "runtime.seed"]
    with pytest.raises(ConfigError, match=r"cannot change mid-run: optim.base_lr: 0.2 -> 0.4; runtime.seed: 0 -> 3"
                                          r".*also changed: .*data.num_workers.*--resume-with-changes"):
        check_changes(list(changes.values()), accept_changes=False)
    check_changes(list(changes.values()), accept_changes=True)
    check_changes([c for c in changes.values() if not c.fixed], accept_changes=False)
    del saved["loss"]["backend"]  # an older checkpoint without a field: not compared
    assert "loss.backend" not in {c.field for c in config_changes(saved, demo())}


def test_restore_position_keeps_the_new_schedule():
    """The checkpoint's scheduler state moves the new scheduler to its step; LR and factor stay the new ones."""
    def sched(lr, kind):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
        return build_scheduler(opt, build_lr_factor(kind=kind, total_steps=10, milestones=(5,), warmup_steps=2))
    old = sched(0.1, "multistep")
    for _ in range(6):
        old.optimizer.step()
        old.step()
    same = sched(0.1, "multistep")
    restore_position(same, old.state_dict())
    assert same.optimizer.param_groups[0]["lr"] == old.optimizer.param_groups[0]["lr"]  # bit-identical
    assert same.last_epoch == 6 and same.get_last_lr() == old.get_last_lr()
    new = sched(0.4, "cosine")
    restore_position(new, old.state_dict())
    assert new.optimizer.param_groups[0]["lr"] == pytest.approx(0.4 * new.lr_lambdas[0](6))
    assert new.lr_lambdas[0].kind == "cosine"
    new.optimizer.step()
    new.step()
    assert new.optimizer.param_groups[0]["lr"] == pytest.approx(0.4 * new.lr_lambdas[0](7))


def test_trainer_resume_keeps_the_current_optimizer_settings(tmp_path):
    from ssd_torch.training.checkpoint import CheckpointManager
    cfg, data = tiny_config(), ToyDetection(4)
    first = make_trainer(cfg, data, batch=2, total_steps=4, stop_at=1, lr=0.01, checkpoints=CheckpointManager(tmp_path))
    first.fit()
    ckpt = read_checkpoint(tmp_path / "last.pt")
    again = make_trainer(cfg, data, batch=2, total_steps=4, lr=0.03)
    again.load_state(ckpt)
    group = again.optimizer.param_groups[0]
    assert group["initial_lr"] == 0.03 and group["lr"] == pytest.approx(0.03 * again.scheduler.lr_lambdas[0](1))
    assert again.optimizer.state[group["params"][0]]["momentum_buffer"] is not None  # state restored
