"""Export a checkpoint to ONNX: the network, optionally with its preprocessing, its post-processing
(docs/CONTRACT.md "Exported detector") and INT8 weights/activations; priors and a JSON sidecar beside it.

The graphs are traced with the TorchScript-based exporter (``dynamo=False``: the default dynamo exporter of
torch >= 2.9 needs ``onnxscript``). A detector file is two graphs joined by name (``loc``, ``conf``): the
network (float32, or quantised) and the float32 post-processing; each is checked on its own with onnxruntime
when it is installed.
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ssd_torch.errors import UserError
from ssd_torch.files import atomic_write, atomic_write_text, refuse_existing

__all__ = ["SIDECAR_FORMAT", "PIXEL_DTYPES", "OPSET_RANGE", "POSTPROCESS_MIN_OPSET", "INT8_MIN_OPSET",
           "check_export_options", "sidecar_paths", "pixel_input_model", "trace_onnx", "export_onnx",
           "network_graph", "postprocess_graph", "join_graphs", "check_onnx", "check_postprocess",
           "export_checkpoint"]

SIDECAR_FORMAT = "ssd300-onnx/1"
#: ``--bake-preprocess`` choices: the dtype of the pixel input of a graph with the preprocessing inside
PIXEL_DTYPES = ("uint8", "float32")
#: opsets the TorchScript exporter of torch 2.x writes and onnxruntime runs (below 7 the exporter crashes or
#: writes BatchNormalization-6, which onnxruntime lacks; above 20 is past the exporter's documented maximum)
OPSET_RANGE = (7, 20)
#: NonMaxSuppression is opset 10; TopK's "ties: lower index first" and ScatterND are opset 11
POSTPROCESS_MIN_OPSET = 11
#: per-channel QuantizeLinear/DequantizeLinear (the ``axis`` attribute) are opset 13
INT8_MIN_OPSET = 13


def check_export_options(opset: int, atol: float = 0.0, rtol: float = 0.0, *, with_postprocess: bool = False,
                         int8: bool = False) -> None:
    """Raise a one-line :class:`UserError` for an opset the export cannot write or a negative tolerance: the
    checks that come before any slow work or any file."""
    low, high = OPSET_RANGE
    need = max([low] + [POSTPROCESS_MIN_OPSET] * with_postprocess + [INT8_MIN_OPSET] * int8)
    what = " with --int8" if int8 and need == INT8_MIN_OPSET else (
        " with --with-postprocess" if need == POSTPROCESS_MIN_OPSET else "")
    if not need <= opset <= high:
        raise UserError(f"--opset {opset} is not supported{what}: choose {need}..{high} (default 17)")
    for name, value in (("--atol", atol), ("--rtol", rtol)):
        if not value >= 0:  # also refuses NaN
            raise UserError(f"{name} must be >= 0, got {value:g}")


def sidecar_paths(onnx_path: Path) -> tuple[Path, Path]:
    """``(priors .npy, metadata .json)`` next to ``onnx_path``: ``model.onnx`` -> ``model.priors.npy``,
    ``model.json``."""
    return onnx_path.with_suffix(".priors.npy"), onnx_path.with_suffix(".json")


def pixel_input_model(model: Any, preprocess: Any) -> Any:
    """``model`` behind ``preprocess`` as one ``torch.nn.Module``: RGB pixels ``[B, 3, S, S]`` (any dtype,
    0..255) -> ``(loc, conf)``, with ``x[c] = (p[order[c]] - shift[c]) * scale[c]``
    (``Preprocess.channel_affine``, the formula of ``ssd_torch.data.preprocess``)."""
    import torch

    class PixelInputSSD(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            order, shift, scale = preprocess.channel_affine()
            self.model = model
            self.register_buffer("order", torch.tensor(order))
            self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = pixels.to(torch.float32).index_select(1, self.order)
            return self.model((x - self.shift) * self.scale)

    return PixelInputSSD().eval()


def trace_onnx(module: Any, inputs: dict[str, Any], output_names: list[str], opset: int) -> bytes:
    """The ONNX bytes of ``module`` (eval mode, CPU) traced on ``inputs`` (name -> example tensor), axis 0 of
    every input and output dynamic (``"batch"``)."""
    import torch

    axes = {name: {0: "batch"} for name in [*inputs, *output_names]}
    f = io.BytesIO()
    with warnings.catch_warnings():
        # the shape checks in SSD300.forward are constants for a fixed 300x300 input: the tracer's warning
        # about them, and the deprecation notice of the TorchScript exporter, are expected
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module.cpu().eval(), tuple(inputs.values()), f, dynamo=False, opset_version=opset,
                              input_names=list(inputs), output_names=output_names, dynamic_axes=axes)
        except ImportError as e:
            raise UserError(f"ONNX export needs the 'onnx' package ({e}); pip install onnx") from e
    return f.getvalue()


def network_graph(model: Any, image_size: int = 300, opset: int = 17, input_dtype: str = "float32") -> bytes:
    """The network as ONNX bytes: ``images [B, 3, S, S]`` of ``input_dtype`` -> ``loc``, ``conf``."""
    import torch

    dummy = torch.zeros(1, 3, image_size, image_size, dtype=getattr(torch, input_dtype))
    return trace_onnx(model, {"images": dummy}, ["loc", "conf"], opset)


def export_onnx(model: Any, onnx_path: Path, image_size: int = 300, opset: int = 17,
                input_dtype: str = "float32") -> Path:
    """:func:`network_graph` written to ``onnx_path`` (atomically)."""
    data = network_graph(model, image_size, opset, input_dtype)
    return atomic_write(onnx_path, lambda f: f.write(data))


def postprocess_graph(post: Any, num_priors: int, num_classes: int, opset: int = 17) -> bytes:
    """``post`` (a :class:`~ssd_torch.deploy.graph_postprocess.DetectorPostprocess`) as ONNX bytes:
    ``loc [B, P, 4]``, ``conf [B, P, C]`` -> the outputs of docs/CONTRACT.md "Exported detector"."""
    import torch

    from ssd_torch.deploy.graph_postprocess import OUTPUT_NAMES

    import onnx

    example = {"loc": torch.zeros(1, num_priors, 4), "conf": torch.zeros(1, num_priors, num_classes)}
    model = onnx.load_from_string(trace_onnx(post, example, list(OUTPUT_NAMES), opset))
    for out in model.graph.output:  # the tracer leaves K symbolic: state the contract's static shapes
        for dim in list(out.type.tensor_type.shape.dim)[1:2]:
            dim.dim_value = post.max_detections
    return model.SerializeToString()


def join_graphs(network: bytes, post: bytes) -> bytes:
    """One model: ``network``'s outputs ``loc``/``conf`` feed ``post``'s inputs of the same names; the
    post-processing's internal names get the prefix ``post/`` (no clash with the network's)."""
    import onnx
    from onnx import compose

    first, second = onnx.load_from_string(network), onnx.load_from_string(post)
    second = compose.add_prefix(second, "post/", rename_inputs=False, rename_outputs=False)
    # the network may carry a newer opset after quantisation: one version per domain for the joined graph
    version = max(o.version for o in [*first.opset_import, *second.opset_import] if o.domain in ("", "ai.onnx"))
    for m in (first, second):
        for o in m.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = version
    second.ir_version = first.ir_version = max(first.ir_version, second.ir_version)
    joined = compose.merge_models(first, second, io_map=[("loc", "loc"), ("conf", "conf")])
    return joined.SerializeToString()


def _check_inputs(model: Any, image_size: int, batch: int, seed: int, preprocess: Any,
                  pixels: str | None) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(ONNX input, PyTorch's (loc, conf))`` for the check: random normalised input, or with ``pixels`` random
    RGB pixels whose reference goes through ``preprocess.to_tensor`` (the path of ``ssd-detect``)."""
    import torch
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    if pixels is None:
        x = torch.randn(batch, 3, image_size, image_size, generator=gen)
        feed = x.numpy()
    else:
        rgb = torch.randint(0, 256, (batch, image_size, image_size, 3), generator=gen, dtype=torch.uint8).numpy()
        x = torch.stack([preprocess.to_tensor(Image.fromarray(img)) for img in rgb])
        feed = rgb.transpose(0, 3, 1, 2).astype(pixels)
    with torch.no_grad():
        return feed, [t.numpy() for t in model.cpu().eval()(x)]


def _session(graph: Path | bytes) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(graph if isinstance(graph, bytes) else str(graph),
                                providers=["CPUExecutionProvider"])


def check_onnx(onnx_path: Path | bytes, model: Any, image_size: int = 300, batch: int = 2, seed: int = 0,
               atol: float = 1e-4, rtol: float = 1e-5, preprocess: Any = None,
               pixels: str | None = None) -> dict[str, Any] | None:
    """Max abs differences between onnxruntime (a network graph: file or bytes) and PyTorch on a random
    ``[batch, 3, S, S]`` input, or None when onnxruntime is not installed. ``ok``: each output's difference is
    within ``atol + rtol * max|output|`` (float32 noise grows with the activations: a 0-255 input convention
    gives outputs in the hundreds). ``pixels`` (a dtype of :data:`PIXEL_DTYPES`): the graph takes pixels and
    ``model`` is the bare network, fed ``preprocess.to_tensor`` of the same pixels."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None

    feed, want = _check_inputs(model, image_size, batch, seed, preprocess, pixels)
    got = _session(onnx_path).run(["loc", "conf"], {"images": feed})
    names = ("loc", "conf")
    diffs = {n: float(np.max(np.abs(g - w))) for n, g, w in zip(names, got, want)}
    limits = {n: atol + rtol * float(np.max(np.abs(w))) for n, w in zip(names, want)}
    return {"onnxruntime": ort.__version__, "batch": batch, "seed": seed, "atol": atol, "rtol": rtol,
            "input": "random normalised input" if pixels is None else f"random {pixels} pixels",
            "max_abs_diff": diffs, "tolerance": limits, "ok": all(diffs[n] <= limits[n] for n in names)}


def check_postprocess(graph: bytes, post: Any, loc: np.ndarray, conf: np.ndarray) -> dict[str, Any] | None:
    """The post-processing graph against the same module in PyTorch on the same ``loc``/``conf``: detection
    counts and labels must be equal, boxes and scores within 1e-5 (None without onnxruntime)."""
    try:
        got = _session(graph).run(None, {"loc": loc, "conf": conf})
    except ImportError:
        return None
    import torch

    with torch.no_grad():
        want = [t.numpy() for t in post(torch.from_numpy(loc), torch.from_numpy(conf))]
    same = bool(np.array_equal(got[0], want[0]) and np.array_equal(got[3], want[3]))
    diff = max(float(np.max(np.abs(g - w), initial=0.0)) for g, w in zip(got[1:3], want[1:3]))
    return {"detections": int(np.sum(want[0])), "same_counts_and_labels": same, "max_abs_diff": diff,
            "ok": same and diff <= 1e-5}


def _input_spec(image_size: int, pixels: str | None) -> dict[str, Any]:
    shape = ["B", 3, image_size, image_size]
    if pixels is None:
        return {"name": "images", "shape": shape, "dtype": "float32",
                "layout": "NCHW, x[c] = (pixel[order[c]] * pixel_scale / 255 - mean[c]) / std[c] (see preprocess)"}
    return {"name": "images", "shape": shape, "dtype": pixels,
            "layout": f"NCHW RGB pixels 0..255, resized to {image_size}x{image_size}; the preprocessing is in the "
                      "graph"}


def _output_spec(cfg: Any, max_detections: Optional[int]) -> dict[str, list]:
    if max_detections is None:
        return {"loc": ["B", cfg.num_priors, 4], "conf": ["B", cfg.num_priors, cfg.num_classes]}
    k = max_detections
    return {"num_detections": ["B"], "boxes": ["B", k, 4], "scores": ["B", k], "labels": ["B", k]}


def _detector_postprocess(predictor: Any, priors: Any) -> Any:
    """The graph module of a ``Predictor``'s decoding: its model's variances, its post-processing settings and
    its unused outputs (never predicted)."""
    from ssd_torch.deploy.graph_postprocess import DetectorPostprocess

    return DetectorPostprocess(priors, predictor.config.variances, unused_labels=predictor.unused_labels,
                               **predictor.postprocess.postprocess_kwargs())


def _build(predictor: Any, priors: Any, *, opset: int, check: bool, atol: float, rtol: float,
           pixels: Optional[str], with_postprocess: bool, calibration: Any) -> tuple[bytes, dict[str, Any]]:
    """``(the ONNX bytes to write, the sidecar's check entries)``."""
    cfg, model = predictor.config, predictor.model
    net = model if pixels is None else pixel_input_model(model, cfg.preprocess)
    graph = network_graph(net, cfg.image_size, opset, pixels or "float32")
    checks: dict[str, Any] = {"check": check_onnx(graph, model, cfg.image_size, atol=atol, rtol=rtol,
                                                  preprocess=cfg.preprocess, pixels=pixels) if check else None}
    if calibration is not None:
        from ssd_torch.deploy.quantize import calibration_batches, quantize_network

        batches = calibration_batches(calibration, cfg.preprocess, cfg.image_size, pixels)
        graph, seen = quantize_network(graph, batches)
        checks["int8"] = {"calibration_data": str(calibration.data), "calibration_images": seen,
                          "format": "QDQ, per-channel int8 weights, uint8 activations, MinMax calibration",
                          "check": check_onnx(graph, model, cfg.image_size, atol=atol, rtol=rtol,
                                              preprocess=cfg.preprocess, pixels=pixels) if check else None}
    if with_postprocess:
        post = _detector_postprocess(predictor, priors)
        post_graph = postprocess_graph(post, cfg.num_priors, cfg.num_classes, opset)
        if check:
            _, (loc, conf) = _check_inputs(model, cfg.image_size, 2, 0, cfg.preprocess, pixels)
            checks["check_postprocess"] = check_postprocess(post_graph, post, loc, conf)
        graph = join_graphs(graph, post_graph)
    return graph, checks


def export_checkpoint(checkpoint: Path, onnx_path: Path, *, opset: int = 17, check: bool = True,
                      atol: float = 1e-4, rtol: float = 1e-5, trust_checkpoint: bool = False,
                      bake_preprocess: str | None = None, overwrite: bool = False,
                      with_postprocess: bool = False, calibration: Any = None) -> dict[str, Any]:
    """Export ``checkpoint`` to ``onnx_path`` + priors + sidecar JSON; returns the sidecar's content.

    ``bake_preprocess`` (``"uint8"`` / ``"float32"``): the graph takes RGB pixels and applies the checkpoint's
    preprocessing itself. ``with_postprocess``: the graph ends in the detector outputs of docs/CONTRACT.md
    "Exported detector". ``calibration`` (a :class:`~ssd_torch.deploy.quantize.Calibration`): the network is
    quantised to INT8. Existing output files are a :class:`UserError` unless ``overwrite``; options are checked
    before anything is loaded or written."""
    from ssd_torch.modeling.predictor import load_predictor

    check_export_options(opset, atol, rtol, with_postprocess=with_postprocess, int8=calibration is not None)
    priors_path, json_path = sidecar_paths(onnx_path)
    if not overwrite:
        refuse_existing([onnx_path, priors_path, json_path], "ssd-export",
                        "--overwrite replaces them, or choose another --onnx name")
    predictor = load_predictor(checkpoint, "cpu", trust_checkpoint=trust_checkpoint)
    cfg, settings = predictor.config, predictor.postprocess.to_dict()
    if with_postprocess and settings["max_detections"] is None:
        raise UserError(f"--with-postprocess: {checkpoint} keeps every detection (postprocess.max_detections is "
                        f"null, ssd.pytorch's setting), but the exported detector has a fixed number of output "
                        f"rows; export without --with-postprocess, or fine-tune/convert with a per-image cap")
    priors = predictor.priors.float()
    graph, checks = _build(predictor, priors, opset=opset, check=check, atol=atol, rtol=rtol, pixels=bake_preprocess,
                           with_postprocess=with_postprocess, calibration=calibration)
    atomic_write(onnx_path, lambda f: f.write(graph))
    atomic_write(priors_path, lambda f: np.save(f, priors.numpy()))
    meta = {"format": SIDECAR_FORMAT, "checkpoint": str(checkpoint), "onnx": onnx_path.name,
            "priors": priors_path.name, "input": _input_spec(cfg.image_size, bake_preprocess),
            "preprocess_in_graph": bake_preprocess is not None, "postprocess_in_graph": with_postprocess,
            "outputs": _output_spec(cfg, settings["max_detections"] if with_postprocess else None),
            "class_names": list(predictor.categories), "preprocess": cfg.preprocess.to_dict(),
            "variances": list(cfg.variances), "postprocess": settings, "opset": opset,
            "unused_labels": list(predictor.unused_labels),
            "model_config": cfg.to_dict(), **checks}
    atomic_write_text(json_path, json.dumps(meta, indent=2) + "\n")
    return meta
