"""``Detector(runtime=...)`` (issue #21, section 3): the onnxruntime runtimes run the network graph exported on
first use into a cache keyed on the checkpoint's SHA-256 and the settings, then the same post-processing as the
torch runtime, so both give the same detections (docs/CONTRACT.md "Exported detector": near-tied keys may swap,
scores within 1e-5). A cache entry that does not match its key or its bytes is rebuilt, never used."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_fixtures import save_checkpoint, tiny_checkpoint_dict, write_tiny_checkpoint
from deploy_fixtures import near_tie_groups
from ssd_torch.deploy import runtime as rt
from ssd_torch.errors import ConfigError, UserError

NAMES = ["background", "a", "b", "c"]
needs_ort = pytest.mark.skipif(any(__import__("importlib").util.find_spec(m) is None for m in ("onnx", "onnxruntime")),
                               reason="onnx / onnxruntime (optional extra) not installed")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Rendered scenes saved as JPEGs: decoded by the one image reader, as users' files are."""
    from ssd_torch.data.synthetic import render_image

    folder = tmp_path_factory.mktemp("img")
    paths = []
    for seed, size in ((1, (160, 120)), (2, (90, 140)), (3, (200, 150))):
        path = folder / f"scene{seed}.jpg"
        render_image(size[0], size[1], np.random.default_rng(seed))[0].save(path, quality=90)
        paths.append(path)
    return paths


def _confident(path: Path) -> Path:
    """A checkpoint whose class heads are scaled x20: probabilities that round to 1 in float32."""
    ckpt = tiny_checkpoint_dict(NAMES, seed=3)
    for key in [k for k in ckpt["model"] if k.startswith("conf_heads.")]:
        ckpt["model"][key] = ckpt["model"][key] * 20
    return save_checkpoint(ckpt, path)


def detection_keys(detector, path: Path, result) -> np.ndarray:
    """The ranking key ``logp`` (docs/CONTRACT.md "Ranking key", float64) of each detection of ``result``, found
    from its torch network outputs: the prior whose decoded, clipped box is the detection's box. Scores of a
    confident model round to 1 in float32, so only the keys say which detections are near-tied."""
    from ssd_torch.coding import decode
    from ssd_torch.data.images import read_image
    from ssd_torch.nms import class_log_scores

    pred = detector.predictor
    loc, conf = detector.network(pred.prepare(read_image(path).image)[None])
    boxes = decode(loc[0], pred.priors, pred.config.variances).clamp(0.0, 1.0).double().numpy()
    logp = class_log_scores(conf[0].double()).numpy()
    keys = []
    for box, label in zip(result.boxes_normalized, result.labels):
        prior = np.flatnonzero(np.abs(boxes - box).max(axis=1) <= 1e-7)
        keys.append(logp[prior, label].max())
    return np.array(keys)


def assert_same_detections(want, got, keys: np.ndarray) -> int:
    """``got`` (onnxruntime) has the detections of ``want`` (torch): the same count, scores within 1e-5, the same
    labels and boxes in order except inside a run of near-tied ``keys`` (relative 1e-6), where they are the same
    set (docs/CONTRACT.md "Exported detector"). Returns the number of detections in such runs."""
    assert len(got) == len(want) > 0 and (got.width, got.height) == (want.width, want.height)
    np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-5)
    tied = 0
    for g in near_tie_groups(keys):
        rows = [np.concatenate([d.labels[g, None], d.boxes_normalized[g]], axis=1) for d in (want, got)]
        rows = [r[np.lexsort(r.T[::-1])] for r in rows]
        np.testing.assert_allclose(rows[1], rows[0], rtol=0, atol=1e-5)
        tied += (g.stop - g.start) if g.stop - g.start > 1 else 0
    return tied


# ---- the checks before any work ------------------------------------------------------------------------------

def test_runtime_choices_and_their_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="unknown runtime 'tensorrt': choose one of torch, onnxruntime, "):
        rt.check_runtime("tensorrt", None)
    with pytest.raises(UserError, match="onnxruntime-int8 needs calibration images: calibration_data=PATH"):
        rt.check_runtime("onnxruntime-int8", None)
    with pytest.raises(UserError, match="only used by the runtime onnxruntime-int8"):
        rt.check_runtime("onnxruntime", object())
    rt.check_runtime("torch", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: its import raises ImportError
    with pytest.raises(UserError) as info:
        rt.check_runtime("onnxruntime", None)
    assert "pip install 'ssd300[onnx]'" in str(info.value) and "\n" not in str(info.value)
    rt.check_runtime("torch", None)  # the torch runtime never needs it


def test_detector_refuses_before_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ssd_torch import Detector

    missing = tmp_path / "no-such.pt"  # never read: the runtime's errors come first
    with pytest.raises(UserError, match="needs calibration images"):
        Detector.from_checkpoint(missing, runtime="onnxruntime-int8")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError, match=r"pip install 'ssd300\[onnx\]'"):
        Detector.from_checkpoint(missing, runtime="onnxruntime")


def test_default_cache_dir_honours_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert rt.default_cache_dir() == tmp_path / "xdg" / "ssd300" / "onnx"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert rt.default_cache_dir() == tmp_path / "home" / ".cache" / "ssd300" / "onnx"


# ---- the cache -----------------------------------------------------------------------------------------------

def test_cache_key_names_the_checkpoint_bytes_and_every_setting(tmp_path: Path) -> None:
    from ssd_torch.deploy.quantize import Calibration

    a = write_tiny_checkpoint(tmp_path / "a.pt", NAMES, seed=0)
    b = write_tiny_checkpoint(tmp_path / "b.pt", NAMES, seed=1)
    key = rt.cache_key(a, "onnxruntime")
    assert key["checkpoint_sha256"] == __import__("hashlib").sha256(a.read_bytes()).hexdigest()
    assert key["opset"] == 17 and key["postprocess_in_graph"] is False and key["calibration"] is None
    (tmp_path / "voc").mkdir()
    cal = Calibration(tmp_path / "voc", count=7)
    int8 = rt.cache_key(a, "onnxruntime-int8", cal)
    assert int8["calibration"] == {"data": str((tmp_path / "voc").resolve()), "count": 7, "split": "trainval",
                                   "images_dir": None}
    others = [rt.cache_key(b, "onnxruntime"), rt.cache_key(a, "onnxruntime", opset=13), int8,
              rt.cache_key(a, "onnxruntime-int8", Calibration(tmp_path / "voc", count=8))]
    names = {rt.CacheEntry(tmp_path, k).name for k in [key, *others]}
    assert len(names) == 5


def test_cache_builds_once_and_rebuilds_what_does_not_match(tmp_path: Path) -> None:
    built: list[bytes] = []

    def build() -> bytes:
        built.append(f"graph {len(built)}".encode())
        return built[-1]

    key = {"checkpoint_sha256": "0" * 64, "runtime": "onnxruntime"}
    entry = rt.CacheEntry(tmp_path / "cache", key)
    path, fresh = rt.cached_graph(entry, build)
    assert fresh and path.read_bytes() == b"graph 0" and path.parent == tmp_path / "cache"
    meta = json.loads(entry.sidecar.read_text())
    assert meta["key"] == key and meta["onnx_sha256"] == __import__("hashlib").sha256(b"graph 0").hexdigest()
    assert rt.cached_graph(entry, build) == (path, False) and len(built) == 1  # reused

    path.write_bytes(b"graph 0 tampered")  # the bytes no longer hash to the record
    assert rt.cached_graph(entry, build)[1] and path.read_bytes() == b"graph 1"
    entry.sidecar.write_text(json.dumps({**meta, "key": {**key, "runtime": "other"}}))  # a key that is not ours
    assert rt.cached_graph(entry, build)[1] and path.read_bytes() == b"graph 2"
    entry.sidecar.unlink()  # interrupted between the two writes
    assert rt.cached_graph(entry, build)[1] and path.read_bytes() == b"graph 3"
    entry.sidecar.write_text("{not json")
    assert rt.cached_graph(entry, build)[1] and len(built) == 5
    assert sorted(p.name for p in entry.folder.iterdir()) == sorted([entry.onnx.name, entry.sidecar.name])


def test_an_interrupted_build_leaves_no_entry(tmp_path: Path) -> None:
    entry = rt.CacheEntry(tmp_path, {"k": 1})

    def broken() -> bytes:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rt.cached_graph(entry, broken)
    assert not entry.valid() and list(tmp_path.iterdir()) == []


# ---- both runtimes agree -------------------------------------------------------------------------------------

@needs_ort
@pytest.mark.parametrize("kind", ["demo preset", "confident (conf heads x20)"])
def test_onnxruntime_gives_the_torch_detections(kind: str, images: list[Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from ssd_torch import Detector

    path = tmp_path / "model.pt"
    path = write_tiny_checkpoint(path, NAMES, seed=2) if kind == "demo preset" else _confident(path)
    calls = []
    real = rt.network_bytes
    monkeypatch.setattr(rt, "network_bytes", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch_det = Detector.from_checkpoint(path, device="cpu", batch_size=2)
    ort_det = Detector.from_checkpoint(path, runtime="onnxruntime", cache_dir=tmp_path / "cache", batch_size=2)
    assert ort_det.device.type == "cpu" and isinstance(ort_det.network, rt.OnnxNetwork) and len(calls) == 1
    assert ort_det.runtime_settings() == {"runtime": "onnxruntime", "calibration": None}
    assert torch_det.runtime_settings() == {} and torch_det.predictor.channels_last
    want, got = torch_det(images), ort_det(images)
    tied = [assert_same_detections(w, g, detection_keys(torch_det, p, w)) for p, w, g in zip(images, want, got)]
    assert sum(tied) <= 0.02 * sum(map(len, want)), tied  # the exemption is not what makes it pass
    again = Detector.from_checkpoint(path, runtime="onnxruntime", cache_dir=tmp_path / "cache")
    assert len(calls) == 1 and again.network.graph == ort_det.network.graph  # the cached graph, not re-exported
    classes = Detector.from_checkpoint(path, runtime="onnxruntime", cache_dir=tmp_path / "cache", classes=["b"],
                                       max_detections=5)(images[0])
    assert classes.class_names == ["b"] * 5  # the class selection runs as for torch


@needs_ort
def test_onnxruntime_runs_on_the_cpu_only(tmp_path: Path) -> None:
    from ssd_torch import Detector

    path = write_tiny_checkpoint(tmp_path / "m.pt", NAMES)
    with pytest.raises(ConfigError, match="runs on the CPU"):
        Detector.from_checkpoint(path, device="cuda:0", runtime="onnxruntime", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == [path]  # refused before any export


@needs_ort
def test_int8_runtime_is_calibrated_and_cached_by_its_source(tmp_path: Path, images: list[Path]) -> None:
    import onnx

    from ssd_torch import Detector
    from ssd_torch.data.synthetic import generate_voc

    voc = generate_voc(tmp_path / "VOC", 4, 1, seed=0, image_size=(120, 90))
    path = write_tiny_checkpoint(tmp_path / "m.pt", NAMES, seed=4)
    det = Detector.from_checkpoint(path, runtime="onnxruntime-int8", calibration_data=voc,
                                   cache_dir=tmp_path / "cache")
    ops = {n.op_type for n in onnx.load(str(det.network.graph)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert det.runtime_settings()["calibration"]["data"] == str(voc.resolve())
    result = det(images[0])
    fp32 = Detector.from_checkpoint(path, device="cpu")(images[0])
    assert len(result) == len(fp32) > 0 and np.abs(result.scores - fp32.scores).max() < 0.05


# ---- ssd-detect --runtime ------------------------------------------------------------------------------------

@needs_ort
def test_ssd_detect_runtime_flag(images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ssd_torch.cli import detect

    ckpt = write_tiny_checkpoint(tmp_path / "m.pt", NAMES, seed=2)
    src = images[0].parent
    base = [str(ckpt), str(src), "--score-threshold", "0.3"]
    assert detect.main(base + ["--out", str(tmp_path / "t")]) == 0
    ort_args = base + ["--out", str(tmp_path / "o"), "--runtime", "onnxruntime", "--onnx-cache", str(tmp_path / "c")]
    assert detect.main(ort_args) == 0
    want = json.loads((tmp_path / "t" / "detections.json").read_text())
    got = json.loads((tmp_path / "o" / "detections.json").read_text())
    assert "runtime" not in want and got["runtime"] == "onnxruntime" and got["calibration"] is None
    assert got["counts"] == want["counts"] and want["counts"]["detections"] > 0
    assert len(list((tmp_path / "c").glob("*.onnx"))) == 1
    capsys.readouterr()
    # a resume must use the same runtime: the runtime is part of the run's settings
    assert detect.main(base + ["--out", str(tmp_path / "o"), "--resume"]) == 2
    assert "runtime: 'onnxruntime' -> None" in capsys.readouterr().err
    # INT8 without calibration data, and calibration data without INT8: one line each, before any work
    assert detect.main(base + ["--out", str(tmp_path / "i"), "--runtime", "onnxruntime-int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs calibration images" in err and "--calibration-data PATH" in err and "\n" not in err
    assert detect.main(base + ["--out", str(tmp_path / "i"), "--calibration-data", str(src)]) == 2
    assert "only used by the runtime onnxruntime-int8" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()
