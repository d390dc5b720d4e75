"""load_vgg16_backbone: torchvision and ssd.pytorch layouts, fc6/fc7 decimation taps, every kind of bad file."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from ssd_torch.modeling.model_config import ssd300_slim, ssd300_vgg16
from ssd_torch.modeling.model import SSD300, model_from_config
from ssd_torch.modeling.weights import load_vgg16_backbone

# ssd.pytorch's vgg ModuleList: VGG16 cfg [64, 64, M, 128, 128, M, 256, 256, 256, C, 512, 512, 512, M,
# 512, 512, 512, pool5, fc6 (3x3 dil 6), ReLU, fc7 (1x1), ReLU] -> conv index: weight shape.
SSD_PYTORCH_SHAPES = {
    0: (64, 3, 3, 3), 2: (64, 64, 3, 3), 5: (128, 64, 3, 3), 7: (128, 128, 3, 3), 10: (256, 128, 3, 3),
    12: (256, 256, 3, 3), 14: (256, 256, 3, 3), 17: (512, 256, 3, 3), 19: (512, 512, 3, 3), 21: (512, 512, 3, 3),
    24: (512, 512, 3, 3), 26: (512, 512, 3, 3), 28: (512, 512, 3, 3), 31: (1024, 512, 3, 3), 33: (1024, 1024, 1, 1),
}
CONV_INDICES = sorted(SSD_PYTORCH_SHAPES)[:13]


def _random_like_shapes(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=gen) for k, s in shapes.items()}


@pytest.fixture(scope="module")
def torchvision_sd() -> dict[str, torch.Tensor]:
    """Random tensors with exactly the keys and shapes of torchvision's vgg16 state dict."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in torchvision.models.vgg16(weights=None).state_dict().items()}
    return _random_like_shapes(shapes, seed=0)


@pytest.fixture(scope="module")
def torchvision_file(torchvision_sd: dict[str, torch.Tensor], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vgg") / "vgg16-imagenet.pth"
    torch.save(torchvision_sd, path)
    return path


@pytest.fixture(scope="module")
def ssd_pytorch_sd() -> dict[str, torch.Tensor]:
    shapes = {}
    for idx, shape in SSD_PYTORCH_SHAPES.items():
        shapes[f"{idx}.weight"], shapes[f"{idx}.bias"] = shape, shape[:1]
    return _random_like_shapes(shapes, seed=1)


@pytest.fixture(scope="module")
def vgg_model() -> SSD300:
    return model_from_config(ssd300_vgg16())


def _snapshot(model: SSD300) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow  # writes and reads a full-size (550 MB) torchvision VGG16 state dict
def test_torchvision_layout_convs_and_decimated_fc(vgg_model: SSD300, torchvision_file: Path,
                                                   torchvision_sd: dict[str, torch.Tensor]) -> None:
    before = _snapshot(vgg_model)
    report = load_vgg16_backbone(vgg_model, torchvision_file)
    assert report.layout == "torchvision" and report.path == str(torchvision_file)
    assert len(report.loaded) == 30 and set(report.ignored) == {"classifier.6.weight", "classifier.6.bias"}
    assert set(report.converted) == {f"classifier.{i}.{p}" for i in (0, 3) for p in ("weight", "bias")}
    convs = vgg_model.vgg_convs()
    for conv, idx in zip(convs, CONV_INDICES):
        assert torch.equal(conv.weight, torchvision_sd[f"features.{idx}.weight"])
        assert torch.equal(conv.bias, torchvision_sd[f"features.{idx}.bias"])
    # fc6: SSD weight[o, c, r, s] = VGG fc6 row 4*o, column c*49 + (3*r)*7 + (3*s) (flattened C x 7 x 7 input:
    # channel-major, then row, then column) — output units 0, 4, 8, ..., taps 0, 3, 6 in both directions.
    o, c, r, s = torch.meshgrid(torch.arange(1024), torch.arange(512), torch.arange(3), torch.arange(3),
                                indexing="ij")
    flat = (4 * o) * 25088 + c * 49 + (3 * r) * 7 + 3 * s
    assert torch.equal(convs[13].weight, torchvision_sd["classifier.0.weight"].flatten()[flat])
    assert torch.equal(convs[13].bias, torchvision_sd["classifier.0.bias"][0:4096:4])
    assert convs[13].dilation == (6, 6) and convs[13].padding == (6, 6)
    fc6 = torchvision_sd["classifier.0.weight"]  # a few taps by hand, as a reader would check them
    assert convs[13].weight[0, 0, 0, 0] == fc6[0, 0] and convs[13].weight[1, 0, 1, 1] == fc6[4, 3 * 7 + 3]
    assert convs[13].weight[1023, 511, 2, 2] == fc6[4092, 511 * 49 + 48]
    # fc7: SSD weight[o, i, 0, 0] = VGG fc7[4*o, 4*i] (inputs are fc6's outputs, of which every 4th was kept).
    fc7 = torchvision_sd["classifier.3.weight"]
    assert torch.equal(convs[14].weight[:, :, 0, 0], fc7[0::4][:, 0::4])
    assert convs[14].weight[3, 5, 0, 0] == fc7[12, 20]
    assert torch.equal(convs[14].bias, torchvision_sd["classifier.3.bias"][0::4])
    after = vgg_model.state_dict()
    assert set(report.untouched) == {k for k in after if not k.startswith(("lower.", "upper."))}
    for name in report.untouched:
        assert torch.equal(after[name], before[name]), name


def test_ssd_pytorch_layout_loads_every_conv(vgg_model: SSD300, ssd_pytorch_sd: dict[str, torch.Tensor],
                                             tmp_path: Path) -> None:
    path = tmp_path / "vgg16_reducedfc.pth"
    torch.save(ssd_pytorch_sd, path)
    report = load_vgg16_backbone(vgg_model, path)
    assert report.layout == "ssd.pytorch" and report.converted == () and report.ignored == ()
    for conv, idx in zip(vgg_model.vgg_convs(), SSD_PYTORCH_SHAPES):
        assert torch.equal(conv.weight, ssd_pytorch_sd[f"{idx}.weight"])
        assert torch.equal(conv.bias, ssd_pytorch_sd[f"{idx}.bias"])


@pytest.mark.parametrize("make", [lambda: ssd300_slim(), lambda: ssd300_slim(batch_norm=False)])
def test_slim_model_is_rejected_before_reading(make, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="full-width VGG16"):
        load_vgg16_backbone(model_from_config(make()), tmp_path / "does-not-exist.pth")


def _mutations(sd: dict[str, torch.Tensor]) -> list[tuple[str, dict[str, torch.Tensor], list[str]]]:
    """(case, mutated ssd.pytorch-layout dict, strings the error must contain)."""
    truncated = {k: v for k, v in sd.items() if not k.startswith(("31.", "33."))}
    renamed = dict(sd)
    renamed["5.weights"] = renamed.pop("5.weight")
    wrong = {**sd, "0.weight": torch.zeros(64, 3, 5, 5), "33.bias": torch.zeros(4096)}
    extra = {**sd, "35.weight": torch.zeros(3)}
    integer = {**sd, "2.bias": torch.zeros(64, dtype=torch.int64)}
    return [
        ("truncated", truncated, ["missing keys", "31.bias", "31.weight", "33.bias", "33.weight"]),
        ("renamed", renamed, ["missing keys: ['5.weight']", "unexpected keys: ['5.weights']"]),
        ("wrong shapes", wrong, ["0.weight: [64, 3, 5, 5] (expected [64, 3, 3, 3])", "33.bias: [4096]"]),
        ("unexpected", extra, ["unexpected keys: ['35.weight']"]),
        ("integer", integer, ["non-floating", "2.bias"]),
    ]


def test_bad_state_dicts_name_the_keys_and_leave_the_model_unchanged(
        vgg_model: SSD300, ssd_pytorch_sd: dict[str, torch.Tensor], tmp_path: Path) -> None:
    before = _snapshot(vgg_model)
    for case, sd, needles in _mutations(ssd_pytorch_sd):
        path = tmp_path / f"{case.replace(' ', '_')}.pth"
        torch.save(sd, path)
        with pytest.raises(ValueError) as info:
            load_vgg16_backbone(vgg_model, path)
        for needle in [str(path)] + needles:
            assert needle in str(info.value), (case, needle, str(info.value))
    after = vgg_model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_truncated_torchvision_file_names_missing_classifier(vgg_model: SSD300,
                                                             ssd_pytorch_sd: dict[str, torch.Tensor],
                                                             tmp_path: Path) -> None:
    features_only = {f"features.{k}": v for k, v in ssd_pytorch_sd.items() if int(k.split(".")[0]) < 29}
    torch.save(features_only, tmp_path / "features.pth")
    with pytest.raises(ValueError, match=r"torchvision.*missing keys.*classifier\.0\.bias.*classifier\.3\.weight"):
        load_vgg16_backbone(vgg_model, tmp_path / "features.pth")


def test_files_that_are_not_state_dicts(vgg_model: SSD300, tmp_path: Path) -> None:
    (tmp_path / "text.pth").write_text("not a pickle")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    torch.save({"0.weight": 1.0}, tmp_path / "number.pth")
    torch.save({}, tmp_path / "empty.pth")
    torch.save({"model": torch.zeros(1)}, tmp_path / "other.pth")
    for name, message in [("text.pth", "not a readable PyTorch state dict"), ("list.pth", "non-empty state dict"),
                          ("number.pth", "offending keys"), ("empty.pth", "non-empty state dict"),
                          ("other.pth", "neither a torchvision")]:
        with pytest.raises(ValueError, match=message) as info:
            load_vgg16_backbone(vgg_model, tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_vgg16_backbone(vgg_model, tmp_path / "missing.pth")
