"""--with-postprocess: onnxruntime's detections equal our post-processing (ranked by log-probability) on the
very network outputs that fed the graph, for small, VGG16, empty, crowded, tied and confident cases."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="the 'onnx' package (optional extra) is not installed")
pytest.importorskip("onnxruntime", reason="onnxruntime (optional extra) is not installed")

from cli_fixtures import save_checkpoint, tiny_checkpoint_dict  # noqa: E402
from deploy_fixtures import assert_same_detections, reference_detections, run_with_network_outputs  # noqa: E402
from ssd_torch.deploy import export_checkpoint  # noqa: E402
from ssd_torch.modeling.postprocess_config import PostprocessConfig  # noqa: E402

NAMES = ["background", "a", "b"]


def export_detector(ckpt: dict, root: Path, name: str, **post: Any) -> tuple[Path, PostprocessConfig]:
    """``ckpt`` (with ``post`` as its "postprocess" entry) exported with uint8 pixels and post-processing."""
    if post:
        ckpt = {**ckpt, "postprocess": post}
    path = save_checkpoint(ckpt, root / f"{name}.pt")
    onnx_path = root / f"{name}.onnx"
    export_checkpoint(path, onnx_path, bake_preprocess="uint8", with_postprocess=True, check=False)
    return onnx_path, PostprocessConfig.from_dict(post)


def pixels(seed: int, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, 3, 300, 300), dtype=np.uint8)


def check_against_reference(onnx_path: Path, post: PostprocessConfig, images: np.ndarray,
                            exact_order: bool = False) -> list[Any]:
    """Run the file and compare with the reference on its own loc/conf; returns the detector outputs."""
    from ssd_torch.priors import default_boxes
    from ssd_torch.modeling.model_config import ModelConfig
    import json

    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    priors = default_boxes(ModelConfig.from_dict(meta["model_config"]).prior_spec)
    dets, loc, conf = run_with_network_outputs(onnx_path, images)
    kw = post.postprocess_kwargs()
    want = reference_detections(loc, conf, priors, **kw)
    assert_same_detections(dets, want, post.max_detections, exact_order)
    return dets


def scaled_heads(ckpt: dict, factor: float) -> dict:
    """The class heads' weights and biases times ``factor``: confident logits (probabilities near 1)."""
    model = {k: (v * factor if k.startswith("conf_heads.") else v) for k, v in ckpt["model"].items()}
    return {**ckpt, "model": model}


def test_small_model_crowded_images(tmp_path: Path) -> None:
    """A random slim model: every prior is a candidate of every class, far more than top_k and K."""
    onnx_path, post = export_detector(tiny_checkpoint_dict(NAMES, seed=3), tmp_path, "small")
    dets = check_against_reference(onnx_path, post, pixels(0))
    assert list(dets[0]) == [200, 200] and set(np.unique(dets[3][:, :200])) <= {1, 2}


def test_small_k_and_top_k(tmp_path: Path) -> None:
    """top_k 7 before NMS (not a cap on the kept boxes, as ONNX's max_output_boxes_per_class is), K = 5."""
    onnx_path, post = export_detector(tiny_checkpoint_dict(NAMES, seed=4), tmp_path, "k5", top_k=7,
                                      max_detections=5, nms_threshold=0.3)
    dets = check_against_reference(onnx_path, post, pixels(1, batch=3))
    assert dets[1].shape == (3, 5, 4) and list(dets[0]) == [5, 5, 5]


def test_no_detection(tmp_path: Path) -> None:
    """No class probability reaches the threshold (class heads zeroed: 1/3 each, threshold 0.5): zero
    detections, all-zero rows (the threshold comes from the checkpoint's "postprocess" entry)."""
    ckpt = scaled_heads(tiny_checkpoint_dict(NAMES, seed=5), 0.0)
    onnx_path, post = export_detector(ckpt, tmp_path, "none", score_threshold=0.5)
    dets = check_against_reference(onnx_path, post, pixels(2))
    assert list(dets[0]) == [0, 0] and not any(d.any() for d in dets[1:])


def test_confident_model(tmp_path: Path) -> None:
    """Class heads x20: probabilities round to 1.0 in float32; the log-probability key still orders them."""
    onnx_path, post = export_detector(scaled_heads(tiny_checkpoint_dict(NAMES, seed=6), 20.0), tmp_path, "sure")
    dets = check_against_reference(onnx_path, post, pixels(3))
    top = dets[2][:, :50]
    assert (top > 0.999).mean() > 0.5  # the regime the key exists for


def test_tied_scores_rank_by_prior_then_class(tmp_path: Path) -> None:
    """Constant logits and zero offsets (head weights zero): every prior ties in every class and its box is
    the prior itself, so tied candidates overlap. Candidates: the lowest prior indices; NMS: the lower prior
    wins a tied overlap (ONNX NonMaxSuppression fed the tied scores would pop in heap order); merge: by score,
    then class, then keep order."""
    ckpt = tiny_checkpoint_dict(NAMES, seed=7)
    model = dict(ckpt["model"])
    for key in [k for k in model if k.startswith(("conf_heads.", "loc_heads."))]:
        model[key] = torch.zeros_like(model[key])
        if key.startswith("conf_heads.") and key.endswith(".bias"):
            model[key] = torch.tensor([0.0, 1.0, 1.0]).repeat(model[key].numel() // 3)  # classes a, b tie too
    onnx_path, post = export_detector({**ckpt, "model": model}, tmp_path, "ties", max_detections=150,
                                      nms_threshold=0.3)
    dets = check_against_reference(onnx_path, post, pixels(4), exact_order=True)
    n = int(dets[0][0])
    assert 0 < n < 150 and len(set(dets[2][0, :n].tolist())) == 1 and dets[3][0, 0] == 1


@pytest.mark.slow
def test_vgg16_imported_layout(tmp_path: Path) -> None:
    """The full SSD300-VGG16 (21 classes, random weights in ssd.pytorch's layout, imported as a user would)."""
    from peer_state_dicts import random_state_dict, ssd_pytorch_shapes

    from ssd_torch.modeling.importers import imported_checkpoint

    peer = tmp_path / "ssd300_peer.pth"
    torch.save(random_state_dict(ssd_pytorch_shapes(21), seed=8, scale=0.02), peer)
    ckpt, _ = imported_checkpoint("ssd.pytorch", peer)
    settings = {**ckpt["postprocess"], "max_detections": 200}  # ssd.pytorch itself has no per-image cap
    onnx_path, post = export_detector(ckpt, tmp_path, "vgg", **settings)
    assert not post.clip_boxes and post.top_k == 200  # the peer's own settings, as imported
    check_within_float32_rounding(onnx_path, post, pixels(5))


def check_within_float32_rounding(onnx_path: Path, post: PostprocessConfig, images: np.ndarray) -> None:
    """The float64 reference's detections, with only the float32 near-ties it flags exempt (an IoU within
    rounding of the NMS threshold, the cut positions: ``reference.nms.float32_ambiguous_detections``, the
    comparison of ``ssd-crosscheck``): unclipped boxes make such IoU near-ties likelier than clipped ones."""
    import json

    from reference.nms import float32_ambiguous_detections
    from ssd_torch.modeling.model_config import ModelConfig
    from ssd_torch.parity import EXEMPT_CAP, match_detections
    from ssd_torch.priors import default_boxes

    cfg = ModelConfig.from_dict(json.loads(onnx_path.with_suffix(".json").read_text())["model_config"])
    priors = default_boxes(cfg.prior_spec).double().numpy()
    (num, boxes, scores, labels), loc, conf = run_with_network_outputs(onnx_path, images)
    for i in range(len(num)):
        expected = float32_ambiguous_detections(loc[i].astype(np.float64), conf[i].astype(np.float64), priors,
                                                variances=cfg.variances, **post.postprocess_kwargs())
        n = int(num[i])
        match = match_detections(expected, (boxes[i, :n], scores[i, :n], labels[i, :n]))
        assert match.disagreeing == 0 and match.exempt <= EXEMPT_CAP * n, match
