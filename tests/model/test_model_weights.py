"""load_backbone: torchvision and ssd.pytorch layouts, fc6/fc7 decimation taps, torchvision's weights API sources
(a hub cache in a temporary TORCH_HOME, never the network), the input convention of each source, every kind of
bad file."""
from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from ssd_torch.data.preprocess import CAFFE_RGB, IMAGENET, TORCHVISION_SSD
from ssd_torch.errors import CheckpointError, ConfigError
from ssd_torch.modeling.model_config import ssd300_slim, ssd300_vgg16
from ssd_torch.modeling.model import SSD300, model_from_config
from ssd_torch.modeling.weights import hub_file, load_backbone

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
    report = load_backbone(vgg_model, torchvision_file)
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
    report = load_backbone(vgg_model, path)
    assert report.layout == "ssd.pytorch" and report.converted == () and report.ignored == ()
    for conv, idx in zip(vgg_model.vgg_convs(), SSD_PYTORCH_SHAPES):
        assert torch.equal(conv.weight, ssd_pytorch_sd[f"{idx}.weight"])
        assert torch.equal(conv.bias, ssd_pytorch_sd[f"{idx}.bias"])
    assert report.preprocess == CAFFE_RGB


def _ssd_pytorch_input(rgb: np.ndarray) -> np.ndarray:
    """What ssd.pytorch's eval.py / train.py feed the network, step by step as its code does it: cv2 reads BGR,
    ``BaseTransform`` subtracts ``MEANS = (104, 117, 123)``, ``VOCDetection.pull_item`` swaps to RGB with
    ``img[:, :, (2, 1, 0)]``; HWC float32."""
    bgr = rgb[:, :, ::-1].astype(np.float32)
    return (bgr - np.array((104, 117, 123), np.float32))[:, :, (2, 1, 0)]


def test_reduced_fc_input_convention_is_what_ssd_pytorch_feeds_it() -> None:
    """ssd.pytorch (and lufficc, and torchvision's IMAGENET1K_FEATURES port of the same weights) feed
    vgg16_reducedfc.pth 0-255 RGB minus (123, 117, 104): CAFFE_RGB exactly, TORCHVISION_SSD within 2e-3."""
    # reproduces: the reduced-fc weights were fed RGB [0, 1] with the ImageNet mean/std
    rgb = np.array([[[200, 100, 50], [0, 255, 17]]], dtype=np.uint8)  # 1 x 2 pixels
    ours = CAFFE_RGB.to_tensor(Image.fromarray(rgb)).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(ours[0, 0], [77.0, -17.0, -54.0])  # 200 - 123, 100 - 117, 50 - 104
    np.testing.assert_array_equal(ours, _ssd_pytorch_input(rgb))
    # torchvision's form of the same convention: (p / 255 - 0.48235) * 255 = p - 122.99925
    tv = TORCHVISION_SSD.to_tensor(Image.fromarray(rgb)).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(tv[0, 0], [200 - 122.99925, 100 - 116.9991, 50 - 103.9992], rtol=0, atol=1e-4)
    np.testing.assert_allclose(tv, ours, rtol=0, atol=2e-3)
    assert CAFFE_RGB.describe() == "RGB 0-255, minus mean [123, 117, 104], divided by std [1, 1, 1]"
    assert TORCHVISION_SSD.describe().endswith("(= 0-255 minus [122.999, 116.999, 103.999])")


@pytest.mark.parametrize("make", [lambda: ssd300_slim(), lambda: ssd300_slim(batch_norm=False)])
def test_slim_model_is_rejected_before_reading(make, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="full-width VGG16"):
        load_backbone(model_from_config(make()), tmp_path / "does-not-exist.pth")


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
        with pytest.raises(CheckpointError) as info:
            load_backbone(vgg_model, path)
        for needle in [str(path)] + needles:
            assert needle in str(info.value), (case, needle, str(info.value))
    after = vgg_model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_truncated_torchvision_file_names_missing_classifier(vgg_model: SSD300,
                                                             ssd_pytorch_sd: dict[str, torch.Tensor],
                                                             tmp_path: Path) -> None:
    features_only = {f"features.{k}": v for k, v in ssd_pytorch_sd.items() if int(k.split(".")[0]) < 29}
    torch.save(features_only, tmp_path / "features.pth")
    with pytest.raises(CheckpointError, match=r"torchvision.*missing keys.*classifier\.0\.bias.*classifier\.3\.weight"):
        load_backbone(vgg_model, tmp_path / "features.pth")


def test_files_that_are_not_state_dicts(vgg_model: SSD300, tmp_path: Path) -> None:
    (tmp_path / "text.pth").write_text("not a pickle")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    torch.save({"0.weight": 1.0}, tmp_path / "number.pth")
    torch.save({}, tmp_path / "empty.pth")
    torch.save({"model": torch.zeros(1)}, tmp_path / "other.pth")
    for name, message in [("text.pth", "not a PyTorch checkpoint"), ("list.pth", "non-empty state dict"),
                          ("number.pth", "offending keys"), ("empty.pth", "non-empty state dict"),
                          ("other.pth", "neither a torchvision")]:
        with pytest.raises(CheckpointError, match=message) as info:
            load_backbone(vgg_model, tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="not found.*missing.pth"):
        load_backbone(vgg_model, tmp_path / "missing.pth")


# --- torchvision's weights API (hub cache in a temporary TORCH_HOME) and features-only weights ----------------


@pytest.fixture(scope="module")
def vgg_features(torchvision_shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Random tensors for torchvision vgg16's ``features.*`` keys (the 13 convs), real shapes."""
    return _random_like_shapes({k: s for k, s in torchvision_shapes.items() if k.startswith("features.")}, seed=5)


@pytest.fixture(scope="module")
def torchvision_shapes() -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in torchvision.models.vgg16(weights=None).state_dict().items()}


def _classifier(kind: str, shapes: dict[str, tuple[int, ...]], seed: int = 6) -> dict[str, torch.Tensor]:
    """torchvision vgg16's ``classifier.*`` tensors, stored small: ``"nan"`` as IMAGENET1K_FEATURES has them (filled
    with NaN; a stride-0 view of one NaN), ``"hankel"`` random with ``w[i, j] = base[i + j]`` (a strided view of
    a short random vector, so that every decimated tap is known by hand)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(k for k in shapes if k.startswith("classifier.")):
        shape = shapes[key]
        if kind == "nan":
            out[key] = torch.full((1,), float("nan")).expand(shape)
        else:
            base = torch.randn(sum(shape) - len(shape) + 1, generator=gen)
            out[key] = base.as_strided(shape, (1,) * len(shape))
    return out


def _no_network(*args, **kwargs):
    raise URLError("no network in tests")


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty torch hub cache in ``tmp_path`` (TORCH_HOME) whose downloads fail as they do offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def test_hub_file_names_are_torchvisions(hub: Path) -> None:
    assert hub_file("IMAGENET1K_V1") == hub / "vgg16-397923af.pth"
    assert hub_file("IMAGENET1K_FEATURES") == hub / "vgg16_features-amdegroot-88682ab5.pth"


def test_imagenet1k_v1_from_the_hub_cache(vgg_model: SSD300, hub: Path, vgg_features: dict[str, torch.Tensor],
                                          torchvision_shapes: dict[str, tuple[int, ...]]) -> None:
    sd = {**vgg_features, **_classifier("hankel", torchvision_shapes)}
    torch.save(sd, hub / "vgg16-397923af.pth")
    report = load_backbone(vgg_model, "torchvision:IMAGENET1K_V1")
    assert report.layout == "torchvision" and report.source == "torchvision:IMAGENET1K_V1"
    assert report.path == str(hub / "vgg16-397923af.pth") and report.preprocess == IMAGENET and report.notes == ()
    convs = vgg_model.vgg_convs()
    for conv, idx in zip(convs, CONV_INDICES):
        assert torch.equal(conv.weight, sd[f"features.{idx}.weight"])
    # fc6[o, c, r, s] = VGG fc6[4o, c*49 + 3r*7 + 3s] = base[4o + 49c + 21r + 3s] (w[i, j] = base[i + j])
    o, c, r, s = torch.meshgrid(torch.arange(1024), torch.arange(512), torch.arange(3), torch.arange(3),
                                indexing="ij")
    base6 = sd["classifier.0.weight"].as_strided((4096 + 25088 - 1,), (1,))
    assert torch.equal(convs[13].weight, base6[4 * o + 49 * c + 21 * r + 3 * s])
    base7 = sd["classifier.3.weight"].as_strided((4096 + 4096 - 1,), (1,))
    i, j = torch.meshgrid(torch.arange(1024), torch.arange(1024), indexing="ij")
    assert torch.equal(convs[14].weight[:, :, 0, 0], base7[4 * i + 4 * j])


@pytest.mark.parametrize("how", ["hub", "local file"])
def test_imagenet1k_features_keeps_fc6_fc7_at_init(how: str, vgg_model: SSD300, hub: Path,
                                                   vgg_features: dict[str, torch.Tensor],
                                                   torchvision_shapes: dict[str, tuple[int, ...]]) -> None:
    """torchvision's IMAGENET1K_FEATURES file (classifier filled with NaN), from the hub or a local path:
    conv1_1 .. conv5_3 loaded, fc6/fc7 left at their (finite) initialisation, Caffe-mean RGB input."""
    # reproduces: that file read as a local path was decimated into NaN fc6/fc7
    path = hub / "vgg16_features-amdegroot-88682ab5.pth"
    torch.save({**vgg_features, **_classifier("nan", torchvision_shapes)}, path)
    before = _snapshot(vgg_model)
    report = load_backbone(vgg_model, "torchvision:IMAGENET1K_FEATURES" if how == "hub" else path)
    assert report.layout == "torchvision-features" and report.preprocess == TORCHVISION_SSD
    assert len(report.loaded) == 26 and report.converted == ()
    assert set(report.ignored) == {k for k in torchvision_shapes if k.startswith("classifier.")}
    convs = vgg_model.vgg_convs()
    for conv, idx in zip(convs, CONV_INDICES):
        assert torch.equal(conv.weight, vgg_features[f"features.{idx}.weight"])
    after = vgg_model.state_dict()
    for name in ("upper.8.weight", "upper.8.bias", "upper.10.weight", "upper.10.bias"):  # fc6, fc7
        assert name in report.untouched and torch.equal(after[name], before[name])
        assert torch.isfinite(after[name]).all()
    assert "fc6/fc7" in report.text() and "NaN" in report.notes[0]


def test_hub_cache_holding_the_wrong_file_is_named(vgg_model: SSD300, hub: Path,
                                                   vgg_features: dict[str, torch.Tensor],
                                                   torchvision_shapes: dict[str, tuple[int, ...]]) -> None:
    torch.save({**vgg_features, **_classifier("nan", torchvision_shapes)}, hub / "vgg16-397923af.pth")
    with pytest.raises(CheckpointError, match="torchvision-features file under the name of torchvision:IMAGENET1K_V1"):
        load_backbone(vgg_model, "torchvision:IMAGENET1K_V1")


@pytest.mark.parametrize("name", ["IMAGENET1K_V1", "IMAGENET1K_FEATURES"])
def test_offline_without_cached_file_names_cache_and_file(name: str, vgg_model: SSD300, hub: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        load_backbone(vgg_model, f"torchvision:{name}")
    message = str(info.value)
    assert str(hub) in message and hub_file(name).name in message and "URLError" in message
    assert "\n" not in message and "TORCH_HOME" in message


def test_unknown_torchvision_name_lists_the_known_ones(vgg_model: SSD300, hub: Path) -> None:
    with pytest.raises(ConfigError, match=r"IMAGENET1K_V2.*torchvision:IMAGENET1K_V1.*torchvision:IMAGENET1K_FEAT"):
        load_backbone(vgg_model, "torchvision:IMAGENET1K_V2")


def test_non_finite_conv_weights_are_refused(vgg_model: SSD300, ssd_pytorch_sd: dict[str, torch.Tensor],
                                            tmp_path: Path) -> None:
    damaged = dict(ssd_pytorch_sd)
    damaged["5.weight"] = damaged["5.weight"].clone()
    damaged["5.weight"][0, 0, 0, 0] = float("inf")
    torch.save(damaged, tmp_path / "damaged.pth")
    before = _snapshot(vgg_model)
    with pytest.raises(CheckpointError, match=r"non-finite values.*conv2_1\.weight"):
        load_backbone(vgg_model, tmp_path / "damaged.pth")
    assert all(torch.equal(v, before[k]) for k, v in vgg_model.state_dict().items())


def test_module_prefix_of_data_parallel_is_removed(vgg_model: SSD300, ssd_pytorch_sd: dict[str, torch.Tensor],
                                                   tmp_path: Path) -> None:
    torch.save({f"module.{k}": v for k, v in ssd_pytorch_sd.items()}, tmp_path / "dp.pth")
    assert load_backbone(vgg_model, tmp_path / "dp.pth").layout == "ssd.pytorch"
    assert torch.equal(vgg_model.vgg_convs()[0].weight, ssd_pytorch_sd["0.weight"])
