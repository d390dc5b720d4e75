"""Where ``Detector``'s network runs: PyTorch, or onnxruntime on a network graph exported on first use (float32,
or INT8 calibrated on user images), cached on disk.

Every runtime feeds the same prepared batch (``Predictor.prepare``) and hands ``(loc[B, P, 4], conf[B, P, C])``
float32 to the same decoding and post-processing (``Predictor.decode``: variances, ``ssd_torch.nms.postprocess``,
unused outputs folded, class selection in ``Detector``), so the runtimes differ only in the network's float
rounding (docs/CONTRACT.md "Inference", "Exported detector": near-tied keys may swap, scores within 1e-5).

**The cache** (:func:`default_cache_dir`: ``$XDG_CACHE_HOME/ssd300/onnx``, else ``~/.cache/ssd300/onnx``): one
entry per key, ``<hash>.onnx`` + ``<hash>.json``. The key (:func:`cache_key`) is the checkpoint file's SHA-256
and every setting the graph depends on (runtime, opset, the exporter's torch version, post-processing not in the
graph, and for INT8 the calibration source, split and image count). The sidecar holds the key and the graph's
SHA-256; an entry is used only when both match (a stale, partial, foreign or tampered entry is rebuilt, never
trusted). Both files are written atomically, the sidecar last. A calibration folder whose images change under
the same path is not noticed: name another path or delete the entry.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ssd_torch.errors import ConfigError, UserError
from ssd_torch.files import atomic_write, atomic_write_text, file_sha256

__all__ = ["RUNTIMES", "ONNX_RUNTIMES", "INSTALL_HINT", "CACHE_FORMAT", "RUNTIME_OPSET", "default_cache_dir",
           "check_runtime", "runtime_device", "cache_key", "CacheEntry", "cached_graph", "network_bytes", "OnnxNetwork",
           "runtime_network"]

RUNTIMES = ("torch", "onnxruntime", "onnxruntime-int8")
ONNX_RUNTIMES = RUNTIMES[1:]
INSTALL_HINT = "pip install 'ssd300[onnx]'"
CACHE_FORMAT = "ssd300-onnx-cache/1"
#: the opset of the cached graphs (INT8's per-channel QDQ needs >= 13; 17 is ssd-export's default)
RUNTIME_OPSET = 17


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ssd300/onnx`` (XDG base directories), else ``~/.cache/ssd300/onnx``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ssd300" / "onnx"


def check_runtime(runtime: str, calibration: Any) -> None:
    """The checks before any slow work: a known runtime, calibration data exactly for INT8, onnxruntime and
    onnx importable for the onnxruntime runtimes (one-line errors naming the fix)."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if runtime == "onnxruntime-int8" and calibration is None:
        raise UserError("runtime onnxruntime-int8 needs calibration images: calibration_data=PATH / "
                        "--calibration-data PATH (a VOC year folder, or a COCO instances .json)")
    if runtime != "onnxruntime-int8" and calibration is not None:
        raise UserError(f"calibration data is only used by the runtime onnxruntime-int8 (runtime is {runtime})")
    if runtime in ONNX_RUNTIMES:
        try:
            import onnx  # noqa: F401 - the exporter writes onnx protobufs
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise UserError(f"runtime {runtime} needs the packages onnx and onnxruntime ({e}): "
                            f"{INSTALL_HINT}") from e


def runtime_device(runtime: str, device: Any) -> Any:
    """The device ``runtime`` runs on: as asked for torch; the CPU for the onnxruntime runtimes (``"auto"``
    included), any other device a one-line :class:`ConfigError`."""
    if runtime not in ONNX_RUNTIMES or str(device) == "auto":
        return "cpu" if runtime in ONNX_RUNTIMES else device
    import torch

    if torch.device(device).type != "cpu":
        raise ConfigError(f"runtime {runtime} runs on the CPU, not on {device}: use device='cpu' (or 'auto'), or "
                          "runtime='torch'")
    return device


def cache_key(checkpoint: Path, runtime: str, calibration: Any = None, opset: int = RUNTIME_OPSET) -> dict[str, Any]:
    """What a cached graph depends on, as plain values (module docstring). ``calibration``: a
    :class:`~ssd_torch.deploy.quantize.Calibration` (INT8) or None."""
    import torch

    key: dict[str, Any] = {"format": CACHE_FORMAT, "checkpoint_sha256": file_sha256(checkpoint),
                           "runtime": runtime, "opset": opset, "exporter": f"torch {torch.__version__}",
                           "graph": "network: images [B, 3, S, S] float32 preprocessed -> loc, conf",
                           "postprocess_in_graph": False, "calibration": None}
    if calibration is not None:
        key["calibration"] = {"data": str(Path(calibration.data).resolve()), "count": calibration.count,
                              "split": calibration.split, "images_dir": None if calibration.images_dir is None
                              else str(Path(calibration.images_dir).resolve())}
    return key


@dataclass(frozen=True)
class CacheEntry:
    """The two files of one key in ``folder``: ``onnx`` (the graph) and ``sidecar`` (key + graph SHA-256)."""

    folder: Path
    key: dict

    @property
    def name(self) -> str:
        return hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:32]

    @property
    def onnx(self) -> Path:
        return self.folder / f"{self.name}.onnx"

    @property
    def sidecar(self) -> Path:
        return self.folder / f"{self.name}.json"

    def valid(self) -> bool:
        """True only when the sidecar is ours, states exactly this key and the graph's bytes hash to its record."""
        try:
            meta = json.loads(self.sidecar.read_text())
            return (isinstance(meta, dict) and meta.get("key") == self.key
                    and meta.get("onnx_sha256") == file_sha256(self.onnx))
        except (OSError, ValueError):
            return False

    def write(self, graph: bytes) -> None:
        """The graph, then the sidecar (an interruption between them leaves an entry that :meth:`valid`
        refuses)."""
        atomic_write(self.onnx, lambda f: f.write(graph))
        meta = {"key": self.key, "onnx_sha256": hashlib.sha256(graph).hexdigest(), "onnx": self.onnx.name}
        atomic_write_text(self.sidecar, json.dumps(meta, indent=2) + "\n")


def cached_graph(entry: CacheEntry, build: Callable[[], bytes]) -> tuple[Path, bool]:
    """``(the entry's graph file, whether it was built now)``: ``build()`` runs only when the entry is not valid."""
    if entry.valid():
        return entry.onnx, False
    entry.write(build())
    return entry.onnx, True


def network_bytes(predictor: Any, calibration: Any = None, opset: int = RUNTIME_OPSET) -> bytes:
    """The predictor's network as ONNX (``ssd_torch.deploy.network_graph``, the input ``Predictor.prepare``
    gives), quantised to INT8 on ``calibration`` when given (``ssd_torch.deploy.quantize``)."""
    import copy

    from ssd_torch.deploy.onnx_export import network_graph

    cfg = predictor.config
    model = copy.deepcopy(predictor.model)  # the tracer moves its module to the CPU: the predictor's stays put
    graph = network_graph(model, cfg.image_size, opset)
    if calibration is not None:
        from ssd_torch.deploy.quantize import calibration_batches, quantize_network

        graph, _ = quantize_network(graph, calibration_batches(calibration, cfg.preprocess, cfg.image_size, None))
    return graph


class OnnxNetwork:
    """A network graph in onnxruntime (CPU) as ``Predictor.network``: ``batch[B, 3, S, S]`` -> ``(loc, conf)``
    float32 CPU tensors. ``threads``: intra-op threads (torch's thread count by default, so that one
    ``torch.set_num_threads`` governs every runtime)."""

    def __init__(self, graph: Path, threads: Optional[int] = None, calibration: Optional[dict] = None) -> None:
        import onnxruntime as ort
        import torch

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        self.graph, self.calibration = graph, calibration  # calibration: the cache key's entry (INT8)
        self.session = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])

    def __repr__(self) -> str:
        return f"OnnxNetwork({self.graph.name})"

    def __call__(self, batch: Any) -> tuple[Any, Any]:
        import torch

        x = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        loc, conf = self.session.run(["loc", "conf"], {"images": x})
        return torch.from_numpy(loc), torch.from_numpy(conf)


def runtime_network(predictor: Any, checkpoint: Path, runtime: str, *, cache_dir: Optional[Path] = None,
                    calibration: Any = None) -> Callable[[Any], tuple[Any, Any]]:
    """The network function of ``runtime`` for ``predictor`` (loaded from ``checkpoint``): ``"torch"``, the
    predictor's own, run channels_last (measured faster on the CPU: README "Speed"); else an
    :class:`OnnxNetwork` on the cached graph (built on first use)."""
    check_runtime(runtime, calibration)
    if runtime == "torch":
        import torch

        predictor.model.to(memory_format=torch.channels_last)
        predictor.channels_last = True
        return predictor.network
    entry = CacheEntry(Path(cache_dir) if cache_dir is not None else default_cache_dir(),
                       cache_key(Path(checkpoint), runtime, calibration))
    graph, _ = cached_graph(entry, lambda: network_bytes(predictor, calibration))
    return OnnxNetwork(graph, calibration=entry.key["calibration"])
