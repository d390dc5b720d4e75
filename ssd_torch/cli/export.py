"""``ssd-export CHECKPOINT --onnx model.onnx``: the network as ONNX, with priors and a JSON sidecar; a thin shell
over ``ssd_torch.deploy`` (the library code and its checks live there).

By default the ONNX graph is the network only: input ``images`` ``[B, 3, 300, 300]`` float32 (resized to
300x300 and converted by the checkpoint's ``ModelConfig.preprocess``, written to the sidecar), outputs ``loc``
``[B, P, 4]`` (encoded offsets, docs/CONTRACT.md "Encoding") and ``conf`` ``[B, P, C]`` (logits), with a
dynamic batch axis. ``--bake-preprocess uint8`` (or ``float32``) puts the preprocessing into the graph: the input
is then RGB pixels ``[B, 3, 300, 300]``, NCHW, 0..255, as uint8 (or float32), resized to 300x300 by the caller
(our tools use bilinear resizing, ``ssd_torch.data.transforms.SSDEvalTransform``). Beside the graph:
``<name>.priors.npy`` (``[P, 4]`` float32 cxcywh normalised) and ``<name>.json`` (class names, the input spec,
the preprocessing spec, variances, post-processing parameters, the model config, and whether/how the export was
checked). Existing files are never replaced unless ``--overwrite`` is given; each is written atomically.

``--with-postprocess`` puts decoding, per-class threshold/top-k, NMS and the per-image best ``max_detections``
into the graph (docs/CONTRACT.md "Exported detector"): outputs ``num_detections [B]`` int64, ``boxes [B, K, 4]``
xyxy in [0, 1], ``scores [B, K]``, ``labels [B, K]`` int64, K = max_detections, rows past num_detections zero.
``--int8 --calibration-data PATH`` quantises the network (onnxruntime static QDQ, per-channel weights) on
``--calibration-images`` images of a VOC folder or a COCO file; post-processing stays float32.

Without ``--with-postprocess``, post-processing (decode, per-class NMS, top-k) stays in our code, run on the
ONNX outputs (NumPy arrays are accepted)::

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
(``ssd_torch.inference.PostprocessConfig``).

When onnxruntime is installed the export is checked against PyTorch on a random input (max abs difference of
loc and conf within ``--atol`` + ``--rtol`` x max |output|; with baked preprocessing, against the network on
``Preprocess.to_tensor`` of the same random pixels; the post-processing graph against the same module in PyTorch
on the same loc/conf); otherwise the tool says it was not checked. With ``--int8`` the float network is checked
and the quantised one's differences are reported, not judged. Bad options (``--opset`` outside the supported
range, a negative tolerance, missing calibration data) are one-line errors before anything is loaded or written.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from ssd_torch.cli import UserError, add_trust_flag, run_cli
from ssd_torch.files import check_output_path
from ssd_torch.deploy import (OPSET_RANGE, PIXEL_DTYPES, SIDECAR_FORMAT, check_onnx, export_checkpoint,
                              export_onnx, pixel_input_model, sidecar_paths)

# the library names stay importable from here (older scripts and tests import them from the CLI module)
__all__ = ["SIDECAR_FORMAT", "PIXEL_DTYPES", "sidecar_paths", "pixel_input_model", "export_onnx", "check_onnx",
           "export_checkpoint", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssd-export", description="Export an SSD300 checkpoint to ONNX.")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--onnx", type=Path, required=True, help="output .onnx file (priors + JSON written beside it)")
    p.add_argument("--bake-preprocess", choices=PIXEL_DTYPES, default=None, metavar="DTYPE",
                   help="put the checkpoint's preprocessing into the graph: its input becomes RGB pixels NCHW "
                        "0..255 of this dtype (uint8 or float32), resized to 300x300")
    p.add_argument("--with-postprocess", action="store_true",
                   help="put decoding, thresholds, NMS and top detections into the graph: outputs "
                        "num_detections, boxes, scores, labels (docs/CONTRACT.md 'Exported detector')")
    p.add_argument("--opset", type=int, default=17, help=f"ONNX opset, {OPSET_RANGE[0]}..{OPSET_RANGE[1]} "
                   "(--with-postprocess: 11 or more; --int8: 13 or more)")
    p.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance of the onnxruntime check")
    p.add_argument("--rtol", type=float, default=1e-5,
                   help="tolerance relative to the largest output value (added to --atol)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    q = p.add_argument_group("INT8")
    q.add_argument("--int8", action="store_true", help="quantise the network (onnxruntime static QDQ, "
                   "per-channel int8 weights); needs --calibration-data")
    q.add_argument("--calibration-data", type=Path, default=None, metavar="PATH",
                   help="a VOC year folder or a COCO instances .json (with --calibration-image-dir)")
    q.add_argument("--calibration-images", type=int, default=100, metavar="N", help="images to calibrate on")
    q.add_argument("--calibration-split", default="trainval", help="VOC split of the calibration images")
    q.add_argument("--calibration-image-dir", type=Path, default=None, metavar="DIR",
                   help="COCO calibration data: the folder its file_name entries are relative to")
    add_trust_flag(p)
    return p


def _calibration(args: argparse.Namespace) -> Any:
    """The ``Calibration`` of ``--int8`` (None without); calibration flags without ``--int8`` are an error."""
    from ssd_torch.deploy.quantize import Calibration

    if not args.int8:
        if args.calibration_data is not None:
            raise UserError("--calibration-data is only used with --int8")
        return None
    if args.calibration_data is None:
        raise UserError("--int8 needs --calibration-data PATH (a VOC year folder or a COCO instances .json)")
    return Calibration(args.calibration_data, args.calibration_images, args.calibration_split,
                       args.calibration_image_dir)


def _report(meta: dict[str, Any], no_check: bool) -> int:
    """Print the checks of the sidecar ``meta``; exit code 1 when one failed."""
    check = meta["check"]
    if check is None:
        print("not checked: " + ("--no-check" if no_check else
                                 "onnxruntime is not installed (pip install onnxruntime)"))
        return 0
    print(f"onnxruntime {check['onnxruntime']} vs PyTorch: max |diff| loc {check['max_abs_diff']['loc']:.2e}, "
          f"conf {check['max_abs_diff']['conf']:.2e} (tolerance {check['tolerance']['loc']:.2e}, "
          f"{check['tolerance']['conf']:.2e}: atol {check['atol']:g} + rtol {check['rtol']:g} x max |output|): "
          f"{'OK' if check['ok'] else 'MISMATCH'}")
    ok = check["ok"]
    if meta.get("int8"):
        q = meta["int8"]["check"]["max_abs_diff"]
        print(f"int8 network ({meta['int8']['calibration_images']} calibration images) vs PyTorch: max |diff| "
              f"loc {q['loc']:.2e}, conf {q['conf']:.2e} (quantisation error: reported, not judged)")
    post = meta.get("check_postprocess")
    if post:
        print(f"post-processing graph vs PyTorch on the same outputs: {post['detections']} detections, "
              f"max |diff| {post['max_abs_diff']:.2e}: {'OK' if post['ok'] else 'MISMATCH'}")
        ok = ok and post["ok"]
    return 0 if ok else 1


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.onnx.suffix != ".onnx":
        raise UserError(f"--onnx must name a .onnx file, got {args.onnx}")
    check_output_path(args.onnx, "--onnx", folder=False)  # a file in the way: refused before the model loads
    meta = export_checkpoint(args.checkpoint, args.onnx, opset=args.opset, check=not args.no_check,
                             atol=args.atol, rtol=args.rtol, trust_checkpoint=args.trust_checkpoint,
                             bake_preprocess=args.bake_preprocess, overwrite=args.overwrite,
                             with_postprocess=args.with_postprocess, calibration=_calibration(args))
    priors, sidecar = sidecar_paths(args.onnx)
    print(f"exported {args.onnx} (+ {priors.name}, {sidecar.name})")
    return _report(meta, args.no_check)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, "ssd-export")


if __name__ == "__main__":
    raise SystemExit(main())
