"""Config resolution: preset < JSON file < --set < named flags; validation names the field."""
import json

import pytest

from ssd_torch.cli.train import config_from_args, parse_args
from ssd_torch.training.train_config import TrainConfig, apply_overrides, demo, resolve_config, save_config, voc07


def test_presets_are_valid_and_differ():
    v, d = voc07(), demo()
    assert v.optim.base_lr == 1e-3 and v.optim.reference_batch == 32 and v.schedule.milestones == (80_000, 100_000)
    assert v.schedule.iterations == 120_000 and v.optim.momentum == 0.9 and v.optim.weight_decay == 5e-4
    assert d.model.preset == "ssd300_slim" and d.runtime.device == "cpu" and d.data.dataset == "synthetic"
    assert d.data.num_workers <= 1 and d.runtime.num_threads == 2


def test_round_trip_through_json(tmp_path):
    cfg = demo()
    save_config(cfg, tmp_path / "c.json")
    back = TrainConfig.from_dict(json.loads((tmp_path / "c.json").read_text()))
    assert back == cfg


def test_file_then_overrides_then_flags(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"optim": {"batch_size": 8, "accumulation": 4}, "run": {"output_dir": "from_file"}}))
    cfg = resolve_config("voc07", path, ["optim.accumulation=2", "data.roots=[\"x\"]"])
    assert (cfg.optim.batch_size, cfg.optim.accumulation, cfg.data.roots) == (8, 2, ("x",))
    assert cfg.run.output_dir == "from_file"
    args = parse_args(["--config", str(path), "--set", "optim.batch_size=4", "--batch-size", "2",
                       "--output-dir", "flag", "--data-root", "a", "--data-root", "b", "--no-progress"])
    cfg = config_from_args(args)
    assert cfg.optim.batch_size == 2  # the named flag wins over --set, which wins over the file
    assert cfg.run.output_dir == "flag" and cfg.data.roots == ("a", "b") and cfg.data.val_roots == ("a",)
    assert cfg.run.progress is False and cfg.optim.accumulation == 4


def test_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="unknown key 'batchsize'"):
        resolve_config("voc07", None, ["optim.batchsize=3"])
    with pytest.raises(TypeError, match="optim.batch_size must be an int"):
        resolve_config("voc07", None, ["optim.batch_size=\"eight\""])
    with pytest.raises(ValueError, match="runtime.amp must be one of"):
        resolve_config("voc07", None, ["runtime.amp=fp8"])
    with pytest.raises(ValueError, match="optim.accumulation must be > 0"):
        resolve_config("voc07", None, ["optim.accumulation=0"])
    with pytest.raises(ValueError, match="milestones"):
        resolve_config("voc07", None, ["schedule.milestones=[100000, 80000]"])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        resolve_config("voc07", bad)
    with pytest.raises(ValueError, match="unknown training preset"):
        resolve_config("coco")


def test_override_parsing():
    d = apply_overrides(voc07().to_dict(), ["run.output_dir=runs/x", "optim.grad_clip=10", "model.batch_norm=null"])
    assert d["run"]["output_dir"] == "runs/x" and d["optim"]["grad_clip"] == 10 and d["model"]["batch_norm"] is None
    with pytest.raises(ValueError, match="section.key=value"):
        apply_overrides(d, ["optim.grad_clip"])
