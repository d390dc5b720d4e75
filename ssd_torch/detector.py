"""``Detector``: a trained SSD300 as one call, ``detector(images) -> detections in pixels``.

::

    from ssd_torch import Detector

    detector = Detector.from_checkpoint("runs/demo/checkpoints/best.pt")    # device="auto": CUDA if available
    result = detector("photo.jpg")                                          # a list in -> a list out
    for box, score, name in zip(result.boxes, result.scores, result.class_names):
        print(name, round(float(score), 3), box.round(1))                   # box: x0, y0, x1, y1 in pixels

**Inputs** (one image, or a list or tuple of them; a batch is run ``batch_size`` images at a time):

- a path (``str`` / ``os.PathLike``): decoded by :func:`ssd_torch.data.images.read_image`, as a viewer shows
  it (EXIF orientation applied, 16-bit scaled to 8 bits); the result says which orientation was applied;
- a ``PIL.Image``: used as given (its pixel grid; no EXIF rotation), converted to RGB (16-bit scaled);
- a NumPy array ``[H, W, 3]`` RGB or ``[H, W]`` gray (HWC, as PIL and OpenCV; OpenCV's BGR must be flipped:
  ``img[..., ::-1]``), dtype ``uint8`` (0..255), ``uint16`` (0..65535) or float in ``[0, 1]``;
- a ``torch.Tensor`` ``[3, H, W]`` RGB or ``[1, H, W]`` / ``[H, W]`` gray (CHW, as torchvision), same dtypes
  and ranges, on any device.

Anything else (another dtype, float values outside [0, 1] or not finite, channels-last tensors, channels-first
arrays, a 4-D batch, 4 channels) is a ``TypeError`` / ``ValueError`` that says what was expected. Float inputs
are quantised to 8 bits (``round(x * 255)``): the model was trained on 8-bit images, and every input type then
gives exactly the detections of the same image read from a file.

**Pipeline**: the checkpoint's :class:`ssd_torch.modeling.predictor.Predictor`, the one inference path:
resize to the model's input size (bilinear) and the checkpoint's ``ModelConfig.preprocess``, the network,
decoding with ``ModelConfig.variances``, then ``ssd_torch.nms.postprocess`` with the checkpoint's
:class:`~ssd_torch.modeling.postprocess_config.PostprocessConfig` (its ``"postprocess"`` entry, else the
defaults of docs/CONTRACT.md "NMS and post-processing": score > 0.01, top 400 per class, NMS 0.45, 200 per
image); keyword overrides of :meth:`Detector.from_checkpoint` replace single fields. The network runs in the
``runtime`` chosen (``ssd_torch.deploy.runtime``): ``"torch"`` (channels_last), ``"onnxruntime"`` or
``"onnxruntime-int8"`` (a graph exported on first use into a cache; the CPU only); the post-processing is the
same for all, so ``"onnxruntime"`` gives the torch detections (docs/CONTRACT.md "Exported detector": near-tied
keys may swap, scores within 1e-5). Over a list, ``workers`` threads decode and resize the next images while the
network runs (``workers=None``: 2 when the network runs on a GPU, none on the CPU, where they compete with the
network's threads for the same cores and measured slower: README "Measured").

**Output** (:class:`ImageDetections`, per image): ``boxes[D, 4]`` float64 **pixels, xyxy, 0-based continuous
coordinates** of the displayed image (``x = x_normalized * width``; the image spans ``[0, width] x [0,
height]``, which is what ``PIL.ImageDraw.rectangle`` draws; VOC's 1-based inclusive pixels are
``x0 + 1, y0 + 1, x1, y1``), ``scores[D]`` float64, ``labels[D]`` int64 (1..C-1, indexing ``categories``) and
``class_names[D]``, sorted by score (descending).
"""
from __future__ import annotations

import dataclasses
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from ssd_torch.data.images import DecodedImage, describe_orientation, read_image, scale_16_to_8, to_rgb8
from ssd_torch.errors import ConfigError
from ssd_torch.device import resolve_device
from ssd_torch.modeling.model_config import ModelConfig
from ssd_torch.modeling.postprocess_config import PostprocessConfig
from ssd_torch.modeling.predictor import Predictor, load_predictor

__all__ = ["Detector", "ImageDetections", "ImageLike", "as_decoded"]

ImageLike = Union[str, "os.PathLike[str]", Image.Image, np.ndarray, torch.Tensor]
BOX_FORMAT = "xyxy pixels, 0-based continuous (x = x_normalized * width)"


@dataclass(frozen=True, eq=False)  # arrays have no single truth value: compare fields with NumPy
class ImageDetections:
    """Detections of one image (module docstring: pixel convention). ``boxes_normalized[D, 4]`` are the same
    boxes divided by ``(width, height, width, height)``; ``categories`` are the checkpoint's class names
    (``"background"`` first); ``orientation``/``path``/``source_mode`` say how the input was decoded."""

    boxes: np.ndarray
    boxes_normalized: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    categories: tuple[str, ...]
    width: int
    height: int
    orientation: int = 1
    path: Optional[Path] = None
    source_mode: str = "RGB"

    @property
    def class_names(self) -> list[str]:
        """The class name of each detection."""
        return [self.categories[int(label)] for label in self.labels]

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def select(self, min_score: float = 0.0, classes: Optional[Sequence[str]] = None) -> "ImageDetections":
        """The detections with ``score >= min_score`` (and, if given, a class in ``classes``), order kept."""
        keep = self.scores >= min_score
        if classes is not None:
            keep &= np.isin(self.labels, _class_ids(classes, self.categories))
        return dataclasses.replace(self, boxes=self.boxes[keep], boxes_normalized=self.boxes_normalized[keep],
                                   scores=self.scores[keep], labels=self.labels[keep])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: size, orientation, source mode and per detection ``box`` (pixels, 2 decimals),
        ``box_normalized`` (6 decimals), ``score`` (6 decimals), ``label`` and ``class``."""
        return {"width": self.width, "height": self.height,
                "orientation": describe_orientation(self.orientation),
                "source_mode": self.source_mode,
                "detections": [{"box": b.round(2).tolist(), "box_normalized": n.round(6).tolist(),
                                "score": round(float(s), 6), "label": int(lab), "class": self.categories[int(lab)]}
                               for b, n, s, lab in zip(self.boxes, self.boxes_normalized, self.scores, self.labels)]}

    def draw(self, image: Image.Image, score_threshold: float = 0.0, line_width: int = 2) -> Image.Image:
        """A copy of ``image`` (the displayed image these boxes belong to) with the detections of score >=
        ``score_threshold`` drawn (``ssd_torch.evaluation.visualize.draw_detections``)."""
        from ssd_torch.evaluation.visualize import draw_detections

        if image.size != (self.width, self.height):
            raise ValueError(f"image is {image.size[0]}x{image.size[1]} but the detections belong to a "
                             f"{self.width}x{self.height} image")
        return draw_detections(image, self.boxes, self.scores, self.labels, self.categories,
                               score_threshold=score_threshold, line_width=line_width)


def _to_uint8(a: np.ndarray, what: str) -> np.ndarray:
    """uint8 as is, uint16 scaled (``ssd_torch.data.images.scale_16_to_8``), float in [0, 1] quantised."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return scale_16_to_8(a)
    if np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise ValueError(f"{what}: float pixels must be finite and in [0, 1], found NaN or infinity")
        if a.size and (a.min() < 0.0 or a.max() > 1.0):
            raise ValueError(f"{what}: float pixels must be finite and in [0, 1], got values from {a.min():g} to "
                             f"{a.max():g} (divide 0-255 values by 255, or pass uint8)")
        return np.rint(a * 255.0).astype(np.uint8)
    cast = "t.to(torch.uint8)" if what.startswith("tensor") else "a.astype(np.uint8)"
    raise ValueError(f"{what}: dtype {a.dtype} is not supported; expected uint8 (0..255), uint16 (0..65535) or "
                     f"float in [0, 1] (e.g. {cast} for 0..255 values)")


def _hwc_to_image(a: np.ndarray, what: str, layout_hint: str) -> Image.Image:
    """``[H, W]`` or ``[H, W, 1|3]`` pixels -> an RGB PIL image; anything else is a ValueError."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 4:
        raise ValueError(f"{what}: got a batch {tuple(a.shape)}; pass a list of images (list(batch))")
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)) or 0 in a.shape:
        raise ValueError(f"{what}: expected {layout_hint}, got shape {tuple(a.shape)}")
    return Image.fromarray(np.ascontiguousarray(_to_uint8(a, what))).convert("RGB")


def _array_image(a: np.ndarray) -> Image.Image:
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3):
        raise ValueError(f"NumPy image: shape {a.shape} looks channels-first; NumPy images are HWC (PIL, OpenCV): "
                         "use a.transpose(1, 2, 0)")
    return _hwc_to_image(a, "NumPy image", "[H, W, 3] RGB or [H, W] gray (HWC)")


def _tensor_image(t: torch.Tensor) -> Image.Image:
    t = t.detach().cpu()
    if t.ndim == 3 and t.shape[0] not in (1, 3) and t.shape[2] in (1, 3):
        raise ValueError(f"tensor image: shape {tuple(t.shape)} looks channels-last; tensors are CHW (torchvision): "
                         "use t.permute(2, 0, 1)")
    if t.ndim == 3 and t.shape[0] not in (1, 3):
        raise ValueError(f"tensor image: expected [3, H, W] RGB or [1, H, W] / [H, W] gray, got {tuple(t.shape)}")
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    a = t.numpy()
    return _hwc_to_image(a.transpose(1, 2, 0) if a.ndim == 3 else a, "tensor image",
                         "[3, H, W] RGB or [1, H, W] / [H, W] gray (CHW)")


def as_decoded(item: ImageLike) -> DecodedImage:
    """One input of :class:`Detector` as an 8-bit RGB :class:`DecodedImage` (module docstring: accepted types)."""
    if isinstance(item, (str, os.PathLike)):
        return read_image(item)
    if isinstance(item, Image.Image):
        return DecodedImage(to_rgb8(item), None, 1, item.mode)
    if isinstance(item, np.ndarray):
        return DecodedImage(_array_image(item), None, 1, f"ndarray {item.dtype}")
    if isinstance(item, torch.Tensor):
        return DecodedImage(_tensor_image(item), None, 1, f"tensor {item.dtype}")
    raise TypeError(f"cannot detect on a {type(item).__name__}: pass a path, a PIL image, a NumPy HWC array, a "
                    "CHW tensor, or a list of them")


def _class_ids(classes: Optional[Sequence[str]], names: Sequence[str]) -> Optional[list[int]]:
    """Label ids of the class names in ``classes`` (None: every class); an unknown name is a ConfigError."""
    if classes is None:
        return None
    known = list(names[1:])
    unknown = [c for c in classes if c not in known]
    if unknown or not classes:
        problem = f"unknown class {unknown[0]!r}" if unknown else "no class selected"
        raise ConfigError(f"{problem}; this checkpoint's classes are: {', '.join(known)}")
    return sorted({names.index(c) for c in classes})


Network = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]
Loaded = tuple[DecodedImage, torch.Tensor]  # an image as decoded, and its model input [3, S, S]
#: decode/resize threads by default when the network runs on a GPU (the CPU cores are then free for them); on the
#: CPU none: with the network's threads on the same cores, the overlap measured slower (README "Measured")
GPU_WORKERS = 2


class Detector:
    """A :class:`~ssd_torch.modeling.predictor.Predictor` for user images: ``detector(images)`` (module
    docstring). ``batch_size``: images run at a time; ``classes``: keep only these class names; ``network``:
    where the network runs (``ssd_torch.deploy.runtime.runtime_network``; default the predictor's own, as
    given), named ``runtime``; ``workers``: threads that decode and resize images while the network runs
    (0: all in the calling thread; None: :data:`GPU_WORKERS` when the network runs on a GPU, else 0)."""

    def __init__(self, predictor: Predictor, *, batch_size: int = 8, classes: Optional[Sequence[str]] = None,
                 network: Optional[Network] = None, runtime: str = "torch", workers: Optional[int] = None) -> None:
        if workers is None:
            workers = GPU_WORKERS if predictor.device.type == "cuda" and runtime == "torch" else 0
        for name, value, low in (("batch_size", batch_size, 1), ("workers", workers, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
        self.predictor, self.batch_size, self.workers = predictor, batch_size, workers
        self.network: Network = predictor.network if network is None else network
        self.runtime = runtime
        self.class_ids = _class_ids(classes, predictor.categories)

    @property
    def categories(self) -> tuple[str, ...]:
        """The checkpoint's class names, ``"background"`` first."""
        return self.predictor.categories

    @property
    def postprocess(self) -> PostprocessConfig:
        """The predictor's post-processing settings."""
        return self.predictor.postprocess

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    @property
    def model(self) -> torch.nn.Module:
        return self.predictor.model

    @property
    def config(self) -> ModelConfig:
        return self.predictor.config

    def __repr__(self) -> str:
        return f"Detector(runtime={self.runtime!r}, batch_size={self.batch_size}, {self.predictor!r})"

    def runtime_settings(self) -> dict[str, Any]:
        """What the detections depend on besides the predictor's settings: ``{}`` for the torch runtime, else the
        runtime and its calibration source (INT8) or None."""
        if self.runtime == "torch":
            return {}
        return {"runtime": self.runtime, "calibration": getattr(self.network, "calibration", None)}

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], device: str | torch.device = "auto",
                        trust_checkpoint: bool = False, *, backend: str = "auto", batch_size: int = 8,
                        classes: Optional[Sequence[str]] = None, runtime: str = "torch",
                        cache_dir: str | os.PathLike[str] | None = None, calibration_data: Any = None,
                        workers: Optional[int] = None, **postprocess: Any) -> "Detector":
        """Load a checkpoint (weights only unless ``trust_checkpoint``). ``device``: ``"auto"`` (CUDA when
        available; the CPU for the onnxruntime runtimes), ``"cpu"``, ``"cuda:1"``, ...; ``backend``: the NMS
        backend (``"auto"``: numba where it runs); ``classes``: keep only these class names; ``runtime``:
        ``"torch"``, ``"onnxruntime"`` or ``"onnxruntime-int8"`` (``ssd_torch.deploy.runtime``: the graph is
        exported on first use into ``cache_dir``, default ``~/.cache/ssd300/onnx``); ``calibration_data``: INT8's
        calibration images, a VOC year folder or a ``ssd_torch.deploy.quantize.Calibration`` (COCO, counts);
        ``workers``: class docstring; ``postprocess``: :class:`PostprocessConfig` fields (``score_threshold``,
        ``top_k``, ``nms_threshold``, ``max_detections``, ``clip_boxes``) replacing the checkpoint's. Errors:
        ``CheckpointError`` (the file), ``ConfigError`` (a setting), ``UserError`` (a runtime's package or
        data)."""
        from ssd_torch.deploy.quantize import Calibration
        from ssd_torch.deploy.runtime import check_runtime, runtime_device, runtime_network

        calibration = calibration_data
        if calibration is not None and not isinstance(calibration, Calibration):
            calibration = Calibration(Path(calibration))
        check_runtime(runtime, calibration)  # before the (slow) load
        device = runtime_device(runtime, device)
        dev = resolve_device(device, what="device") if isinstance(device, str) else torch.device(device)
        predictor = load_predictor(path, dev, trust_checkpoint=trust_checkpoint, backend=backend)
        try:
            predictor.postprocess = predictor.postprocess.replace(**postprocess)
        except TypeError as e:
            raise ConfigError(f"Detector.from_checkpoint: {e}") from e
        network = runtime_network(predictor, Path(path), runtime, calibration=calibration,
                                  cache_dir=None if cache_dir is None else Path(cache_dir))
        return cls(predictor, batch_size=batch_size, classes=classes, network=network, runtime=runtime,
                   workers=workers)

    def __call__(self, images: ImageLike | Sequence[ImageLike]) -> ImageDetections | list[ImageDetections]:
        """Detections of one image, or a list of them for a list (or tuple) of images (module docstring)."""
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        chunks = [items[start:start + self.batch_size] for start in range(0, len(items), self.batch_size)]
        results: list[ImageDetections] = []
        for loaded in self._loaded(chunks):
            results += self._run(loaded)
        return results[0] if single else results

    def _load(self, item: ImageLike) -> Loaded:
        decoded = as_decoded(item)
        return decoded, self.predictor.prepare(decoded.image)

    def _loaded(self, chunks: list[list[ImageLike]]) -> Iterator[list[Loaded]]:
        """The chunks decoded and resized, in order. With ``workers``, by a thread pool that works one chunk
        ahead, so that the next batch's JPEG decoding and resizing overlap the network (PIL and torch release
        the GIL); at most two chunks are held in memory."""
        if self.workers == 0 or sum(map(len, chunks)) <= 1:
            yield from ([self._load(x) for x in chunk] for chunk in chunks)
            return
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="ssd-detector")
        try:
            ahead: list[Future] = [pool.submit(self._load, x) for x in chunks[0]]
            for upcoming in chunks[1:] + [[]]:
                current, ahead = ahead, [pool.submit(self._load, x) for x in upcoming]
                yield [f.result() for f in current]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def detect(self, images: Sequence[DecodedImage]) -> list[ImageDetections]:
        """Detections of decoded images, run as one batch (``ssd-detect`` decodes and batches itself); resized
        on ``workers`` threads."""
        if not images:
            return []
        prepare = self.predictor.prepare
        if self.workers == 0 or len(images) == 1:
            return self._run([(d, prepare(d.image)) for d in images])
        with ThreadPoolExecutor(min(self.workers, len(images)), thread_name_prefix="ssd-detector") as pool:
            return self._run(list(zip(images, pool.map(lambda d: prepare(d.image), images))))

    def _run(self, loaded: list[Loaded]) -> list[ImageDetections]:
        """The network (this detector's runtime) and the predictor's post-processing of one batch."""
        if not loaded:
            return []
        loc, conf = self.network(torch.stack([x for _, x in loaded]))
        return [self._result(d, det) for (d, _), det in zip(loaded, self._postprocess(loc, conf))]

    def _postprocess(self, loc: torch.Tensor, conf: torch.Tensor) -> list[Any]:
        """The predictor's decoding; with a class selection, the ``max_detections`` best of those classes
        (every detection is gathered, filtered, then cut: the output order is score-sorted, so this is exact)."""
        from ssd_torch.nms import Detections

        if self.class_ids is None:
            return self.predictor.decode(loc, conf)
        cap = self.postprocess.max_detections
        out = []
        for det in self.predictor.decode(loc, conf, max_detections=None):
            keep = torch.isin(det.labels, torch.tensor(self.class_ids, device=det.labels.device))
            out.append(Detections(*(t[keep][:cap] for t in det)))
        return out

    def _result(self, decoded: DecodedImage, det: Any) -> ImageDetections:
        width, height = decoded.size
        normalized = det.boxes.cpu().numpy().astype(np.float64).reshape(-1, 4)
        return ImageDetections(boxes=normalized * np.array([width, height, width, height], dtype=np.float64),
                               boxes_normalized=normalized, scores=det.scores.cpu().numpy().astype(np.float64),
                               labels=det.labels.cpu().numpy().astype(np.int64), categories=self.categories,
                               width=width, height=height, orientation=decoded.orientation, path=decoded.path,
                               source_mode=decoded.source_mode)
