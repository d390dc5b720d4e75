"""The accuracy and speed cost of ``ssd-export --int8``: the self-contained detector (``--with-postprocess
--bake-preprocess uint8``) exported in float32 and in INT8 from one checkpoint, both run by onnxruntime.

``python -m benchmarks.bench_onnx_int8 CHECKPOINT --data VOC_ROOT [--split test] [--calibration-split trainval]
[--calibration-images 100] [--threads 2] [--repeats 20] [--out DIR]``. Accuracy: VOC07 11-point mAP of each
graph's detections on the split (``ssd_torch.evaluation.evaluate.evaluate_detections``; images resized by
``ssd_torch.deploy.quantize.pixel_transform``, the graph's documented input). Speed: median wall time of one
``session.run`` on a batch of 1 and of 8, onnxruntime CPU with ``--threads`` intra-op threads. The demo's
numbers come from a model trained by ``python -m ssd_torch.demo`` on the synthetic VOC tree it generates
(``--data`` = that tree). JSON goes to ``onnx_int8_cpu.json`` (``benchmarks.common.default_results_dir``).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from benchmarks.common import format_table, time_call, write_results


def export_pair(checkpoint: Path, out_dir: Path, data: Path, split: str, count: int) -> dict[str, Path]:
    """The float32 and INT8 detector files of ``checkpoint`` in ``out_dir``."""
    from ssd_torch.deploy import export_checkpoint
    from ssd_torch.deploy.quantize import Calibration

    paths = {"fp32": out_dir / "fp32.onnx", "int8": out_dir / "int8.onnx"}
    common = dict(bake_preprocess="uint8", with_postprocess=True, check=False)
    export_checkpoint(checkpoint, paths["fp32"], **common)
    export_checkpoint(checkpoint, paths["int8"], calibration=Calibration(data, count, split), **common)
    return paths


def detections(session: Any, dataset: Any, batch: int = 8) -> dict[Any, tuple[np.ndarray, ...]]:
    """``{image_id: (boxes VOC pixels, scores, labels)}`` of a detector session over ``dataset``."""
    from ssd_torch.evaluation.evaluate import normalized_to_voc_pixels

    out = {}
    for start in range(0, len(dataset), batch):
        idx = list(range(start, min(start + batch, len(dataset))))
        images = np.stack([dataset[i][0].numpy() for i in idx])
        num, boxes, scores, labels = session.run(None, {"images": images})
        for j, i in enumerate(idx):
            ann, n = dataset.annotation(i), int(num[j])
            out[ann.image_id] = (normalized_to_voc_pixels(boxes[j, :n], ann.width, ann.height),
                                 scores[j, :n].astype(np.float64), labels[j, :n])
    return out


def run(checkpoint: Path, data: Path, split: str, calibration_split: str, count: int, threads: int,
        repeats: int) -> dict[str, Any]:
    import json

    import onnxruntime as ort

    from ssd_torch.data.voc import VOCDataset
    from ssd_torch.deploy.quantize import pixel_transform
    from ssd_torch.evaluation.evaluate import evaluate_detections

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        paths = export_pair(checkpoint, Path(tmp), data, calibration_split, count)
        meta = json.loads(paths["int8"].with_suffix(".json").read_text())
        ds = VOCDataset(data, split, class_names=meta["class_names"][1:], transform=pixel_transform(300, "uint8"))
        for name, path in paths.items():
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            m_ap = evaluate_detections(ds, detections(session, ds)).mAP
            times = {}
            for b in (1, 8):
                x = np.stack([ds[i % len(ds)][0].numpy() for i in range(b)])
                times[f"batch{b}"] = time_call(lambda: session.run(None, {"images": x}), name=f"{name} b{b}",
                                               repeats=repeats, warmup=3)
            results[name] = {"mAP": m_ap, "file_mb": path.stat().st_size / 2**20, **times}
        results["calibration_images"] = meta["int8"]["calibration_images"]
    return {"settings": {"checkpoint": str(checkpoint), "data": str(data), "split": split, "images": len(ds),
                         "calibration_split": calibration_split, "calibration_images": count,
                         "ort_threads": threads, "repeats": repeats, "onnxruntime": ort.__version__},
            **results}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_onnx_int8", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data", type=Path, required=True, help="a VOC year folder (the demo's synthetic tree)")
    p.add_argument("--split", default="test")
    p.add_argument("--calibration-split", default="trainval")
    p.add_argument("--calibration-images", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", type=Path, default=None, help="results folder (default: see the module docstring)")
    a = p.parse_args(argv)
    res = run(a.checkpoint, a.data, a.split, a.calibration_split, a.calibration_images, a.threads, a.repeats)
    rows = [(k, res[k]["mAP"], res[k]["batch1"].median_s * 1e3, res[k]["batch8"].median_s * 1e3, res[k]["file_mb"])
            for k in ("fp32", "int8")]
    print(format_table(["graph", "VOC07 mAP", "batch 1 ms", "batch 8 ms", "MiB"], rows))
    print(f"wrote {write_results('onnx_int8_cpu.json', res, results_dir=a.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
