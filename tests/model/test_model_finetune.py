"""init_from_checkpoint: the body and loc heads copied, conf-head rows mapped by class name (COCO -> VOC names),
the rest left at the fresh initialisation, the config adopting the source's priors and input convention; a
torchvision COCO model imported and fine-tuned to VOC runs a training step."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from reference.priors import SSD300, TORCHVISION_COCO
from ssd_torch.data.preprocess import CAFFE_RGB, IMAGENET, TORCHVISION_SSD
from ssd_torch.data.synthetic import SYNTHETIC_CLASSES
from ssd_torch.data.voc import VOC_CLASSES
from ssd_torch.errors import CheckpointError, ConfigError
from ssd_torch.loss import MultiBoxLoss
from ssd_torch.modeling.finetune import canonical_class_name, class_row_map, init_from_checkpoint
from ssd_torch.modeling.importers import coco_class_names, imported_checkpoint
from ssd_torch.modeling.model import model_from_config
from ssd_torch.modeling.model_config import ssd300_slim, ssd300_vgg16
from ssd_torch.priors import default_boxes
from ssd_torch.checkpoint import atomic_save, build_checkpoint

VOC = ["background", *VOC_CLASSES]
#: COCO's spelling of each VOC class (torchvision's category names), by hand.
COCO_NAME = {"aeroplane": "airplane", "diningtable": "dining table", "motorbike": "motorcycle",
             "pottedplant": "potted plant", "sofa": "couch", "tvmonitor": "tv"}


def test_coco_to_voc_maps_all_twenty_classes() -> None:
    coco = list(coco_class_names())
    rows = class_row_map(VOC, coco)
    assert len(rows) == 21 and rows[0] == 0
    for t, name in enumerate(VOC[1:], start=1):
        assert coco[rows[t]] == COCO_NAME.get(name, name), name
    assert coco[rows[VOC.index("person")]] == "person" and rows[VOC.index("person")] == 1  # COCO id 1
    assert rows[VOC.index("tvmonitor")] == 72  # COCO id of tv
    assert canonical_class_name("__background__") == "background" == canonical_class_name("Background")
    assert class_row_map(["background", "N/A", "circle"], coco) == {0: 0}  # N/A is never a class


def _slim_checkpoint(path: Path, names: list[str], seed: int, **cfg_changes) -> tuple[Path, dict, object]:
    torch.manual_seed(seed)
    cfg = dataclasses.replace(ssd300_slim(num_classes=len(names)), **cfg_changes)
    model = model_from_config(cfg)
    with torch.no_grad():  # BN statistics that differ from the fresh ones, so that copying them is visible
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.num_batches_tracked.fill_(7)
    atomic_save(build_checkpoint(model=model, model_config=cfg.to_dict(), class_names=names, step=10, epoch=1),
                path)
    return path, model.state_dict(), cfg


def _rows(weight: torch.Tensor, boxes: int, classes: int, c: int) -> torch.Tensor:
    """The rows of class ``c`` in a conf head (channel ``a * classes + c`` for each box ``a``)."""
    return weight.view(boxes, classes, *weight.shape[1:])[:, c]


def test_slim_rows_mapped_by_name_others_fresh(tmp_path: Path) -> None:
    src_names = ["background", "cat", "dog", "person"]
    spec = dataclasses.replace(SSD300, clip=False)
    path, src, _ = _slim_checkpoint(tmp_path / "src.pt", src_names, seed=1, prior_spec=spec, preprocess=CAFFE_RGB)
    names = ["background", "person", "bird", "cat"]
    torch.manual_seed(2)
    cfg = ssd300_slim(num_classes=4)
    model = model_from_config(cfg)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    new_cfg, report = init_from_checkpoint(model, cfg, names, path)
    got = model.state_dict()
    for k, v in got.items():
        if not k.startswith("conf_heads."):
            assert torch.equal(v, src[k]), k  # body, BN statistics, loc heads
    for k, head in enumerate(model.conf_heads):
        b = model.head_boxes[k]
        for t, s in ((0, 0), (1, 3), (3, 1)):  # background, person, cat
            assert torch.equal(_rows(head.weight, b, 4, t), _rows(src[f"conf_heads.{k}.weight"], b, 4, s))
            assert torch.equal(_rows(head.bias, b, 4, t), _rows(src[f"conf_heads.{k}.bias"], b, 4, s))
        assert torch.equal(_rows(head.weight, b, 4, 2), _rows(fresh[f"conf_heads.{k}.weight"], b, 4, 2))  # bird
    assert new_cfg.prior_spec == spec and new_cfg.preprocess == CAFFE_RGB
    assert dataclasses.replace(new_cfg, prior_spec=cfg.prior_spec, preprocess=cfg.preprocess) == cfg
    assert report.mapped == (("background", "background"), ("person", "person"), ("cat", "cat"))
    text = report.text()
    assert "3 class rows from the source" in text and "conf rows of ['bird']" in text and "loc heads" in text
    assert "preprocess of the source (was RGB in [0, 1]" in text


def test_same_classes_keep_everything(tmp_path: Path) -> None:
    names = ["background", *SYNTHETIC_CLASSES]
    path, src, _ = _slim_checkpoint(tmp_path / "src.pt", names, seed=3)
    model = model_from_config(ssd300_slim(num_classes=7))
    new_cfg, report = init_from_checkpoint(model, ssd300_slim(num_classes=7), names, path)
    assert all(torch.equal(v, src[k]) for k, v in model.state_dict().items())
    assert report.reinitialised == () and len(report.mapped) == 7 and new_cfg == ssd300_slim(num_classes=7)


def test_other_boxes_per_cell_reinitialises_the_heads(tmp_path: Path) -> None:
    spec = dataclasses.replace(SSD300, aspect_ratios=((2,),) * 6)  # 4 boxes per cell everywhere
    path, _, _ = _slim_checkpoint(tmp_path / "src.pt", ["background", "a"], seed=4, prior_spec=spec,
                                  head_boxes=(4,) * 6)
    cfg = ssd300_slim(num_classes=2)
    model = model_from_config(cfg)
    new_cfg, report = init_from_checkpoint(model, cfg, ["background", "a"], path)
    assert report.mapped == () and "loc heads (other boxes per cell)" in report.reinitialised
    assert new_cfg.prior_spec == cfg.prior_spec  # the heads were not kept: our priors stay


def test_kept_loc_heads_bring_their_variances(tmp_path: Path) -> None:
    # reproduces: copied loc heads decoded (and trained) with the run's variances, not the ones they learned
    path, _, _ = _slim_checkpoint(tmp_path / "src.pt", ["background", "a"], seed=6, variances=(0.2, 0.3))
    cfg = ssd300_slim(num_classes=2)
    new_cfg, report = init_from_checkpoint(model_from_config(cfg), cfg, ["background", "a"], path)
    assert new_cfg.variances == (0.2, 0.3)
    assert "variances of the source (was (0.1, 0.2)): (0.2, 0.3)" in report.text()


def test_reinitialised_loc_heads_keep_the_runs_variances(tmp_path: Path) -> None:
    spec = dataclasses.replace(SSD300, aspect_ratios=((2,),) * 6)  # 4 boxes per cell: the loc heads do not fit
    path, _, _ = _slim_checkpoint(tmp_path / "src.pt", ["background", "a"], seed=7, prior_spec=spec,
                                  head_boxes=(4,) * 6, variances=(0.2, 0.3))
    cfg = ssd300_slim(num_classes=2)
    new_cfg, report = init_from_checkpoint(model_from_config(cfg), cfg, ["background", "a"], path)
    assert new_cfg.variances == (0.1, 0.2) and "variances" not in report.text()


def test_another_network_is_refused_with_the_keys(tmp_path: Path) -> None:
    path, _, _ = _slim_checkpoint(tmp_path / "src.pt", ["background", "a"], seed=5)
    model = model_from_config(ssd300_slim(num_classes=2, batch_norm=False))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        init_from_checkpoint(model, ssd300_slim(num_classes=2, batch_norm=False), ["background", "a"], path)
    message = str(info.value)
    assert "differs from this run's (ssd300_slim) outside the heads" in message and "unexpected keys" in message
    assert "\n" not in message and str(path) in message
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="class names must start with 'background'"):
        init_from_checkpoint(model, ssd300_slim(num_classes=2), ["a", "b"], path)
    with pytest.raises(CheckpointError, match="file not found"):
        init_from_checkpoint(model, ssd300_slim(num_classes=2), ["background", "a"], tmp_path / "none.pt")


@pytest.mark.slow  # a torchvision COCO SSD300 imported (143 MB) and a VGG16 SSD300 trained for one step (~15 s)
def test_torchvision_coco_import_fine_tuned_to_voc_and_synthetic(tmp_path: Path) -> None:
    from torchvision.models.detection import ssd300_vgg16 as tv_ssd300_vgg16

    torch.manual_seed(0)
    tv_sd = tv_ssd300_vgg16(weights=None, weights_backbone=None).state_dict()
    torch.save(tv_sd, tmp_path / "ssd300_vgg16_coco.pth")
    ckpt, _ = imported_checkpoint("torchvision", tmp_path / "ssd300_vgg16_coco.pth")
    path = atomic_save(ckpt, tmp_path / "coco.pt")
    coco = coco_class_names()

    cfg = ssd300_vgg16(num_classes=21)
    model = model_from_config(cfg)
    new_cfg, report = init_from_checkpoint(model, cfg, VOC, path)
    assert new_cfg.prior_spec == TORCHVISION_COCO and new_cfg.preprocess == TORCHVISION_SSD
    assert len(report.mapped) == 21 and report.reinitialised == ()
    assert "aeroplane<-airplane" in report.text() and "tvmonitor<-tv" in report.text()
    for k, head in enumerate(model.conf_heads):  # mapped rows equal the torchvision file's rows
        b = model.head_boxes[k]
        theirs = tv_sd[f"head.classification_head.module_list.{k}.weight"]
        for t, name in enumerate(VOC):
            s = coco.index(COCO_NAME.get(name, name)) if t else 0
            assert torch.equal(_rows(head.weight, b, 21, t), _rows(theirs, b, 91, s)), (k, name)
    assert torch.equal(model.l2norm.weight, tv_sd["backbone.scale_weight"])
    assert torch.equal(model.upper[8].weight, tv_sd["backbone.extra.0.7.1.weight"])  # fc6

    # one training step: forward, the SSD loss against matched targets, backward
    model.train()
    loss_fn = MultiBoxLoss(default_boxes(new_cfg.prior_spec))
    x = torch.randn(1, 3, 300, 300) * 50
    gt = torch.tensor([[[0.1, 0.2, 0.5, 0.7], [0.4, 0.1, 0.9, 0.6]]])
    parts = loss_fn(*model(x), gt, torch.tensor([[15, 12]]), torch.tensor([2]))
    (parts.loc + parts.conf).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert int(parts.num_pos) > 0  # positives were matched
    for heads in (model.conf_heads, model.loc_heads):
        assert sum(float(h.weight.grad.abs().sum()) for h in heads) > 0

    synthetic = ["background", *SYNTHETIC_CLASSES]
    cfg6 = ssd300_vgg16(num_classes=7)
    _, report6 = init_from_checkpoint(model_from_config(cfg6), cfg6, synthetic, path)
    assert report6.mapped == (("background", "background"),)
    assert f"conf rows of {list(SYNTHETIC_CLASSES)}" in report6.text()
    assert IMAGENET != TORCHVISION_SSD  # the adopted convention is a real change from our default
