"""``ssd_torch.Detector`` (issue #10, item 8): one call from a checkpoint to detections in pixels.

Every input type gives exactly the detections of the same image read from a file; the results equal an
independent recomputation (the model, ``SSDEvalTransform`` with the checkpoint's preprocessing, and
``postprocess`` with its settings); the checkpoint's ``preprocess`` and optional ``postprocess`` are honoured;
bad inputs are refused with a message that says what was expected.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli_fixtures import save_checkpoint, tiny_checkpoint_dict
from ssd_torch.data.synthetic import render_image

NAMES = ["background", "a", "b", "c"]


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tiny_checkpoint_dict(NAMES, seed=5), tmp_path_factory.mktemp("det") / "tiny.pt")


@pytest.fixture(scope="module")
def detector(ckpt_path: Path):
    import ssd_torch

    return ssd_torch.Detector.from_checkpoint(ckpt_path, device="cpu", batch_size=2)


def _scene(seed: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    return render_image(size[0], size[1], np.random.default_rng(seed))[0]


def _same(a, b) -> None:
    """Two ImageDetections are identical (boxes, scores, labels, size)."""
    assert (a.width, a.height) == (b.width, b.height)
    for name in ("boxes", "boxes_normalized", "scores", "labels"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def _recompute(ckpt: Path, image: Image.Image, **postprocess_kwargs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model + eval transform (the checkpoint's preprocessing) + postprocess, written out independently; the
    network channels_last, as the torch runtime runs it (another memory format rounds differently)."""
    from ssd_torch.data.transforms import SSDEvalTransform
    from ssd_torch.modeling.predictor import load_predictor
    from ssd_torch.nms import postprocess
    from ssd_torch.priors import default_boxes

    _p = load_predictor(ckpt)

    model, cfg, _ = _p.model, _p.config, list(_p.categories)
    x = SSDEvalTransform(cfg.image_size, cfg.preprocess)(image, torch.zeros(0, 4), torch.zeros(0))[0][None]
    model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        det = postprocess(*model(x), default_boxes(cfg.prior_spec), **postprocess_kwargs)[0]
    w, h = image.size
    return det.boxes.double().numpy() * np.array([w, h, w, h]), det.scores.double().numpy(), det.labels.numpy()


def test_every_input_type_gives_the_detections_of_the_file(detector, tmp_path: Path) -> None:
    image = _scene(1)
    path = tmp_path / "scene.png"
    image.save(path)
    want = detector(path)
    assert want.path == path and len(want) > 0
    rgb = np.array(image)
    inputs = {"str path": str(path), "PIL": image, "PIL gray->RGB": image.convert("RGB"), "uint8 HWC": rgb,
              "float64 HWC": rgb / 255.0, "float32 HWC": (rgb / 255.0).astype(np.float32),
              "uint16 HWC": rgb.astype(np.uint16) * 257, "uint8 CHW tensor": torch.from_numpy(rgb).permute(2, 0, 1),
              "float CHW tensor": torch.from_numpy(rgb).permute(2, 0, 1).float() / 255,
              "half CHW tensor": (torch.from_numpy(rgb).permute(2, 0, 1).float() / 255).half()}
    for item in inputs.values():
        _same(detector(item), want)  # float16 rounds k/255 by < 0.5/255: quantising gives k back
    gray = np.array(image.convert("L"))
    _same(detector(gray), detector(torch.from_numpy(gray)[None]))
    _same(detector(gray), detector(Image.fromarray(gray)))


def test_results_equal_an_independent_recomputation(detector, ckpt_path: Path) -> None:
    image = _scene(2, (120, 80))
    got = detector(image)
    boxes, scores, labels = _recompute(ckpt_path, image)
    np.testing.assert_allclose(got.boxes, boxes, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got.scores, scores)
    np.testing.assert_array_equal(got.labels, labels)
    assert got.class_names == [NAMES[i] for i in labels]
    np.testing.assert_array_equal(got.boxes, got.boxes_normalized * np.array([120, 80, 120, 80]))
    assert got.boxes.min() >= 0 and got.boxes[:, [0, 2]].max() <= 120 and got.boxes[:, [1, 3]].max() <= 80


def test_one_image_in_one_result_out_a_list_in_a_list_out(detector) -> None:
    images = [_scene(3), _scene(4, (50, 70)), _scene(5)]
    batch = detector(images)  # batch_size 2: two model calls
    assert isinstance(batch, list) and len(batch) == 3 and detector(()) == []
    for image, got in zip(images, batch):
        alone = detector(image)
        assert (got.width, got.height) == image.size and len(got) == len(alone)
        n = min(20, len(alone))  # a batch may run other conv kernels: float noise only
        np.testing.assert_allclose(got.scores[:n], alone.scores[:n], atol=1e-5)
        np.testing.assert_allclose(got.boxes[:n], alone.boxes[:n], atol=1e-3)


def test_the_checkpoint_preprocessing_is_used(tmp_path: Path) -> None:
    from ssd_torch import Detector
    from ssd_torch.data.preprocess import CAFFE_BGR

    ckpt = tiny_checkpoint_dict(NAMES, seed=6)
    rgb_path = save_checkpoint(ckpt, tmp_path / "rgb.pt")
    ckpt["model_config"] = {**ckpt["model_config"], "preprocess": CAFFE_BGR.to_dict()}
    bgr_path = save_checkpoint(ckpt, tmp_path / "bgr.pt")
    image = _scene(6)
    got = Detector.from_checkpoint(bgr_path, device="cpu")(image)
    boxes, scores, labels = _recompute(bgr_path, image)
    np.testing.assert_array_equal(got.scores, scores)
    np.testing.assert_allclose(got.boxes, boxes, atol=1e-9)
    other = Detector.from_checkpoint(rgb_path, device="cpu")(image)  # same weights, ImageNet RGB input
    assert not np.array_equal(other.scores[:10], got.scores[:10])


def test_the_checkpoint_postprocess_settings_are_used_and_overridable(tmp_path: Path) -> None:
    from ssd_torch import Detector

    ckpt = tiny_checkpoint_dict(NAMES, seed=7)
    ckpt["postprocess"] = {"score_threshold": 0.2, "nms_threshold": 0.3, "max_detections": 5}
    path = save_checkpoint(ckpt, tmp_path / "pp.pt")
    detector = Detector.from_checkpoint(path, device="cpu")
    assert detector.postprocess.to_dict() == {"score_threshold": 0.2, "top_k": 400, "nms_threshold": 0.3,
                                              "max_detections": 5, "clip_boxes": True}
    image = _scene(7)
    got = detector(image)
    boxes, scores, labels = _recompute(path, image, score_threshold=0.2, nms_threshold=0.3, max_detections=5)
    assert len(got) == 5 and (got.scores > 0.2).all()
    np.testing.assert_array_equal(got.scores, scores)
    narrowed = Detector.from_checkpoint(path, device="cpu", max_detections=2)
    assert narrowed.postprocess.nms_threshold == 0.3 and len(narrowed(image)) == 2


@pytest.mark.parametrize("entry, fragment", [({"nms": 0.3}, "postprocess: unknown keys ['nms']"),
                                             ({"top_k": 0}, "top_k must be null or an int >= 1"),
                                             ([0.1], "must be a dict")])
def test_an_invalid_postprocess_entry_is_a_checkpoint_error(tmp_path: Path, entry, fragment: str) -> None:
    from ssd_torch import Detector
    from ssd_torch.errors import CheckpointError

    ckpt = tiny_checkpoint_dict(NAMES, seed=7)
    ckpt["postprocess"] = entry
    path = save_checkpoint(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as info:
        Detector.from_checkpoint(path, device="cpu")
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_invalid_overrides_and_classes_are_config_errors(ckpt_path: Path) -> None:
    from ssd_torch import Detector
    from ssd_torch.errors import ConfigError

    with pytest.raises(ConfigError, match="nms_threshold must be in"):
        Detector.from_checkpoint(ckpt_path, device="cpu", nms_threshold=1.5)
    with pytest.raises(ConfigError, match="postprocess: unknown keys"):
        Detector.from_checkpoint(ckpt_path, device="cpu", iou=0.5)
    with pytest.raises(ConfigError, match=r"unknown class 'dog'.*a, b, c"):
        Detector.from_checkpoint(ckpt_path, device="cpu", classes=["a", "dog"])


def test_a_class_selection_gives_the_best_detections_of_those_classes(ckpt_path: Path) -> None:
    from ssd_torch import Detector

    image = _scene(8)
    everything = Detector.from_checkpoint(ckpt_path, device="cpu", max_detections=100000)(image)
    only_b = Detector.from_checkpoint(ckpt_path, device="cpu", classes=["b"], max_detections=4)(image)
    want = everything.select(classes=["b"])
    assert len(want) > 4 and only_b.class_names == ["b"] * 4
    np.testing.assert_array_equal(only_b.scores, want.scores[:4])
    np.testing.assert_array_equal(only_b.boxes, want.boxes[:4])


BAD_INPUTS = {
    "float 0-255": (np.full((8, 8, 3), 200.0), "must be finite and in [0, 1]"),
    "NaN": (np.full((8, 8, 3), np.nan), "must be finite"),
    "int64": (np.zeros((8, 8, 3), dtype=np.int64), "dtype int64 is not supported"),
    "bool tensor": (torch.zeros(3, 8, 8, dtype=torch.bool), "dtype bool is not supported"),
    "CHW array": (np.zeros((3, 8, 8), dtype=np.uint8), "looks channels-first"),
    "HWC tensor": (torch.zeros(8, 8, 3, dtype=torch.uint8), "looks channels-last"),
    "RGBA array": (np.zeros((8, 8, 4), dtype=np.uint8), "expected [H, W, 3] RGB"),
    "batch": (np.zeros((2, 8, 8, 3), dtype=np.uint8), "pass a list of images"),
    "empty": (np.zeros((0, 8, 3), dtype=np.uint8), "got shape (0, 8, 3)"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_inputs_are_refused_with_what_was_expected(detector, name: str) -> None:
    item, fragment = BAD_INPUTS[name]
    with pytest.raises(ValueError) as info:
        detector(item)
    assert fragment in str(info.value)


def test_unsupported_types_and_unreadable_files(detector, tmp_path: Path) -> None:
    from ssd_torch.errors import DatasetError

    with pytest.raises(TypeError, match="pass a path, a PIL image"):
        detector(42)
    (tmp_path / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"x\.jpg: cannot read image"):
        detector(tmp_path / "x.jpg")


def test_to_dict_and_draw(detector) -> None:
    image = _scene(9)
    got = detector(image).select(min_score=0.5)
    assert len(got) > 0 and (got.scores >= 0.5).all()
    doc = got.to_dict()
    assert (doc["width"], doc["height"]) == (96, 64) and doc["orientation"] == {"exif": 1, "applied": "none"}
    first = doc["detections"][0]
    assert first["box"] == got.boxes[0].round(2).tolist() and first["class"] == got.class_names[0]
    drawn = got.draw(image)
    assert drawn.size == image.size and drawn.tobytes() != image.tobytes()
    with pytest.raises(ValueError, match="belong to a 96x64 image"):
        got.draw(image.resize((10, 10)))


def test_device_auto_and_the_package_attribute(ckpt_path: Path) -> None:
    import ssd_torch

    detector = ssd_torch.Detector.from_checkpoint(ckpt_path)
    assert detector.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert ssd_torch.ImageDetections is type(detector(_scene(10)))
    with pytest.raises(AttributeError):
        ssd_torch.NoSuchThing  # noqa: B018


def test_workers_overlap_gives_the_same_results_in_order(ckpt_path: Path, tmp_path: Path) -> None:
    """Decoding and resizing on threads, one batch ahead, changes nothing: the same detections, in input order;
    an unreadable file in a list is the same error."""
    from ssd_torch import Detector
    from ssd_torch.data.images import read_image
    from ssd_torch.errors import ConfigError, DatasetError

    paths = []
    for i, size in enumerate([(96, 64), (50, 70), (80, 80), (64, 96), (70, 50)]):
        paths.append(tmp_path / f"{i}.png")
        _scene(20 + i, size).save(paths[-1])
    serial = Detector.from_checkpoint(ckpt_path, device="cpu", batch_size=2, workers=0)
    threaded = Detector.from_checkpoint(ckpt_path, device="cpu", batch_size=2, workers=3)
    want, got = serial(paths), threaded(paths)
    assert [r.path for r in got] == paths
    for a, b in zip(want, got):
        _same(a, b)
    decoded = [read_image(p) for p in paths[:3]]
    for a, b in zip(serial.detect(decoded), threaded.detect(decoded)):
        _same(a, b)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    for det in (serial, threaded):
        with pytest.raises(DatasetError, match=r"bad\.jpg: cannot read image"):
            det(paths[:3] + [tmp_path / "bad.jpg"] + paths[3:])
    with pytest.raises(ConfigError, match="workers must be an int >= 0"):
        Detector(serial.predictor, workers=-1)
