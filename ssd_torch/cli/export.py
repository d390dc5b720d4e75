"""``ssd-export CHECKPOINT --onnx model.onnx``: the network as ONNX, with priors and a JSON sidecar.

By default the ONNX graph is the network only: input ``images`` ``[B, 3, 300, 300]`` float32 (resized to
300x300 and converted by the checkpoint's ``ModelConfig.preprocess``, written to the sidecar), outputs ``loc``
``[B, P, 4]`` (encoded offsets, docs/CONTRACT.md "Encoding") and ``conf`` ``[B, P, C]`` (logits), with a
dynamic batch axis. ``--bake-preprocess uint8`` (or ``float32``) puts the preprocessing into the graph: the input
is then RGB pixels ``[B, 3, 300, 300]``, NCHW, 0..255, as uint8 (or float32), resized to 300x300 by the caller
(our tools use bilinear resizing, ``ssd_torch.data.transforms.SSDEvalTransform``). Beside the graph:
``<name>.priors.npy`` (``[P, 4]`` float32 cxcywh normalised) and ``<name>.json`` (class names, the input spec,
the preprocessing spec, variances, post-processing parameters, the model config, and whether/how the export was
checked). Existing files are never replaced unless ``--overwrite`` is given; each is written atomically.

Post-processing (softmax, decode, per-class NMS, top-k) stays in our code, run on the ONNX outputs (NumPy
arrays are accepted)::

    # $ ssd-export best.pt --onnx model.onnx --bake-preprocess uint8
    import json, numpy as np, onnxruntime as ort
    from PIL import Image
    from ssd_torch.nms import postprocess
    meta = json.load(open("model.json"))
    session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
    pixels = np.asarray(Image.open("photo.jpg").convert("RGB").resize((300, 300), Image.BILINEAR))
    loc, conf = session.run(None, {"images": pixels.transpose(2, 0, 1)[None]})
    dets = postprocess(loc, conf, np.load("model.priors.npy"), variances=meta["variances"], **meta["postprocess"])

``dets[0].boxes`` are xyxy normalised to [0, 1] (multiply by the image's width and height for pixels). The
sidecar's ``postprocess`` is the checkpoint's ``"postprocess"`` entry when it has one, else the defaults
(``ssd_torch.modeling.postprocess_config.PostprocessConfig``).

The export uses the TorchScript-based exporter (``dynamo=False``): the default dynamo exporter of torch >= 2.9
needs ``onnxscript``. When onnxruntime is installed the export is checked against PyTorch on a random input
(max abs difference of loc and conf within ``--atol``; with baked preprocessing, against the network on
``Preprocess.to_tensor`` of the same random pixels); otherwise the tool says it was not checked.
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ssd_torch.cli import UserError, add_trust_flag, run_cli
from ssd_torch.files import atomic_write, atomic_write_text, check_output_path, refuse_existing

__all__ = ["SIDECAR_FORMAT", "PIXEL_DTYPES", "sidecar_paths", "pixel_input_model", "export_onnx", "check_onnx",
           "export_checkpoint", "main"]

SIDECAR_FORMAT = "ssd300-onnx/1"
#: ``--bake-preprocess`` choices: the dtype of the pixel input of a graph with the preprocessing inside
PIXEL_DTYPES = ("uint8", "float32")


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


def export_onnx(model: Any, onnx_path: Path, image_size: int = 300, opset: int = 17,
                input_dtype: str = "float32") -> Path:
    """Trace ``model`` (eval mode, CPU) into ``onnx_path`` (atomically) with a dynamic batch axis; the input
    ``images`` is ``[B, 3, S, S]`` of ``input_dtype``."""
    import torch

    dummy = torch.zeros(1, 3, image_size, image_size, dtype=getattr(torch, input_dtype))
    batch = {0: "batch"}

    def write(f: Any) -> None:
        with warnings.catch_warnings():
            # the shape checks in SSD300.forward are constants for a fixed 300x300 input: the tracer's warning
            # about them, and the deprecation notice of the TorchScript exporter, are expected
            warnings.simplefilter("ignore")
            torch.onnx.export(model.cpu().eval(), (dummy,), f, dynamo=False, opset_version=opset,
                              input_names=["images"], output_names=["loc", "conf"],
                              dynamic_axes={"images": batch, "loc": batch, "conf": batch})

    try:
        return atomic_write(onnx_path, write)
    except ImportError as e:
        raise UserError(f"ONNX export needs the 'onnx' package ({e}); pip install onnx") from e


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


def check_onnx(onnx_path: Path, model: Any, image_size: int = 300, batch: int = 2, seed: int = 0,
               atol: float = 1e-4, rtol: float = 1e-5, preprocess: Any = None,
               pixels: str | None = None) -> dict[str, Any] | None:
    """Max abs differences between onnxruntime and PyTorch on a random ``[batch, 3, S, S]`` input, or None when
    onnxruntime is not installed. ``ok``: each output's difference is within ``atol + rtol * max|output|``
    (float32 noise grows with the activations: a 0-255 input convention gives outputs in the hundreds).
    ``pixels`` (a dtype of :data:`PIXEL_DTYPES`): the graph takes pixels and ``model`` is the bare network, fed
    ``preprocess.to_tensor`` of the same pixels."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None

    feed, want = _check_inputs(model, image_size, batch, seed, preprocess, pixels)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(["loc", "conf"], {"images": feed})
    names = ("loc", "conf")
    diffs = {n: float(np.max(np.abs(g - w))) for n, g, w in zip(names, got, want)}
    limits = {n: atol + rtol * float(np.max(np.abs(w))) for n, w in zip(names, want)}
    return {"onnxruntime": ort.__version__, "batch": batch, "seed": seed, "atol": atol, "rtol": rtol,
            "input": "random normalised input" if pixels is None else f"random {pixels} pixels",
            "max_abs_diff": diffs, "tolerance": limits, "ok": all(diffs[n] <= limits[n] for n in names)}


def _input_spec(image_size: int, pixels: str | None) -> dict[str, Any]:
    shape = ["B", 3, image_size, image_size]
    if pixels is None:
        return {"name": "images", "shape": shape, "dtype": "float32",
                "layout": "NCHW, x[c] = (pixel[order[c]] * pixel_scale / 255 - mean[c]) / std[c] (see preprocess)"}
    return {"name": "images", "shape": shape, "dtype": pixels,
            "layout": f"NCHW RGB pixels 0..255, resized to {image_size}x{image_size}; the preprocessing is in the "
                      "graph"}


def export_checkpoint(checkpoint: Path, onnx_path: Path, *, opset: int = 17, check: bool = True,
                      atol: float = 1e-4, rtol: float = 1e-5, trust_checkpoint: bool = False,
                      bake_preprocess: str | None = None,
                      overwrite: bool = False) -> dict[str, Any]:
    """Export ``checkpoint`` to ``onnx_path`` + priors + sidecar JSON; returns the sidecar's content.

    ``bake_preprocess`` (``"uint8"`` / ``"float32"``): the graph takes RGB pixels and applies the checkpoint's
    preprocessing itself. Existing output files are a :class:`UserError` unless ``overwrite``."""
    from ssd_torch.modeling.predictor import load_predictor

    priors_path, json_path = sidecar_paths(onnx_path)
    if not overwrite:
        refuse_existing([onnx_path, priors_path, json_path], "ssd-export",
                        "--overwrite replaces them, or choose another --onnx name")
    predictor = load_predictor(checkpoint, "cpu", trust_checkpoint=trust_checkpoint)
    model, cfg, names = predictor.model, predictor.config, list(predictor.categories)
    graph = model if bake_preprocess is None else pixel_input_model(model, cfg.preprocess)
    export_onnx(graph, onnx_path, cfg.image_size, opset, input_dtype=bake_preprocess or "float32")
    priors = predictor.priors.numpy().astype(np.float32)
    atomic_write(priors_path, lambda f: np.save(f, priors))
    meta = {"format": SIDECAR_FORMAT, "checkpoint": str(checkpoint), "onnx": onnx_path.name,
            "priors": priors_path.name, "input": _input_spec(cfg.image_size, bake_preprocess),
            "preprocess_in_graph": bake_preprocess is not None,
            "outputs": {"loc": ["B", cfg.num_priors, 4], "conf": ["B", cfg.num_priors, cfg.num_classes]},
            "class_names": names, "preprocess": cfg.preprocess.to_dict(), "variances": list(cfg.variances),
            "postprocess": predictor.postprocess.to_dict(), "opset": opset, "model_config": cfg.to_dict(),
            "check": check_onnx(onnx_path, model, cfg.image_size, atol=atol, rtol=rtol, preprocess=cfg.preprocess,
                                pixels=bake_preprocess) if check else None}
    atomic_write_text(json_path, json.dumps(meta, indent=2) + "\n")
    return meta


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssd-export", description="Export an SSD300 checkpoint to ONNX.")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--onnx", type=Path, required=True, help="output .onnx file (priors + JSON written beside it)")
    p.add_argument("--bake-preprocess", choices=PIXEL_DTYPES, default=None, metavar="DTYPE",
                   help="put the checkpoint's preprocessing into the graph: its input becomes RGB pixels NCHW "
                        "0..255 of this dtype (uint8 or float32), resized to 300x300")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance of the onnxruntime check")
    p.add_argument("--rtol", type=float, default=1e-5,
                   help="tolerance relative to the largest output value (added to --atol)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_trust_flag(p)
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.onnx.suffix != ".onnx":
        raise UserError(f"--onnx must name a .onnx file, got {args.onnx}")
    check_output_path(args.onnx, "--onnx", folder=False)  # a file in the way: refused before the model loads
    meta = export_checkpoint(args.checkpoint, args.onnx, opset=args.opset, check=not args.no_check,
                             atol=args.atol, rtol=args.rtol, trust_checkpoint=args.trust_checkpoint,
                             bake_preprocess=args.bake_preprocess, overwrite=args.overwrite)
    priors, sidecar = sidecar_paths(args.onnx)
    print(f"exported {args.onnx} (+ {priors.name}, {sidecar.name})")
    check = meta["check"]
    if check is None:
        print("not checked: " + ("--no-check" if args.no_check else
                                 "onnxruntime is not installed (pip install onnxruntime)"))
        return 0
    print(f"onnxruntime {check['onnxruntime']} vs PyTorch: max |diff| loc {check['max_abs_diff']['loc']:.2e}, "
          f"conf {check['max_abs_diff']['conf']:.2e} (tolerance {check['tolerance']['loc']:.2e}, "
          f"{check['tolerance']['conf']:.2e}: atol {check['atol']:g} + rtol {check['rtol']:g} x max |output|): "
          f"{'OK' if check['ok'] else 'MISMATCH'}")
    return 0 if check["ok"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, "ssd-export")


if __name__ == "__main__":
    raise SystemExit(main())
