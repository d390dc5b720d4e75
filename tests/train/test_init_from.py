"""``ssd-train --init-from``: a run starts from a trained checkpoint (ours, or a peer's imported by ssd-import),
takes its priors and input convention, says what it kept, mapped and re-initialised, and resumes without it."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from reference.priors import SSD_PYTORCH_VOC, TORCHVISION_COCO
from ssd_torch.cli import eval as eval_cli
from ssd_torch.cli import import_checkpoint, train
from ssd_torch.data.preprocess import CAFFE_RGB, TORCHVISION_SSD
from ssd_torch.data.synthetic import SYNTHETIC_CLASSES
from ssd_torch.modeling.model import model_from_config
from ssd_torch.modeling.model_config import ModelConfig, ssd300_slim
from ssd_torch.checkpoint import atomic_save, build_checkpoint, read_checkpoint
from train_fixtures import one_line, tiny_run_args


def _source(path, names):
    """A slim SSD300 checkpoint with ssd.pytorch's priors and the Caffe input convention (not the demo's)."""
    torch.manual_seed(5)
    cfg = dataclasses.replace(ssd300_slim(num_classes=len(names)), prior_spec=SSD_PYTORCH_VOC, preprocess=CAFFE_RGB)
    model = model_from_config(cfg)
    return atomic_save(build_checkpoint(model=model, model_config=cfg.to_dict(), class_names=names, step=9,
                                        epoch=1), path), model.state_dict()


def test_init_from_refusals(tmp_path, capsys):
    data, run = tmp_path / "syn", tmp_path / "run"
    assert train.main(tiny_run_args(data, run, "--init-from", "a.pt", "--backbone-weights", "b.pth")) == 2
    assert "model.init_from must be null when model.backbone_weights is set" in one_line(capsys.readouterr().err)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    assert train.main(tiny_run_args(data, run, "--init-from", str(junk))) == 2
    err = one_line(capsys.readouterr().err)
    assert f"checkpoint {junk}: not a PyTorch checkpoint" in err
    peer = tmp_path / "peer.pth"
    torch.save({"vgg.0.weight": torch.zeros(1)}, peer)  # a peer's state dict: ssd-import converts those
    assert train.main(tiny_run_args(data, run, "--init-from", str(peer))) == 2
    assert "import a peer's file with ssd-import" in one_line(capsys.readouterr().err)
    assert not (run / "config.json").exists()
    # --init-from satisfies the "ImageNet weights required" rule of an SSD300-VGG16 preset
    assert train.main(["--preset", "coco", "--init-from", "x.pt", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["init_from"] == "x.pt"


def test_init_from_adopts_priors_and_preprocess_and_resumes_without_the_source(tmp_path, capsys):
    names = ["background", "circle", "dog", "square"]
    src, src_sd = _source(tmp_path / "src.pt", names)
    data, run = tmp_path / "syn", tmp_path / "run"
    assert train.main(tiny_run_args(data, run, "--init-from", str(src))) == 0
    out = capsys.readouterr().out
    assert f"init from {src}" in out and "kept: backbone, L2Norm and extras, loc heads" in out
    assert "conf heads: 3 class rows from the source (3 same name)" in out
    assert f"re-initialised: conf rows of {[n for n in SYNTHETIC_CLASSES if n not in names]}" in out
    ckpt = read_checkpoint(run / "checkpoints" / "last.pt")
    cfg = ModelConfig.from_dict(ckpt["model_config"])
    assert cfg.prior_spec == SSD_PYTORCH_VOC and cfg.preprocess == CAFFE_RGB
    assert json.loads((run / "config.json").read_text())["model"]["init_from"] == str(src)
    # resuming needs only the run's checkpoint: the source is gone, its priors and convention stay
    src.unlink()
    assert train.main(["--preset", "demo", "--config", str(run / "config.json"), "--resume", "auto",
                       "--max-steps", "2"]) == 0
    assert "not loaded again" in capsys.readouterr().out
    again = read_checkpoint(run / "checkpoints" / "last.pt")
    assert again["step"] == 2 and ModelConfig.from_dict(again["model_config"]) == cfg
    # the classes of a run can never change on resume, not even with --resume-with-changes
    assert train.main(["--preset", "demo", "--config", str(run / "config.json"), "--resume", "auto",
                       "--classes", "a,b,c,d,e,f", "--resume-with-changes", "--max-steps", "3"]) == 2
    assert "was trained for the classes" in one_line(capsys.readouterr().err)


@pytest.mark.slow
def test_fine_tune_an_imported_torchvision_coco_model(tmp_path, capsys):
    """torchvision's ssd300_vgg16 state dict (random weights; the real file cannot be downloaded here) ->
    ssd-import -> ssd-train --init-from on synthetic VOC data -> ssd-eval reads the result; the run's
    checkpoints carry torchvision's COCO priors and input convention."""
    from torchvision.models.detection import ssd300_vgg16

    torch.manual_seed(0)
    peer = tmp_path / "ssd300_vgg16_coco.pth"
    torch.save(ssd300_vgg16(weights=None, weights_backbone=None).state_dict(), peer)
    imported = tmp_path / "tv_coco.pt"
    assert import_checkpoint.main(["torchvision", str(peer), "--out", str(imported)]) == 0
    run = tmp_path / "run"
    args = tiny_run_args(tmp_path / "syn", run, "--init-from", str(imported), "--set", "run.eval_batch_size=2",
                         trainval=2, test=1, batch=2)
    args[args.index("demo")] = "voc07"  # SSD300-VGG16: the network the imported checkpoint has
    assert train.main([*args, "--set", 'data.dataset="synthetic"', "--set", 'data.augment="light"']) == 0
    out = capsys.readouterr().out
    assert f"init from {imported} (ssd300_vgg16, 91 classes)" in out
    assert "kept: backbone, L2Norm and extras, loc heads" in out
    assert "conf heads: 1 class rows from the source (1 same name)" in out  # background: no shape is a COCO class
    assert f"re-initialised: conf rows of {list(SYNTHETIC_CLASSES)}" in out
    ckpt = read_checkpoint(run / "checkpoints" / "last.pt")
    cfg = ModelConfig.from_dict(ckpt["model_config"])
    assert cfg.prior_spec == TORCHVISION_COCO and cfg.preprocess == TORCHVISION_SSD
    assert ckpt["class_names"] == ["background", *SYNTHETIC_CLASSES]
    assert eval_cli.main([str(run / "checkpoints" / "last.pt"), "--data", str(tmp_path / "syn"), "--device", "cpu",
                          "--batch-size", "2", "--no-progress", "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "results_voc07.json").read_text())["num_images"] == 1
