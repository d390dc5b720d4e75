"""ssd_torch.modeling.importers with ssd.pytorch's and lufficc's layouts (written out by hand in
peer_state_dicts.py): tensors land by role, round trips through the peer layouts, the imported config's priors,
input convention and classes, and one-line errors for files that differ."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from peer_state_dicts import lufficc_shapes, random_state_dict, ssd_pytorch_shapes, torchvision_shapes
from reference.priors import LUFFICC_VOC, SSD_PYTORCH_VOC, TORCHVISION_COCO
from ssd_torch.data.preprocess import CAFFE_RGB, TORCHVISION_SSD
from ssd_torch.data.voc import VOC_CLASSES
from ssd_torch.errors import CheckpointError
from ssd_torch.modeling.importers import (FORMATS, export_state_dict, import_peer_file, import_state_dict,
                                          imported_checkpoint, peer_key_map)
from ssd_torch.modeling.model import model_from_config
from ssd_torch.modeling.model_config import ssd300_vgg16

SHAPES = {"ssd.pytorch": ssd_pytorch_shapes, "lufficc": lufficc_shapes}


@pytest.fixture(scope="module")
def peer_sds() -> dict[str, dict[str, torch.Tensor]]:
    return {name: random_state_dict(make(), seed=i) for i, (name, make) in enumerate(SHAPES.items())}


@pytest.fixture(scope="module")
def ours_21() -> dict[str, torch.Tensor]:
    """A random ssd300_vgg16 state dict for VOC (our key names)."""
    torch.manual_seed(3)
    return model_from_config(ssd300_vgg16(num_classes=21)).state_dict()


def test_key_maps_cover_every_tensor_of_each_layout() -> None:
    with torch.device("meta"):
        ours = set(model_from_config(ssd300_vgg16()).state_dict())
    for name, make in SHAPES.items():
        key_map = peer_key_map(FORMATS[name])
        assert set(key_map) == ours and set(key_map.values()) == set(make())
        assert len(set(key_map.values())) == len(key_map) == 71
    with torch.device("meta"):
        from torchvision.models.detection import ssd300_vgg16 as tv_ssd
        tv_keys = set(tv_ssd(weights=None, weights_backbone=None).state_dict())
    assert set(peer_key_map(FORMATS["torchvision"]).values()) == tv_keys


# Our module -> the peer's, by role: conv1_1, conv4_3, conv5_1 (after pool4), fc6, fc7, conv8_1 / conv9_2 / conv11_2,
# L2Norm, the heads of the first and last source map.
ROLES = {
    "ssd.pytorch": {"lower.0": "vgg.0", "lower.21": "vgg.21", "upper.1": "vgg.24", "upper.8": "vgg.31",
                    "upper.10": "vgg.33", "extras.0.0": "extras.0", "extras.1.2": "extras.3", "extras.3.2": "extras.7",
                    "loc_heads.0": "loc.0", "conf_heads.5": "conf.5"},
    "lufficc": {"lower.0": "backbone.vgg.0", "upper.8": "backbone.vgg.31", "upper.10": "backbone.vgg.33",
                "extras.1.2": "backbone.extras.3", "loc_heads.0": "box_head.predictor.reg_headers.0",
                "conf_heads.5": "box_head.predictor.cls_headers.5"},
}
L2NORM = {"ssd.pytorch": "L2Norm.weight", "lufficc": "backbone.l2_norm.weight"}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_tensors_land_by_role(name: str, peer_sds: dict) -> None:
    sd = peer_sds[name]
    cfg, names, ours = import_state_dict(name, sd)
    for our_module, their_module in ROLES[name].items():
        for p in ("weight", "bias"):
            assert torch.equal(ours[f"{our_module}.{p}"], sd[f"{their_module}.{p}"]), (our_module, p)
    assert torch.equal(ours["l2norm.weight"], sd[L2NORM[name]])
    with torch.device("meta"):
        model = model_from_config(cfg)
    model.load_state_dict(ours, assign=True)  # strict: every key of the network, right shapes
    assert cfg.num_classes == 21 and names == ("background", *VOC_CLASSES)


@pytest.mark.parametrize("name, spec", [("ssd.pytorch", SSD_PYTORCH_VOC), ("lufficc", LUFFICC_VOC),
                                        ("torchvision", TORCHVISION_COCO)])
def test_formats_carry_the_peers_priors_and_input(name: str, spec) -> None:
    fmt = FORMATS[name]
    assert fmt.prior_spec == spec
    assert fmt.preprocess == (TORCHVISION_SSD if name == "torchvision" else CAFFE_RGB)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_round_trip_ours_to_peer_to_ours(name: str, ours_21: dict[str, torch.Tensor]) -> None:
    """Our checkpoint -> the peer's layout -> imported again: the same tensors (and, for the hand-written layouts,
    exactly the peer's key names and shapes)."""
    theirs = export_state_dict(name, ours_21)
    if name in SHAPES:
        assert {k: tuple(v.shape) for k, v in theirs.items()} == SHAPES[name]()
    names = [f"c{i}" for i in range(1, 21)]
    cfg, got_names, back = import_state_dict(name, theirs, class_names=names)
    assert got_names == ("background", *names) and cfg.num_classes == 21
    assert back.keys() == ours_21.keys()
    assert all(torch.equal(back[k], ours_21[k]) for k in ours_21)


def test_export_needs_our_full_state_dict(ours_21: dict[str, torch.Tensor]) -> None:
    partial = {k: v for k, v in ours_21.items() if not k.startswith("conf_heads.")}
    with pytest.raises(CheckpointError, match=r"missing keys \['conf_heads.0.bias'"):
        export_state_dict("ssd.pytorch", partial)


def test_lufficc_file_holds_the_model_under_model_key(peer_sds: dict, tmp_path: Path) -> None:
    path = tmp_path / "vgg_ssd300_voc0712.pth"
    torch.save({"model": peer_sds["lufficc"], "iteration": 120000,
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0, 1]}]}}, path)
    cfg, names, ours, report = import_peer_file("lufficc", path)
    assert torch.equal(ours["conf_heads.5.weight"], peer_sds["lufficc"]["box_head.predictor.cls_headers.5.weight"])
    assert report.format == "lufficc" and report.num_classes == 21 and "77.7" not in report.text()
    assert "lufficc publishes no hash of vgg_ssd300_voc0712.pth" in report.text()
    assert cfg.prior_spec == LUFFICC_VOC and cfg.preprocess == CAFFE_RGB


def test_imported_checkpoint_is_a_checkpoint_of_ours(peer_sds: dict, tmp_path: Path) -> None:
    path = tmp_path / "ssd300_mAP_77.43_v2.pth"
    torch.save(peer_sds["ssd.pytorch"], path)
    ckpt, report = imported_checkpoint("ssd.pytorch", path)
    assert ckpt["format"] == "ssd300-checkpoint/1" and ckpt["step"] == 0 and ckpt["optimizer"] is None
    assert ckpt["class_names"] == ["background", *VOC_CLASSES]
    assert ckpt["extra"]["imported_from"]["format"] == "ssd.pytorch"
    assert ckpt["extra"]["imported_from"]["sha256"] == report.sha256 and len(report.sha256) == 64
    assert torch.equal(ckpt["model"]["upper.10.weight"], peer_sds["ssd.pytorch"]["vgg.33.weight"])
    assert "steps [8, 16, 32, 64, 100, 300]" in report.text() and "cx, cy, w, h" in report.text()
    assert "RGB 0-255, minus mean [123, 117, 104], divided by std [1, 1, 1]" in report.text()


# --- errors: one line naming what differs ---------------------------------------------------------------------


def _one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message
    return message


def test_wrong_layout_names_the_format_it_is(peer_sds: dict) -> None:
    with pytest.raises(CheckpointError) as info:
        import_state_dict("ssd.pytorch", peer_sds["lufficc"], source="vgg_ssd300_voc0712.pth")
    message = _one_line(info)
    assert "vgg_ssd300_voc0712.pth: not a ssd.pytorch SSD300 state dict" in message
    assert "missing keys: ['L2Norm.weight'" in message and "use format 'lufficc'" in message
    with pytest.raises(CheckpointError, match=r"not a torchvision SSD300.*expected the 71 tensors"):
        import_state_dict("torchvision", {"0.weight": torch.zeros(3)})


def test_our_own_checkpoint_given_to_import_is_recognised(ours_21: dict, tmp_path: Path) -> None:
    torch.save({"format": "ssd300-checkpoint/1", "model": ours_21}, tmp_path / "ours.pt")
    with pytest.raises(CheckpointError, match="already an ssd300 checkpoint"):
        import_peer_file("lufficc", tmp_path / "ours.pt")


def test_wrong_class_count_is_named(ours_21: dict) -> None:
    cfg = ssd300_vgg16(num_classes=81)
    coco80 = export_state_dict("ssd.pytorch", model_from_config(cfg).state_dict())
    with pytest.raises(CheckpointError) as info:
        import_state_dict("ssd.pytorch", coco80, source="ssd300_COCO.pth")
    message = _one_line(info)
    assert "the file has 81 classes" in message and "published model has 21" in message and "--classes" in message
    cfg81, names, _ = import_state_dict("ssd.pytorch", coco80, class_names=[f"k{i}" for i in range(80)])
    assert cfg81.num_classes == 81 and names[1] == "k0"
    with pytest.raises(CheckpointError, match="class names given has 3"):
        import_state_dict("ssd.pytorch", export_state_dict("ssd.pytorch", ours_21), class_names=["a", "b"])
    with pytest.raises(CheckpointError, match=r"class names repeat: \['a'\]"):
        import_state_dict("ssd.pytorch", coco80, class_names=["a"] * 80)


def test_wrong_shapes_are_named(peer_sds: dict) -> None:
    sd = dict(peer_sds["ssd.pytorch"])
    sd["vgg.31.weight"] = torch.zeros(1024, 512, 7, 7)  # an fc6 that was not reduced
    sd["conf.3.bias"] = torch.zeros(120)  # 6 boxes x 20: a head for another class count than conf.0's
    with pytest.raises(CheckpointError) as info:
        import_state_dict("ssd.pytorch", sd, source="odd.pth")
    message = _one_line(info)
    assert "odd.pth: not ssd.pytorch's SSD300-VGG16 with 21 classes; wrong shapes:" in message
    assert "conf.3.bias: [120] (expected [126])" in message
    assert "vgg.31.weight: [1024, 512, 7, 7] (expected [1024, 512, 3, 3])" in message


def test_non_finite_weights_and_unknown_format(peer_sds: dict) -> None:
    sd = dict(peer_sds["lufficc"])
    sd["backbone.l2_norm.weight"] = torch.full((512,), float("nan"))
    with pytest.raises(CheckpointError, match=r"non-finite values.*backbone\.l2_norm\.weight"):
        import_state_dict("lufficc", sd)
    with pytest.raises(CheckpointError, match=r"unknown format 'mmdet'.*'lufficc', 'ssd.pytorch', 'torchvision'"):
        import_state_dict("mmdet", sd)


# --- what an imported checkpoint claims and how it detects (issue #20 s1) --------------------------------------


@pytest.fixture(scope="module")
def tv_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights in torchvision's exact ``ssd300_vgg16`` layout (91 classes), under the published name."""
    path = tmp_path_factory.mktemp("tv") / "ssd300_vgg16_coco-b556d3b4.pth"
    torch.save(random_state_dict(torchvision_shapes(), seed=5), path)
    return path


def test_published_figure_only_for_the_published_file(tv_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random weights under torchvision's file name are not the published model: no AP 25.1 in the report or the
    checkpoint. The same file with the published hash (a test double of the prefix) gets the figure."""
    ckpt, report = imported_checkpoint("torchvision", tv_file)
    assert "25.1" not in report.text() and ckpt["extra"]["imported_from"]["published"] is None
    assert "not torchvision's published ssd300_vgg16_coco-b556d3b4.pth" in report.text()
    assert "expected b556d3b4" in report.text()
    import dataclasses
    monkeypatch.setitem(FORMATS, "torchvision", dataclasses.replace(FORMATS["torchvision"],
                                                                    published_sha256=report.sha256[:8]))
    ckpt, report = imported_checkpoint("torchvision", tv_file)
    assert "published: COCO val2017 box AP 25.1" in report.text()
    assert ckpt["extra"]["imported_from"]["published"].startswith("COCO val2017 box AP 25.1")


def test_the_published_hash_is_torchvisions_file_name_prefix() -> None:
    from torchvision.models.detection import SSD300_VGG16_Weights
    url = SSD300_VGG16_Weights.COCO_V1.url
    assert url.endswith(FORMATS["torchvision"].file) and FORMATS["torchvision"].published_sha256 == "b556d3b4"
    assert FORMATS["ssd.pytorch"].published_sha256 is None and FORMATS["lufficc"].published_sha256 is None


#: Each peer's own post-processing, read in its code: torchvision ``SSD.__init__`` defaults (score_thresh 0.01,
#: nms_thresh 0.45, detections_per_img 200, topk_candidates 400 per class, ``clip_boxes_to_image``); lufficc
#: ``ssd/config/defaults.py`` TEST (CONFIDENCE_THRESHOLD 0.01, NMS_THRESHOLD 0.45, MAX_PER_IMAGE 100,
#: MAX_PER_CLASS -1 unused) and ``box_head/inference.py`` (no clipping); ssd.pytorch ``Detect(num_classes, 0,
#: 200, 0.01, 0.45)`` (``nms(..., top_k=200)`` per class, no per-image cap, ``decode`` without clamping).
PEER_POSTPROCESS = {
    "torchvision": {"score_threshold": 0.01, "top_k": 400, "nms_threshold": 0.45, "max_detections": 200,
                    "clip_boxes": True},
    "lufficc": {"score_threshold": 0.01, "top_k": None, "nms_threshold": 0.45, "max_detections": 100,
                "clip_boxes": False},
    "ssd.pytorch": {"score_threshold": 0.01, "top_k": 200, "nms_threshold": 0.45, "max_detections": None,
                    "clip_boxes": False},
}


def _imported(name: str, peer_sds: dict, tv_file: Path, folder: Path) -> tuple[dict, object]:
    path = tv_file if name == "torchvision" else folder / FORMATS[name].file
    if name != "torchvision":
        torch.save(peer_sds[name], path)
    return imported_checkpoint(name, path)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_imported_checkpoint_carries_the_peers_postprocess_and_variances(name: str, peer_sds: dict, tv_file: Path,
                                                                         tmp_path: Path) -> None:
    """The checkpoint holds the peer's own post-processing and box coder (checked on the checkpoint content:
    clip_boxes=false runs only once ssd_torch.nms.postprocess takes the keyword, branch h-nms)."""
    ckpt, report = _imported(name, peer_sds, tv_file, tmp_path)
    assert ckpt["postprocess"] == PEER_POSTPROCESS[name]
    assert tuple(ckpt["model_config"]["variances"]) == (0.1, 0.2)  # torchvision: BoxCoder weights (10, 10, 5, 5)
    assert f"post-processing ({name}'s): score > 0.01" in report.text()
    assert "box coder: variances (0.1, 0.2)" in report.text()


@pytest.mark.slow  # three VGG16 checkpoints written and loaded (~20 s on 2 shared cores)
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_load_predictor_reads_the_imported_settings(name: str, peer_sds: dict, tv_file: Path, tmp_path: Path) -> None:
    from ssd_torch.checkpoint import atomic_save
    from ssd_torch.modeling.predictor import PostprocessConfig, load_predictor

    atomic_save(_imported(name, peer_sds, tv_file, tmp_path)[0], tmp_path / "imported.pt")
    predictor = load_predictor(tmp_path / "imported.pt")
    assert predictor.postprocess == PostprocessConfig(**PEER_POSTPROCESS[name])
    assert predictor.config.variances == (0.1, 0.2)


def test_variances_are_the_box_coders(monkeypatch: pytest.MonkeyPatch, peer_sds: dict) -> None:
    """The imported ModelConfig takes the format's variances (not a hard-coded default)."""
    import dataclasses
    monkeypatch.setitem(FORMATS, "lufficc", dataclasses.replace(FORMATS["lufficc"], variances=(0.2, 0.4)))
    cfg, _, _ = import_state_dict("lufficc", peer_sds["lufficc"])
    assert cfg.variances == (0.2, 0.4)
