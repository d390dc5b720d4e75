"""Config resolution: preset < JSON file < --set < named flags; validation names the field."""
import json
import re

import pytest

from ssd_torch.cli.train import config_from_args, parse_args
from ssd_torch.errors import ConfigError
from ssd_torch.training.train_config import (TrainConfig, apply_overrides, coco, demo, resolve_config, save_config,
                                             voc07)


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
    with pytest.raises(ConfigError, match="optim.batch_size must be an int"):
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
        resolve_config("imagenet")


def test_override_parsing():
    d = apply_overrides(voc07().to_dict(), ["run.output_dir=runs/x", "optim.grad_clip=10", "model.batch_norm=null"])
    assert d["run"]["output_dir"] == "runs/x" and d["optim"]["grad_clip"] == 10 and d["model"]["batch_norm"] is None
    with pytest.raises(ValueError, match="section.key=value"):
        apply_overrides(d, ["optim.grad_clip"])


# ---- issue #10.5: ranges the math requires ------------------------------------------------------------------
@pytest.mark.parametrize("override, field", [
    ("optim.momentum=2", "optim.momentum"), ("optim.momentum=1", "optim.momentum"),
    ("optim.momentum=-0.1", "optim.momentum"), ("optim.weight_decay=-1e-4", "optim.weight_decay"),
    ("optim.base_lr=0", "optim.base_lr"), ("optim.grad_clip=0", "optim.grad_clip"),
    ("schedule.gamma=0", "schedule.gamma"), ("schedule.gamma=1.5", "schedule.gamma"),
    ("schedule.min_lr_ratio=1.5", "schedule.min_lr_ratio"), ("schedule.warmup_factor=0", "schedule.warmup_factor"),
    ("schedule.kind=\"step\"", "schedule.kind"), ("schedule.epochs=0", "schedule.epochs"),
    ("loss.iou_threshold=1.5", "loss.iou_threshold"), ("loss.iou_threshold=0", "loss.iou_threshold"),
    ("model.variances=[0.1, 0]", "model.variances"), ("model.variances=[0.1]", "model.variances"),
    ("model.variances=[0.1, Infinity]", "model.variances"), ("loss.variances=[0.1, 0.2]", "model.variances"),
    ("loss.neg_pos_ratio=0", "loss.neg_pos_ratio"), ("loss.backend=\"cuda\"", "loss.backend"),
    ("model.head_bias_prior=1.0", "model.head_bias_prior"), ("model.l2norm_scale=0", "model.l2norm_scale"),
    ("model.preset=\"resnet50\"", "model.preset"), ("model.batch_norm=true", "model.batch_norm"),
    ("data.augment=\"heavy\"", "data.augment"), ("data.dataset=\"imagenet\"", "data.dataset"),
    ("data.roots=[]", "data.roots"), ("data.max_train_images=0", "data.max_train_images"),
    ("runtime.device=\"gpu\"", "runtime.device"), ("runtime.amp=\"fp8\"", "runtime.amp"),
    ("runtime.num_threads=0", "runtime.num_threads"), ("run.keep_last=0", "run.keep_last"),
    ("run.nan_window=0", "run.nan_window"), ("run.output_dir=\"\"", "run.output_dir"),
    ("loss.min_negatives=-1", "loss.min_negatives"), ("loss.min_negatives=true", "loss.min_negatives"),
    ("loss.min_negatives=2.5", "loss.min_negatives"), ("model.priors=\"ssd512\"", "model.priors"),
    ("model.init_from=\"\"", "model.init_from"), ("data.class_names=[]", "data.class_names"),
    ("data.val_images=\"x\"", "data.val_images"),
])
def test_values_outside_their_range_are_refused(override, field):
    """Defect: ``--set optim.momentum=2`` was accepted."""
    from ssd_torch.errors import ConfigError
    with pytest.raises(ConfigError, match=re.escape(field)):
        resolve_config("voc07", None, [override])


def test_nesterov_needs_momentum():
    from ssd_torch.errors import ConfigError
    with pytest.raises(ConfigError, match="optim.nesterov"):
        resolve_config("voc07", None, ["optim.nesterov=true", "optim.momentum=0"])
    assert resolve_config("voc07", None, ["optim.nesterov=true"]).optim.nesterov


def test_registries_are_the_allowed_values():
    """The allowed values come from the registries, not from copied string tables."""
    from ssd_torch.backend import BACKENDS
    from ssd_torch.modeling.model_config import PRESETS as MODEL_PRESETS
    from ssd_torch.training.train_config import SCHEDULE_KINDS
    for backend in BACKENDS:
        assert resolve_config("voc07", None, [f"loss.backend=\"{backend}\""]).loss.backend == backend
    for kind in SCHEDULE_KINDS:
        assert resolve_config("voc07", None, [f"schedule.kind=\"{kind}\""]).schedule.kind == kind
    for preset in MODEL_PRESETS:
        assert resolve_config("voc07", None, [f"model.preset=\"{preset}\""]).model.preset == preset
    assert voc07().loss.backend == "auto"


def test_lr_help_names_the_reference_batch(capsys):
    """Defect: ``--lr`` help only said "sets optim.base_lr"."""
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "LR per 32 images" in text and "scaled linearly to the effective batch" in text


def test_demo_evaluates_during_training():
    """Defect: the demo evaluated only at the end, so the mAP panel of curves.png was a single dot."""
    from ssd_torch.training.schedule import schedule_lengths
    d = demo()
    steps_per_epoch = d.data.synthetic_trainval // d.optim.batch_size
    total = schedule_lengths(iterations=d.schedule.iterations, milestones=d.schedule.milestones,
                             warmup_iterations=d.schedule.warmup_iterations, effective=d.optim.batch_size,
                             epochs=d.schedule.epochs, steps_per_epoch=steps_per_epoch).total_steps
    assert d.run.eval_every > 0 and total // d.run.eval_every >= 5
    assert d.run.eval_every % steps_per_epoch == 0  # at epoch ends


def test_coco_preset_is_the_papers_coco_model():
    """SSD paper §3.4: LR 1e-3 for 160k iterations, 1e-4 for 40k, 1e-5 for 40k, batch 32; torchvision's COCO
    priors; COCO 2017's own layout under data/coco; the two zero-height boxes of train2017 skipped, not fatal."""
    from reference.priors import TORCHVISION_COCO
    from ssd_torch.training.model_setup import _configured

    c = coco()
    assert (c.optim.base_lr, c.optim.batch_size, c.optim.reference_batch) == (1e-3, 32, 32)
    assert (c.schedule.kind, c.schedule.iterations, c.schedule.milestones, c.schedule.gamma) == (
        "multistep", 240_000, (160_000, 200_000), 0.1)
    assert c.data.dataset == "coco" and c.data.skip_bad and c.data.class_names is None
    assert c.data.coco_files() == (("data/coco/annotations/instances_train2017.json", "data/coco/train2017"),
                                   ("data/coco/annotations/instances_val2017.json", "data/coco/val2017"))
    assert c.model.preset == "ssd300_vgg16" and _configured(c.model, 81).prior_spec == TORCHVISION_COCO
    with pytest.raises(ConfigError, match="model.backbone_weights is not set.*--init-from"):
        c.model.weights_to_load()
    assert resolve_config("coco", None, ["model.init_from=\"w.pt\""]).model.weights_to_load() is None
    assert resolve_config("coco", None, ["model.backbone_weights=\"none\""]).model.weights_to_load() is None
    with pytest.raises(ConfigError, match="model.init_from must be null when model.backbone_weights is set"):
        resolve_config("coco", None, ["model.init_from=\"w.pt\"", "model.backbone_weights=\"v.pth\""])
    assert resolve_config("coco", None, ["model.init_from=\"w.pt\"", "model.backbone_weights=\"none\""])


def test_every_prior_preset_fits_the_models():
    from reference.priors import PRESETS as PRIOR_PRESETS
    from ssd_torch.training.model_setup import _configured

    for name, spec in PRIOR_PRESETS.items():
        cfg = resolve_config("demo", None, [f"model.priors=\"{name}\""])
        assert _configured(cfg.model, 7).prior_spec == spec
    assert _configured(demo().model, 7).prior_spec == _configured(resolve_config("demo", None, [
        "model.priors=\"ssd300\""]).model, 7).prior_spec  # null = the model preset's own (the seed's)


def test_min_negatives_reaches_the_loss():
    """``loss.min_negatives`` is what ``build_objective``'s loss uses: an image without objects gives no loss at
    0 (the paper) and the cross-entropy of its hardest background priors otherwise."""
    import torch

    from ssd_torch.training.objective import build_objective
    from ssd_torch.training.train_config import LossConfig

    torch.manual_seed(0)
    priors = torch.rand(50, 4) * 0.5 + 0.25
    loc, conf = torch.randn(2, 50, 4), torch.randn(2, 50, 3)
    labels, targets = torch.zeros(2, 50, dtype=torch.int64), torch.zeros(2, 50, 4)
    loss_fns = {k: build_objective(LossConfig(backend="torch", min_negatives=k), priors, (0.1, 0.2))[1] for k in (0, 5)}
    parts = {k: fn(loc, conf, labels, targets) for k, fn in loss_fns.items()}
    assert float(parts[0].conf) == 0 and float(parts[0].loc) == 0
    ce = -torch.log_softmax(conf, -1)[..., 0]
    assert float(parts[5].conf) == pytest.approx(float(ce.topk(5, dim=1).values.sum()))  # divided by max(N, 1) = 1
