"""``ssd-export CHECKPOINT --onnx model.onnx``: the network as ONNX, with priors and a JSON sidecar.

The ONNX graph is the network only: input ``images`` ``[B, 3, 300, 300]`` float32 (resized to 300x300 and
converted by the checkpoint's ``ModelConfig.preprocess``, written to the sidecar), outputs ``loc``
``[B, P, 4]`` (encoded offsets, docs/CONTRACT.md "Encoding") and ``conf``
``[B, P, C]`` (logits), with a dynamic batch axis. Beside it: ``<name>.priors.npy`` (``[P, 4]`` float32
cxcywh normalised) and ``<name>.json`` (class names, the preprocessing spec, variances, post-processing
parameters, the model config, and whether/how the export was checked).

Post-processing (softmax, decode, per-class NMS, top-k) stays in our code, run on the ONNX outputs::

    import json, numpy as np, onnxruntime as ort, torch
    from ssd_torch.nms import postprocess
    meta = json.load(open("model.json"))
    session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
    loc, conf = session.run(None, {"images": images})            # images: float32 [B, 3, 300, 300]
    dets = postprocess(torch.from_numpy(loc), torch.from_numpy(conf), torch.from_numpy(np.load("model.priors.npy")),
                       variances=meta["variances"], **meta["postprocess"])   # boxes xyxy normalised

The export uses the TorchScript-based exporter (``dynamo=False``): the default dynamo exporter of torch >= 2.9
needs ``onnxscript``. When onnxruntime is installed the export is checked against PyTorch on a random input
(max abs difference of loc and conf within ``--atol``); otherwise the tool says it was not checked.
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ssd_torch.cli import UserError, add_trust_flag, run_cli

__all__ = ["SIDECAR_FORMAT", "sidecar_paths", "export_onnx", "check_onnx", "export_checkpoint", "main"]

SIDECAR_FORMAT = "ssd300-onnx/1"


def sidecar_paths(onnx_path: Path) -> tuple[Path, Path]:
    """``(priors .npy, metadata .json)`` next to ``onnx_path``: ``model.onnx`` -> ``model.priors.npy``, ``model.json``."""
    return onnx_path.with_suffix(".priors.npy"), onnx_path.with_suffix(".json")


def export_onnx(model: Any, onnx_path: Path, image_size: int = 300, opset: int = 17) -> Path:
    """Trace ``model`` (eval mode, CPU) into ``onnx_path`` with a dynamic batch axis."""
    import torch

    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, image_size, image_size)
    batch = {0: "batch"}
    with warnings.catch_warnings():
        # the shape checks in SSD300.forward are constants for a fixed 300x300 input: the tracer's warning
        # about them, and the deprecation notice of the TorchScript exporter, are expected
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model.cpu().eval(), (dummy,), str(onnx_path), dynamo=False, opset_version=opset,
                              input_names=["images"], output_names=["loc", "conf"],
                              dynamic_axes={"images": batch, "loc": batch, "conf": batch})
        except ImportError as e:
            raise UserError(f"ONNX export needs the 'onnx' package ({e}); pip install onnx") from e
    return onnx_path


def check_onnx(onnx_path: Path, model: Any, image_size: int = 300, batch: int = 2, seed: int = 0,
               atol: float = 1e-4) -> dict[str, Any] | None:
    """Max abs differences between onnxruntime and PyTorch on a random ``[batch, 3, S, S]`` input, or None when
    onnxruntime is not installed. ``ok`` says whether both are within ``atol``."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import torch

    x = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = [t.numpy() for t in model.cpu().eval()(x)]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(["loc", "conf"], {"images": x.numpy()})
    diffs = {name: float(np.max(np.abs(g - w))) for name, g, w in zip(("loc", "conf"), got, want)}
    return {"onnxruntime": ort.__version__, "batch": batch, "seed": seed, "atol": atol,
            "max_abs_diff": diffs, "ok": all(d <= atol for d in diffs.values())}


def _postprocess_defaults() -> dict[str, Any]:
    """The keyword defaults of ``ssd_torch.nms.postprocess`` (so the sidecar never drifts from the code)."""
    import inspect

    from ssd_torch.nms import postprocess

    params = inspect.signature(postprocess).parameters
    return {k: params[k].default for k in ("score_threshold", "top_k", "nms_threshold", "max_detections")}


def export_checkpoint(checkpoint: Path, onnx_path: Path, *, opset: int = 17, check: bool = True,
                      atol: float = 1e-4, trust_checkpoint: bool = False) -> dict[str, Any]:
    """Export ``checkpoint`` to ``onnx_path`` + priors + sidecar JSON; returns the sidecar's content."""
    from ssd_torch.inference import load_model_for_inference
    from ssd_torch.priors import default_boxes

    model, cfg, names = load_model_for_inference(checkpoint, "cpu", trust_checkpoint=trust_checkpoint)
    export_onnx(model, onnx_path, cfg.image_size, opset)
    priors_path, json_path = sidecar_paths(onnx_path)
    np.save(priors_path, default_boxes(cfg.prior_spec).numpy().astype(np.float32))
    meta = {"format": SIDECAR_FORMAT, "checkpoint": str(checkpoint), "onnx": onnx_path.name,
            "priors": priors_path.name, "input": {"name": "images", "shape": ["B", 3, cfg.image_size, cfg.image_size],
                                                  "layout": "NCHW float32, x[c] = (pixel[order[c]] * pixel_scale "
                                                            "/ 255 - mean[c]) / std[c] (see preprocess)"},
            "outputs": {"loc": ["B", cfg.num_priors, 4], "conf": ["B", cfg.num_priors, cfg.num_classes]},
            "class_names": names, "preprocess": cfg.preprocess.to_dict(),
            "variances": [0.1, 0.2], "postprocess": _postprocess_defaults(), "opset": opset,
            "model_config": cfg.to_dict(),
            "check": check_onnx(onnx_path, model, cfg.image_size, atol=atol) if check else None}
    json_path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssd-export", description="Export an SSD300 checkpoint to ONNX.")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--onnx", type=Path, required=True, help="output .onnx file (priors + JSON written beside it)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--atol", type=float, default=1e-4, help="tolerance of the onnxruntime check")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    add_trust_flag(p)
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.onnx.suffix != ".onnx":
        raise UserError(f"--onnx must name a .onnx file, got {args.onnx}")
    meta = export_checkpoint(args.checkpoint, args.onnx, opset=args.opset, check=not args.no_check,
                             atol=args.atol, trust_checkpoint=args.trust_checkpoint)
    priors, sidecar = sidecar_paths(args.onnx)
    print(f"exported {args.onnx} (+ {priors.name}, {sidecar.name})")
    check = meta["check"]
    if check is None:
        print("not checked: " + ("--no-check" if args.no_check else
                                 "onnxruntime is not installed (pip install onnxruntime)"))
        return 0
    print(f"onnxruntime {check['onnxruntime']} vs PyTorch: max |diff| loc {check['max_abs_diff']['loc']:.2e}, "
          f"conf {check['max_abs_diff']['conf']:.2e} (atol {check['atol']:g}): {'OK' if check['ok'] else 'MISMATCH'}")
    return 0 if check["ok"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, "ssd-export")


if __name__ == "__main__":
    raise SystemExit(main())
