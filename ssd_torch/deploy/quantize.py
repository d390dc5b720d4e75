"""INT8 network graphs: onnxruntime static quantisation (QDQ, per-channel int8 weights, uint8 activations)
calibrated on a few images of a VOC folder or a COCO file through the checkpoint's own eval preprocessing.

Only the network is quantised; the post-processing (decode, NMS) stays float32: its inputs are box offsets and
logits whose small differences decide ranks and IoUs.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from ssd_torch.errors import UserError

__all__ = ["Calibration", "calibration_dataset", "pixel_transform", "graph_input_transform", "calibration_batches",
           "quantize_network"]


@dataclass(frozen=True)
class Calibration:
    """Where the calibration images come from: ``data`` a VOC year folder (``split`` of its ImageSets/Main)
    or a COCO instances ``.json`` with ``images_dir``; the first ``count`` readable images are used."""

    data: Path
    count: int = 100
    split: str = "trainval"
    images_dir: Optional[Path] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", Path(self.data))
        if not (isinstance(self.count, int) and self.count >= 1):
            raise UserError(f"--calibration-images must be an int >= 1, got {self.count!r}")
        coco = self.data.suffix.lower() == ".json"
        if coco and self.images_dir is None:
            raise UserError(f"--calibration-data {self.data} is a COCO file: give --calibration-image-dir DIR, "
                            f"the folder its file_name entries are relative to")
        if not coco and self.images_dir is not None:
            raise UserError("--calibration-image-dir is for COCO data (a .json file); a VOC folder holds its images")
        if not self.data.exists():
            raise UserError(f"--calibration-data {self.data} does not exist (a VOC year folder, e.g. "
                            f"VOCdevkit/VOC2007, or a COCO instances .json file)")


def calibration_dataset(cal: Calibration, transform: Any) -> Any:
    """The VOC or COCO reader of ``cal`` with ``transform``. Calibration needs pixels only: the data's own class
    names are used (not the checkpoint's), images without objects are kept and bad images skipped."""
    from ssd_torch.errors import DatasetError

    try:
        if cal.images_dir is not None:
            from ssd_torch.data.coco import CocoDataset

            return CocoDataset(cal.images_dir, cal.data, transform=transform, skip_bad=True)
        from ssd_torch.data.voc import VOCDataset, class_names_in

        names = class_names_in(cal.data, cal.split, skip_bad=True)
        return VOCDataset(cal.data, cal.split, class_names=names, transform=transform, skip_bad=True,
                          keep_empty=True)
    except (DatasetError, ValueError, OSError) as e:
        raise UserError(f"--calibration-data {cal.data}: {' '.join(str(e).split())}") from e


def pixel_transform(image_size: int, dtype: str) -> Any:
    """A dataset transform ``(image, boxes, labels) -> (pixels [3, S, S] of dtype, boxes, labels)``: RGB resized
    to ``S x S`` with ``SSDEvalTransform``'s resampling, no normalisation: the input of a graph exported with
    ``--bake-preprocess``."""
    import torch
    from PIL import Image

    def to_pixels(img: Any, boxes: Any, labels: Any) -> tuple[Any, Any, Any]:
        rgb = img.convert("RGB").resize((image_size, image_size), Image.BILINEAR, reducing_gap=3.0)
        return torch.from_numpy(np.asarray(rgb).transpose(2, 0, 1).astype(dtype)), boxes, labels

    return to_pixels


def graph_input_transform(image_size: int, preprocess: Any, pixels: Optional[str]) -> Any:
    """The transform that yields a graph's input: the checkpoint's eval preprocessing (``SSDEvalTransform``),
    or with ``pixels`` (a ``--bake-preprocess`` dtype) :func:`pixel_transform`."""
    from ssd_torch.data.transforms import SSDEvalTransform

    return SSDEvalTransform(image_size, preprocess) if pixels is None else pixel_transform(image_size, pixels)


def calibration_batches(cal: Calibration, preprocess: Any, image_size: int, pixels: Optional[str],
                        batch: int = 8) -> Iterator[np.ndarray]:
    """Batches ``[b, 3, S, S]`` of the graph's input (:func:`graph_input_transform`) for the first
    ``cal.count`` images."""
    ds = calibration_dataset(cal, graph_input_transform(image_size, preprocess, pixels))
    n = min(cal.count, len(ds))
    if n == 0:
        raise UserError(f"--calibration-data {cal.data}: no image to calibrate on")
    for start in range(0, n, batch):
        yield np.stack([np.asarray(ds[i][0]) for i in range(start, min(start + batch, n))])


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over an iterator of input batches."""

    def __init__(self, batches: Iterator[np.ndarray]) -> None:
        self.batches, self.seen = batches, 0

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        x = next(self.batches, None)
        if x is None:
            return None
        self.seen += len(x)
        return {"images": x}


def quantize_network(network: bytes, batches: Iterator[np.ndarray]) -> tuple[bytes, int]:
    """``(quantised ONNX bytes, images seen)``: QDQ static quantisation of a network graph (MinMax calibration
    on ``batches``, per-channel int8 weights, uint8 activations: onnxruntime's U8S8 CPU kernels)."""
    try:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:
        raise UserError(f"--int8 needs onnxruntime's quantisation tools ({e}); pip install onnxruntime") from e

    reader = _Reader(batches)
    with tempfile.TemporaryDirectory(prefix="ssd-int8-") as tmp:
        raw, prepared, out = (Path(tmp) / name for name in ("fp32.onnx", "prep.onnx", "int8.onnx"))
        raw.write_bytes(network)
        quant_pre_process(str(raw), str(prepared))  # shape inference + graph clean-up, as onnxruntime advises
        quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return out.read_bytes(), reader.seen
