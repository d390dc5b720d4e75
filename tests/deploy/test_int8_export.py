"""--int8: the network is quantised (QDQ, per-channel weights) on calibration images; the post-processing stays
float32 and follows the contract on the quantised network's outputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the 'onnx' package (optional extra) is not installed")
pytest.importorskip("onnxruntime", reason="onnxruntime (optional extra) is not installed")

from cli_fixtures import write_tiny_checkpoint  # noqa: E402
from deploy_fixtures import assert_same_detections, reference_detections, run_with_network_outputs  # noqa: E402
from ssd_torch.cli import export  # noqa: E402
from ssd_torch.data.synthetic import generate_voc  # noqa: E402
from ssd_torch.deploy.quantize import Calibration, calibration_batches  # noqa: E402


@pytest.fixture(scope="module")
def voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_voc(tmp_path_factory.mktemp("voc") / "VOC", 6, 2, seed=0, image_size=(120, 90))


def test_calibration_batches_follow_the_graph_input(voc: Path) -> None:
    """uint8 pixels for a baked graph, the preprocessed tensor otherwise; the count is honoured."""
    from ssd_torch.data.preprocess import IMAGENET

    cal = Calibration(voc, count=5)
    pixels = list(calibration_batches(cal, IMAGENET, 300, "uint8", batch=2))
    assert [b.shape for b in pixels] == [(2, 3, 300, 300)] * 2 + [(1, 3, 300, 300)] and pixels[0].dtype == np.uint8
    floats = np.concatenate(list(calibration_batches(cal, IMAGENET, 300, None, batch=4)))
    assert floats.dtype == np.float32 and floats.shape[0] == 5 and floats.min() < 0  # mean-subtracted
    np.testing.assert_allclose(floats[0], IMAGENET.to_tensor(
        __import__("PIL.Image", fromlist=["Image"]).fromarray(pixels[0][0].transpose(1, 2, 0))).numpy(), atol=1e-5)


@pytest.mark.slow
def test_int8_detector(voc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = write_tiny_checkpoint(tmp_path / "tiny.pt", ["background", "a", "b"], seed=9)
    onnx_path = tmp_path / "int8.onnx"
    assert export.main([str(ckpt), "--onnx", str(onnx_path), "--with-postprocess", "--bake-preprocess", "uint8",
                        "--int8", "--calibration-data", str(voc), "--calibration-images", "4"]) == 0
    assert "int8 network (4 calibration images)" in capsys.readouterr().out
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    assert meta["int8"]["calibration_images"] == 4 and meta["check"]["ok"]
    ops = [n.op_type for n in onnx.load(str(onnx_path)).graph.node]
    assert ops.count("DequantizeLinear") > 20 and "NonMaxSuppression" in ops
    # the post-processing after the quantised network is still exactly ours on its outputs
    from ssd_torch.modeling.model_config import ModelConfig
    from ssd_torch.priors import default_boxes

    images = np.random.default_rng(0).integers(0, 256, (2, 3, 300, 300), dtype=np.uint8)
    dets, loc, conf = run_with_network_outputs(onnx_path, images)
    priors = default_boxes(ModelConfig.from_dict(meta["model_config"]).prior_spec)
    assert_same_detections(dets, reference_detections(loc, conf, priors, **meta["postprocess"]), 200)
    # and its network stays near the float one: a loose bound (random weights, random pixels outside the
    # calibration images); the accuracy cost on a trained model is measured by benchmarks/bench_onnx_int8.py
    check = meta["check"]
    largest = {k: (check["tolerance"][k] - check["atol"]) / check["rtol"] for k in ("loc", "conf")}  # max |out|
    q = meta["int8"]["check"]["max_abs_diff"]
    assert 0 < q["loc"] < 0.5 * largest["loc"] and 0 < q["conf"] < 0.5 * largest["conf"], (q, largest)
