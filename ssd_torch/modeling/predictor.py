"""The one inference path: ``Predictor`` owns the chain eval transform -> network -> decoding with the
model's variances -> post-processing with the checkpoint's settings (docs/CONTRACT.md "Encoding", "NMS and
post-processing"). ``Detector``, ``ssd-detect``, ``ssd-eval``, the in-training evaluation, ``ssd-crosscheck``
and ``ssd-export``'s sidecar all go through it, so one checkpoint gives the same detections everywhere.

A checkpoint (``ssd_torch.checkpoint``, format ``ssd300-checkpoint/1``) carries everything that decodes it:
``model_config`` (preprocessing, priors, ``variances``), ``class_names`` (``"background"`` first) and
``postprocess`` (:class:`PostprocessConfig` fields; a file without it takes the contract's defaults) and the
optional ``category_ids`` (``ssd_torch.modeling.categories``: outputs without a category are never predicted).
Every way a file can fail to be such a checkpoint is a :class:`CheckpointError` naming the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image

from ssd_torch.checkpoint import read_checkpoint
from ssd_torch.errors import CheckpointError
from ssd_torch.labels import check_categories
from ssd_torch.modeling.categories import category_ids_of, fold_unused_classes, unused_labels
from ssd_torch.modeling.model_config import ModelConfig
from ssd_torch.modeling.postprocess_config import PostprocessConfig
from ssd_torch.modeling.weights import mismatch_problems

__all__ = ["Predictor", "config_and_classes", "postprocess_of", "check_state_dict",
           "load_predictor"]


class Predictor:
    """A model with its preprocessing, decoding and post-processing.

    ``predictor(batch)`` maps ``batch[B, 3, S, S]`` (already through :meth:`prepare`) to one
    ``ssd_torch.nms.Detections(boxes[D, 4] xyxy normalised, scores[D], labels[D] in 1..C-1)`` per image.
    ``categories``: the class names, ``"background"`` first. ``backend``: the NMS backend of
    ``ssd_torch.nms.postprocess``. ``amp_dtype`` / ``channels_last``: how the network runs (the detections are
    always post-processed in float32). ``category_ids``: the checkpoint's COCO id per output (None: none);
    ``unused_labels``, the outputs without one, are masked before ranking (docs/CONTRACT.md "Classes of a
    checkpoint and a COCO file").
    """

    def __init__(self, model: torch.nn.Module, config: ModelConfig, categories: Sequence[str],
                 postprocess: PostprocessConfig = PostprocessConfig(), *, device: str | torch.device = "cpu",
                 backend: str = "auto", amp_dtype: torch.dtype | None = None, channels_last: bool = False,
                 category_ids: Sequence[int | None] | None = None) -> None:
        from ssd_torch.data.transforms import SSDEvalTransform
        from ssd_torch.priors import default_boxes

        self.device = torch.device(device)
        self.model = model
        self.config, self.categories = config, tuple(categories)
        self.postprocess, self.backend = postprocess, backend
        self.amp_dtype, self.channels_last = amp_dtype, channels_last
        self.category_ids = None if category_ids is None else tuple(category_ids)
        self.unused_labels = unused_labels(self.category_ids)
        self.priors = default_boxes(config.prior_spec, device=self.device)
        self.transform = SSDEvalTransform(size=config.image_size, preprocess=config.preprocess)

    def __repr__(self) -> str:
        return (f"Predictor({len(self.categories) - 1} classes, device={self.device}, backend={self.backend!r}, "
                f"variances={self.config.variances}, {self.postprocess})")

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """One image -> ``Tensor[3, S, S]``: the checkpoint's eval transform (resize + ``preprocess``)."""
        empty = torch.zeros((0, 4)), torch.zeros(0, dtype=torch.int64)
        return self.transform(image, *empty)[0]

    @torch.no_grad()
    def network(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc[B, P, 4], conf[B, P, C])`` in float32 for ``batch[B, 3, S, S]`` (model in eval mode)."""
        self.model.eval()
        batch = batch.to(self.device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            loc, conf = self.model(batch)
        return loc.float(), conf.float()

    def decode(self, loc: Any, conf: Any, **overrides: Any) -> list[Any]:
        """``ssd_torch.nms.postprocess`` of raw outputs with the model's variances and this predictor's
        settings (``overrides``: single keywords replaced, e.g. ``max_detections``)."""
        from ssd_torch.nms import postprocess

        kwargs = {**self.postprocess.postprocess_kwargs(), **overrides}
        conf = fold_unused_classes(conf, self.unused_labels)  # never predicted, and masked before any ranking
        return postprocess(loc, conf, self.priors, variances=self.config.variances, backend=self.backend, **kwargs)

    def __call__(self, batch: torch.Tensor) -> list[Any]:
        """Detections of a prepared batch (class docstring)."""
        return self.decode(*self.network(batch))

    def settings(self) -> dict[str, Any]:
        """Everything besides the weights and the input that the detections depend on, as plain values
        (cache keys, sidecars)."""
        out = {"variances": list(self.config.variances), "postprocess": self.postprocess.to_dict(),
               "backend": self.backend, "device": self.device.type,
               "amp": None if self.amp_dtype is None else str(self.amp_dtype)}
        if self.unused_labels:  # only then: the cache keys of checkpoints without unused outputs stay as they were
            out["unused_labels"] = list(self.unused_labels)
        return out


def config_and_classes(ckpt: dict[str, Any], path: str | Path) -> tuple[ModelConfig, list[str]]:
    """The ``ModelConfig`` and class names (``"background"`` first) of a checkpoint dict read from ``path``,
    checked against each other: the one reading of a checkpoint's model description (inference, fine-tuning,
    resume). A :class:`CheckpointError` names the file and the problem."""
    try:
        cfg = ModelConfig.from_dict(ckpt["model_config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: invalid model_config ({e})") from e
    try:
        names = check_categories(ckpt["class_names"], f"checkpoint {path}", cfg.num_classes)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    return cfg, list(names)


def postprocess_of(ckpt: dict[str, Any], path: str | Path) -> PostprocessConfig:
    """The checkpoint's ``postprocess`` entry as a :class:`PostprocessConfig` (the defaults without one)."""
    try:
        return PostprocessConfig.from_dict(ckpt.get("postprocess") or {})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: invalid 'postprocess' ({e})") from e


def check_state_dict(model: torch.nn.Module, state: Any, source: str) -> None:
    """A :class:`CheckpointError` naming every missing, unexpected and wrongly shaped key when ``state`` does
    not fit ``model`` exactly (``ssd_torch.modeling.weights.mismatch_problems``: the one mismatch message).
    ``state`` is a state dict: ``ssd_torch.checkpoint.read_checkpoint`` refuses anything else."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = mismatch_problems(state, expected, floating=False)
    if problems:
        raise CheckpointError(f"{source}: the state dict does not match its model_config ({'; '.join(problems)})")


def load_predictor(path: str | Path, device: str | torch.device = "cpu", *, trust_checkpoint: bool = False,
                   backend: str = "auto") -> Predictor:
    """The :class:`Predictor` of a checkpoint file: its model (eval mode, on ``device``), config, classes and
    post-processing settings. ``trust_checkpoint``: unpickle in full (``torch.load`` without
    ``weights_only``), for an old file you trust. Errors: :class:`CheckpointError` naming the file."""
    from ssd_torch.modeling.model import model_from_config  # the model module is heavy; config errors come first

    path = Path(path)
    ckpt = read_checkpoint(path, trust=trust_checkpoint)
    cfg, names = config_and_classes(ckpt, path)
    post = postprocess_of(ckpt, path)
    ids = category_ids_of(ckpt, path, cfg.num_classes)
    model = model_from_config(cfg)
    check_state_dict(model, ckpt["model"], f"checkpoint {path}")
    model.load_state_dict(ckpt["model"])
    return Predictor(model.to(device).eval(), cfg, names, post, device=device, backend=backend, category_ids=ids)
