"""Training configuration: frozen dataclasses that validate themselves, presets, a JSON config file and
``--set``-style flag overrides.

Resolution order (later wins): preset -> config file (JSON, nested like ``TrainConfig.to_dict()``) -> flags.
The resolved config is saved as ``config.json`` in the run folder and inside every checkpoint. Components never
receive a ``TrainConfig``: ``ssd_torch.training.train`` hands each builder its one section (or explicit keyword
arguments). Each section checks its own fields in ``__post_init__`` against the registries that define the
allowed values (``ssd_torch.backend.BACKENDS``, ``ssd_torch.modeling.model_config.PRESETS``,
the schema's own :data:`SCHEDULE_KINDS` and :data:`AMP_MODES`, ``datasets.DATASETS`` / ``AUGMENTATIONS``,
``ssd_torch.device``); a bad value is a :class:`ssd_torch.errors.ConfigError` naming ``section.field``.

Each section also names the fields that cannot change when a run resumes (``FIXED_ON_RESUME``: the model, the
data order, the schedule and LR, the objective); ``ssd_torch.training.resume`` lists and checks them.

Presets
- ``voc07``: VOC2007+2012 trainval -> VOC2007 test, SSD300-VGG16, the paper's schedule (SSD paper §3: SGD,
  LR 1e-3 for 80k iterations then 1e-4 / 1e-5 at batch 32, 120k in all; momentum 0.9, weight decay 5e-4).
- ``coco``: COCO 2017 train -> val, SSD300-VGG16 with torchvision's COCO priors, the paper's COCO schedule
  (:func:`coco`).
- ``demo``: the synthetic VOC tree, the slim preset with BatchNorm, CPU, a short warmup + cosine schedule.

``voc07`` and ``coco`` need ImageNet VGG16 weights (``model.backbone_weights``), or a trained checkpoint to start
from (``model.init_from``), or ``model.backbone_weights=none`` (see :meth:`ModelSection.weights_to_load`).
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from reference.coding import check_variances
from reference.loss import check_min_negatives
from reference.priors import PRESETS as PRIOR_PRESETS
from reference.priors import boxes_per_cell
from ssd_torch.backend import BACKENDS
from ssd_torch.device import check_device_name
from ssd_torch.errors import ConfigError
from ssd_torch.files import atomic_write_text
from ssd_torch.modeling.model_config import PRESETS as MODEL_PRESETS
from ssd_torch.modeling.model_config import VGG16_BASE
from ssd_torch.modeling.postprocess_config import PostprocessConfig
from ssd_torch.plain import dataclass_fields, plain
from ssd_torch.data.registry import AUGMENTATIONS, CLASS_NAMES_AUTO, DATASETS

__all__ = ["DataConfig", "ModelSection", "OptimConfig", "ScheduleConfig", "LossConfig", "RuntimeConfig",
           "RunConfig", "TrainConfig", "PRESETS", "voc07", "coco", "demo", "resolve_config", "load_config_file",
           "apply_overrides", "save_config", "NO_BACKBONE_WEIGHTS"]

#: ``schedule.kind``: ``ssd_torch.training.schedule.build_lr_factor`` builds each.
SCHEDULE_KINDS: tuple[str, ...] = ("multistep", "cosine")
#: ``runtime.amp``: fp32, bf16 autocast, fp16 autocast + GradScaler (``ssd_torch.training.step.amp_settings``).
AMP_MODES: tuple[str, ...] = ("none", "bf16", "fp16")

#: ``model.backbone_weights`` value that trains an ImageNet-style backbone from scratch on purpose.
NO_BACKBONE_WEIGHTS = "none"


class _Section:
    """What every section shares: its name in the config, the fields fixed on resume, ``_require``."""

    SECTION: ClassVar[str] = ""
    #: Fields that cannot change mid-run (``ssd_torch.training.resume`` refuses such a change unless told).
    FIXED_ON_RESUME: ClassVar[frozenset[str]] = frozenset()
    #: Fields a resume does not compare with the checkpoint's (the resume request itself).
    NOT_COMPARED: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every section's ``__post_init__`` first applies :meth:`_finite` (one rule for all sections: an inf or
        NaN setting, e.g. ``--lr inf``, would otherwise pass range checks such as ``> 0``)."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is not None:
            def post_init(self: "_Section") -> None:
                self._finite()
                own(self)
            cls.__post_init__ = post_init  # type: ignore[attr-defined]

    def _finite(self) -> None:
        """Every float setting (and every float in a list setting) must be finite."""
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            items = value if isinstance(value, (tuple, list)) else (value,)
            self._require(f.name, all(math.isfinite(v) for v in items if isinstance(v, float)),
                          "a finite number")

    def _require(self, name: str, ok: bool, rule: str) -> None:
        """Raise a ConfigError ``<section>.<name> must be <rule>, got <value>`` unless ``ok``."""
        if not ok:
            raise ConfigError(f"{self.SECTION}.{name} must be {rule}, got {getattr(self, name)!r}")

    def _positive(self, *names: str) -> None:
        for name in names:
            self._require(name, getattr(self, name) > 0, "> 0")

    def _at_least_zero(self, *names: str) -> None:
        for name in names:
            self._require(name, getattr(self, name) >= 0, ">= 0")

    def _none_or_positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            self._require(name, value is None or value > 0, "null or > 0")

    def _one_of(self, name: str, allowed: typing.Iterable[str]) -> None:
        allowed = tuple(allowed)
        self._require(name, getattr(self, name) in allowed, f"one of {allowed}")


@dataclass(frozen=True)
class DataConfig(_Section):
    """Where the images come from and how they are loaded.

    dataset: ``"voc"`` (``roots`` are VOC year folders, e.g. ``.../VOCdevkit/VOC2007``), ``"synthetic"``
        (``roots[0]`` is the synthetic tree; generated there from ``synthetic_seed`` if absent or empty — never
        over files the generator did not write) or ``"coco"`` (COCO instances files, :meth:`coco_files`).
    train_split / val_split: VOC: ImageSets/Main split names; ``val_roots`` hold the held-out split. COCO: the
        split names of COCO's own layout (``train2017``, ``val2017``).
    train_annotations / train_images / val_annotations / val_images: COCO only: an instances file and the folder
        its ``file_name`` entries are relative to, for training and for the held-out evaluation; null: COCO's
        layout under ``roots[0]`` / ``val_roots[0]`` (:meth:`coco_files`).
    class_names: the object classes (labels 1..C-1, background not listed). null: the kind's own (VOC's 20, the
        synthetic shapes, a COCO file's categories in id order); ``"auto"``: read from the training annotations
        (VOC: the sorted names found in the split's XML files; COCO: the file's categories). A run writes the
        resolved list into its config.json, so that it is reproducible.
    keep_difficult: VOC ``difficult`` boxes in the training target. keep_empty: VOC images whose XML has no object
        are kept as negatives (else they are bad data; COCO images without annotations are always kept); see
        ``loss.min_negatives`` for what such images contribute.
    skip_bad: skip (count and log) bad images instead of stopping with a one-line error.
    allow_outside_images: COCO ``file_name`` entries may leave the image folder (absolute paths, ``../``); off by
        default, so that an annotation file cannot make a run read any file on the machine.
    augment: ``"ssd"`` (the full SSD augmentation), ``"light"`` (photometric + flip, no zoom/crop) or ``"none"``.
    max_train_images / max_val_images: use only the first n images of a split (quick runs, tests).
    """

    SECTION: ClassVar[str] = "data"
    FIXED_ON_RESUME: ClassVar[frozenset[str]] = frozenset({
        "dataset", "roots", "train_split", "augment", "keep_difficult", "synthetic_trainval", "synthetic_test",
        "synthetic_seed", "max_train_images", "class_names", "keep_empty", "train_annotations", "train_images"})
    #: The COCO-only path fields (null for the other kinds).
    COCO_FIELDS: ClassVar[tuple[str, ...]] = ("train_annotations", "train_images", "val_annotations", "val_images")

    dataset: str = "voc"
    roots: tuple[str, ...] = ("data/VOCdevkit/VOC2007", "data/VOCdevkit/VOC2012")
    train_split: str = "trainval"
    val_roots: tuple[str, ...] = ("data/VOCdevkit/VOC2007",)
    val_split: str = "test"
    num_workers: int = 4
    augment: str = "ssd"
    keep_difficult: bool = False
    skip_bad: bool = False
    synthetic_trainval: int = 1000
    synthetic_test: int = 200
    synthetic_seed: int = 0
    max_train_images: int | None = None
    max_val_images: int | None = None
    class_names: tuple[str, ...] | str | None = None
    keep_empty: bool = False
    train_annotations: str | None = None
    train_images: str | None = None
    val_annotations: str | None = None
    val_images: str | None = None
    allow_outside_images: bool = False

    def __post_init__(self) -> None:
        self._one_of("dataset", DATASETS)
        self._one_of("augment", AUGMENTATIONS)
        for name in ("roots", "val_roots"):
            self._require(name, len(getattr(self, name)) > 0 and all(getattr(self, name)),
                          "a list of one or more folder names")
        for name in ("train_split", "val_split"):
            self._require(name, bool(getattr(self, name)), "a split name")
        self._at_least_zero("num_workers", "synthetic_seed")
        self._positive("synthetic_trainval", "synthetic_test")
        self._none_or_positive("max_train_images", "max_val_images")
        for name in self.COCO_FIELDS:
            value = getattr(self, name)
            self._require(name, value is None or (bool(value) and self.dataset == "coco"),
                          f"null unless data.dataset is 'coco' (it is {self.dataset!r}), else a path")
        self._check_class_names()

    def _check_class_names(self) -> None:
        names = self.class_names
        if names is None or names == CLASS_NAMES_AUTO:
            return
        ok = (isinstance(names, tuple) and len(names) > 0 and all(isinstance(n, str) and n for n in names)
              and len(set(names)) == len(names) and "background" not in names)
        self._require("class_names", ok, f"null, {CLASS_NAMES_AUTO!r} or a list of distinct non-empty names "
                                         f"without 'background' (label 0 is implicit)")

    def coco_files(self) -> tuple[tuple[str, str], tuple[str, str]]:
        """``((train instances file, train image folder), (val instances file, val image folder))``: the
        explicit fields, else COCO's own layout ``<root>/annotations/instances_<split>.json`` and
        ``<root>/<split>/`` with ``roots[0]`` / ``train_split`` and ``val_roots[0]`` / ``val_split``."""
        def layout(root: str, split: str, annotations: str | None, images: str | None) -> tuple[str, str]:
            return (annotations or str(Path(root) / "annotations" / f"instances_{split}.json"),
                    images or str(Path(root) / split))
        return (layout(self.roots[0], self.train_split, self.train_annotations, self.train_images),
                layout(self.val_roots[0], self.val_split, self.val_annotations, self.val_images))


@dataclass(frozen=True)
class ModelSection(_Section):
    """Which network: a preset name of ``ssd_torch.modeling.model_config.PRESETS`` plus the few knobs a run changes.

    batch_norm: for presets that take it (``ssd300_slim``; None: the preset's default). head_bias_prior /
    l2norm_scale: override the preset's (None: keep it; a BatchNorm backbone gives conv4_3 features of norm
    ~5-10, which the default L2Norm scale of 20 amplifies ~3x relative to the other sources).
    priors: the default boxes, a name of ``reference.priors.PRESETS`` (``ssd300``, ``ssd.pytorch-voc``,
    ``lufficc-voc``, ``torchvision-coco``); None: the model preset's own.
    backbone_weights: ImageNet VGG16 weights for the backbone (``ssd_torch.modeling.weights.load_backbone``): a
    local file (torchvision's VGG16 state dict or ssd.pytorch's ``vgg16_reducedfc.pth``), a torchvision source
    ``torchvision:IMAGENET1K_FEATURES`` (ssd.pytorch's reduced-fc VGG16 as torchvision ships it) or
    ``torchvision:IMAGENET1K_V1`` (read from the torch hub cache, downloaded there when online), or ``"none"``
    to train from scratch on purpose. The weights fix the input convention (``ModelConfig.preprocess``).
    init_from: start from a trained checkpoint instead (ours, or a peer's imported with ``ssd-import``):
    ``ssd_torch.modeling.finetune.init_from_checkpoint`` copies the backbone, extras, loc heads and the conf rows
    of the classes both have, and the run adopts the checkpoint's input convention and priors. Not together with
    ``backbone_weights`` (the checkpoint's backbone would replace the ImageNet one).
    variances: the box coder's ``(v0, v1)`` (``ModelConfig.variances``, docs/CONTRACT.md "Encoding"): the loss
    encodes with them, and every checkpoint carries them so that every inference path decodes with them.
    """

    SECTION: ClassVar[str] = "model"
    FIXED_ON_RESUME: ClassVar[frozenset[str]] = frozenset(
        {"preset", "batch_norm", "head_bias_prior", "l2norm_scale", "priors", "backbone_weights", "init_from",
         "variances"})

    preset: str = "ssd300_vgg16"
    batch_norm: bool | None = None
    head_bias_prior: float | None = None
    l2norm_scale: float | None = None
    priors: str | None = None
    backbone_weights: str | None = None
    init_from: str | None = None
    variances: tuple[float, float] = (0.1, 0.2)

    def __post_init__(self) -> None:
        self._one_of("preset", MODEL_PRESETS)
        try:
            check_variances(self.variances)  # the one rule (reference.coding), also ModelConfig's
        except ValueError:
            self._require("variances", False, "two finite numbers > 0 (centre, size)")
        takes_bn = "batch_norm" in inspect.signature(MODEL_PRESETS[self.preset]).parameters
        self._require("batch_norm", self.batch_norm is None or takes_bn,
                      f"null for model.preset={self.preset!r} (it has no BatchNorm switch)")
        p = self.head_bias_prior
        self._require("head_bias_prior", p is None or 0.0 < p < 1.0, "null or a probability in (0, 1)")
        self._none_or_positive("l2norm_scale")
        self._require("priors", self.priors is None or self.priors in PRIOR_PRESETS,
                      f"null or one of {tuple(PRIOR_PRESETS)}")
        if self.priors is not None:
            heads = list(MODEL_PRESETS[self.preset]().head_boxes)
            self._require("priors", boxes_per_cell(PRIOR_PRESETS[self.priors]) == heads,
                          f"a layout with {heads} boxes per cell (the heads of model.preset={self.preset!r})")
        self._require("backbone_weights", self.backbone_weights is None or bool(self.backbone_weights),
                      "null, 'none', a file or torchvision:<weights name>")
        self._require("init_from", self.init_from is None or bool(self.init_from), "null or a checkpoint file")
        self._require("init_from", self.init_from is None or self.backbone_weights in (None, NO_BACKBONE_WEIGHTS),
                      f"null when model.backbone_weights is set ({self.backbone_weights!r}): the checkpoint's "
                      f"backbone would replace the ImageNet one; give one of them")

    def weights_to_load(self) -> str | None:
        """The backbone weights to load (None: none). A VGG16 backbone (``ssd300_vgg16``) refuses to start
        without weights unless ``backbone_weights`` is ``"none"`` or the run starts from a checkpoint
        (``init_from``): the paper's recipe fine-tunes ImageNet VGG16, and a random VGG16 silently trains to a far
        lower mAP."""
        if self.backbone_weights == NO_BACKBONE_WEIGHTS or self.init_from is not None:
            return None
        if self.backbone_weights is None and self._is_vgg16():
            raise ConfigError(
                f"model.backbone_weights is not set: SSD300-VGG16 (model.preset={self.preset!r}) starts from an "
                f"ImageNet VGG16 backbone (SSD paper §3). Give --backbone-weights (model.backbone_weights) a local "
                f"file (torchvision's VGG16 state dict or ssd.pytorch's vgg16_reducedfc.pth) or "
                f"torchvision:IMAGENET1K_FEATURES / torchvision:IMAGENET1K_V1, start from a trained checkpoint "
                f"with --init-from (model.init_from), or set model.backbone_weights={NO_BACKBONE_WEIGHTS} to train "
                f"from scratch on purpose")
        return self.backbone_weights

    def _is_vgg16(self) -> bool:
        """True for a full-width VGG16 backbone without BatchNorm: the one that ImageNet weights exist for."""
        cfg = MODEL_PRESETS[self.preset]()
        return tuple(cfg.base_channels) == VGG16_BASE and not cfg.batch_norm


@dataclass(frozen=True)
class OptimConfig(_Section):
    """SGD with the linear LR scaling rule: ``lr = base_lr * effective_batch / reference_batch``.

    effective_batch = batch_size (per process) x accumulation x world size. Weight decay applies to weights
    only (no decay on biases, L2Norm scales or BatchNorm parameters). grad_clip: max global L2 norm or None.
    On resume batch_size and accumulation may change as long as the effective batch stays the same.
    """

    SECTION: ClassVar[str] = "optim"
    FIXED_ON_RESUME: ClassVar[frozenset[str]] = frozenset(
        {"base_lr", "reference_batch", "momentum", "weight_decay", "nesterov", "grad_clip"})

    batch_size: int = 32
    accumulation: int = 1
    base_lr: float = 1e-3
    reference_batch: int = 32
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        self._positive("batch_size", "accumulation", "base_lr", "reference_batch")
        self._require("momentum", 0.0 <= self.momentum < 1.0, "in [0, 1)")
        self._at_least_zero("weight_decay")
        self._require("nesterov", not self.nesterov or self.momentum > 0, "false when optim.momentum is 0")
        self._none_or_positive("grad_clip")


@dataclass(frozen=True)
class ScheduleConfig(_Section):
    """LR schedule in OPTIMIZER steps (accumulation does not change it).

    Lengths are given in iterations at ``OptimConfig.reference_batch`` images and rescaled by
    ``reference_batch / effective_batch`` (paper: 80k/100k/120k at batch 32). If ``epochs`` is set, the run
    lasts ``epochs`` passes over the data instead and the milestones keep their fraction of ``iterations``.
    kind: one of :data:`SCHEDULE_KINDS` (``"multistep"``: x gamma at each milestone; ``"cosine"``: to
    ``min_lr_ratio`` x LR). warmup: linear from ``warmup_factor`` x LR to LR over ``warmup_iterations`` (also
    rescaled). max_steps: hard cap on optimizer steps (the schedule still spans the full length; the one
    schedule field a resumed run may change).
    """

    SECTION: ClassVar[str] = "schedule"
    FIXED_ON_RESUME: ClassVar[frozenset[str]] = frozenset(
        {"kind", "iterations", "milestones", "gamma", "warmup_iterations", "warmup_factor", "min_lr_ratio",
         "epochs"})

    kind: str = "multistep"
    iterations: int = 120_000
    milestones: tuple[int, ...] = (80_000, 100_000)
    gamma: float = 0.1
    warmup_iterations: int = 500
    warmup_factor: float = 1.0 / 3.0
    min_lr_ratio: float = 0.0
    epochs: int | None = None
    max_steps: int | None = None

    def __post_init__(self) -> None:
        self._one_of("kind", SCHEDULE_KINDS)
        self._positive("iterations")
        ms = self.milestones
        self._require("milestones", all(0 < m <= self.iterations for m in ms) and list(ms) == sorted(ms),
                      f"increasing and within (0, iterations={self.iterations}]")
        self._require("gamma", 0.0 < self.gamma <= 1.0, "in (0, 1]")
        self._at_least_zero("warmup_iterations")
        self._require("warmup_factor", 0.0 < self.warmup_factor <= 1.0, "in (0, 1]")
        self._require("min_lr_ratio", 0.0 <= self.min_lr_ratio <= 1.0, "in [0, 1]")
        self._none_or_positive("epochs", "max_steps")


@dataclass(frozen=True)
class LossConfig(_Section):
    """MultiBox loss / matching knobs (docs/CONTRACT.md "Matching", "Loss"); backend: one of
    ``ssd_torch.backend.BACKENDS`` (``auto``: the numba kernels where they run, see ``ssd_torch.backend``).

    min_negatives: the hard negatives an image WITHOUT positives contributes (docs/CONTRACT.md "Loss"). 0, the
    paper's rule and the default, leaves such an image out of the loss; with many empty images (background
    frames, COCO's ~1%, images whose objects are all difficult/crowd) and false positives on them, 8-32 makes
    each of them contribute its highest-loss background priors. Images with positives are unaffected.
    """

    SECTION: ClassVar[str] = "loss"
    FIXED_ON_RESUME: ClassVar[frozenset[str]] = frozenset({"iou_threshold", "neg_pos_ratio", "min_negatives"})

    iou_threshold: float = 0.5
    neg_pos_ratio: int = 3
    backend: str = "auto"
    min_negatives: int = 0

    def __post_init__(self) -> None:
        self._require("iou_threshold", 0.0 < self.iou_threshold <= 1.0, "in (0, 1]")
        self._positive("neg_pos_ratio")
        self._one_of("backend", BACKENDS)
        try:
            check_min_negatives(self.min_negatives)  # the rule of every loss layer (reference.loss)
        except ValueError:
            self._require("min_negatives", False, "an integer >= 0")


@dataclass(frozen=True)
class RuntimeConfig(_Section):
    """Device and numerics. device: ``ssd_torch.device.DEVICE_NAMES`` (``auto`` picks CUDA when available);
    amp: one of :data:`AMP_MODES` (``"none"`` fp32, ``"bf16"``, ``"fp16"`` + GradScaler). num_threads: torch
    CPU threads (None: torch's default). seed: initial weights and the data order (fixed on resume)."""

    SECTION: ClassVar[str] = "runtime"
    FIXED_ON_RESUME: ClassVar[frozenset[str]] = frozenset({"seed"})

    device: str = "auto"
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    seed: int = 0
    num_threads: int | None = None
    deterministic: bool = False

    def __post_init__(self) -> None:
        check_device_name(self.device, "runtime.device")
        self._one_of("amp", AMP_MODES)
        self._at_least_zero("seed")
        self._none_or_positive("num_threads")


@dataclass(frozen=True)
class RunConfig(_Section):
    """Run folder, logging, checkpoints, evaluation and the NaN guard (any of these may change on resume).

    checkpoint_every / eval_every: in optimizer steps (0: only at the end). keep_last: step checkpoints kept.
    nan_max_skips: more than this many skipped (non-finite) steps within ``nan_window`` steps stops the run.
    resume: a checkpoint path, or ``"auto"``: the run folder's latest checkpoint (none yet: start from scratch).
    """

    SECTION: ClassVar[str] = "run"
    NOT_COMPARED: ClassVar[frozenset[str]] = frozenset({"resume"})

    output_dir: str = "runs/voc07"
    log_every: int = 20
    checkpoint_every: int = 5000
    keep_last: int = 3
    eval_every: int = 10_000
    eval_batch_size: int = 32
    progress: bool = True
    tensorboard: bool = True
    nan_max_skips: int = 10
    nan_window: int = 100
    resume: str | None = None

    def __post_init__(self) -> None:
        self._require("output_dir", bool(self.output_dir), "a folder name")
        self._positive("log_every", "keep_last", "eval_batch_size", "nan_window")
        self._at_least_zero("checkpoint_every", "eval_every", "nan_max_skips")
        self._require("resume", self.resume is None or bool(self.resume), "null, 'auto' or a checkpoint path")


@dataclass(frozen=True)
class TrainConfig:
    """The whole resolved training configuration (one section per component)."""

    name: str = "voc07"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    run: RunConfig = field(default_factory=RunConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (tuples -> lists), JSON-serialisable; ``from_dict`` inverts it."""
        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a nested dict; unknown keys or wrong types raise ConfigError naming them."""
        return _build(cls, d, "config")

    def sections(self) -> dict[str, _Section]:
        """``{"data": DataConfig, ...}``: the sections by their name in the config."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}

    def replace(self, **sections: Any) -> "TrainConfig":
        return dataclasses.replace(self, **sections)


#: Settings that moved to another section: a config or flag that uses the old name is told the new one.
_MOVED = {"loss.variances": "model.variances"}


def _refuse_moved(where: str, key: str) -> None:
    """A ConfigError naming the new place of a setting that moved (:data:`_MOVED`); nothing otherwise."""
    dotted = f"{where.removeprefix('config').lstrip('.')}.{key}".lstrip(".")
    if dotted in _MOVED:
        raise ConfigError(f"{dotted} is now {_MOVED[dotted]} (the box coder's variances belong to the model and "
                          f"travel with its checkpoints): use --set {_MOVED[dotted]}=...")


def _build(cls: type, d: Any, where: str) -> Any:
    """The dataclass ``cls`` from the nested dict ``d`` (the keys checked by ``ssd_torch.plain.dataclass_fields``,
    the values by :func:`_coerce` against the field types)."""
    names = {f.name for f in dataclasses.fields(cls)}
    for key in (sorted(set(d) - names) if isinstance(d, dict) else []):
        _refuse_moved(where, key)
    d = dataclass_fields(cls, d, where, ConfigError)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in d.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{where}.{key}")
        else:
            kwargs[key] = _coerce(value, hint, f"{where.removeprefix('config.')}.{key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` (from JSON or a flag) against the field's type hint; lists become tuples."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} does not fit {hint} ({'; '.join(errors)})")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0] if args else Any, where) for v in value)
    expected = {bool: (bool, "true/false"), int: (int, "an int"), float: ((int, float), "a number"),
                str: (str, "a string")}
    if hint in expected:
        types_, word = expected[hint]
        if not isinstance(value, types_) or (hint is not bool and isinstance(value, bool)):
            raise ConfigError(f"{where} must be {word}, got {value!r}")
        return float(value) if hint is float else value
    return value


def voc07() -> TrainConfig:
    """SSD300-VGG16 on VOC07+12 trainval, VOC07 test; the paper's schedule (80k/100k/120k at batch 32).
    Needs ``model.backbone_weights`` (ImageNet VGG16) to start."""
    return TrainConfig(name="voc07")


def demo() -> TrainConfig:
    """The CPU demo: slim SSD300 (BatchNorm) on the synthetic VOC tree; warmup + cosine, 2 threads, <= 1 worker.

    Sized for ``make demo`` (<= 10 minutes on 2 cores, VOC07 mAP >= 0.8 on the synthetic test split; the
    measurements behind these values are in the README's demo section). The augmentation is the light one
    (photometric + flip): the full SSD zoom/crop needs far more epochs.
    """
    return TrainConfig(
        name="demo",
        data=DataConfig(dataset="synthetic", roots=("data/synthetic",), val_roots=("data/synthetic",),
                        train_split="trainval", val_split="test", num_workers=1, augment="light",
                        synthetic_trainval=400, synthetic_test=200, synthetic_seed=0),
        # L2Norm scale 5 instead of 20: with BatchNorm the conv4_3 features already have norm ~5-10, and 20
        # made the 38x38 head start with confident false positives.
        model=ModelSection(preset="ssd300_slim", batch_norm=True, head_bias_prior=0.99, l2norm_scale=5.0),
        # batch 8: more optimizer steps for the same images in a short CPU budget; clipped for stability
        optim=OptimConfig(batch_size=8, base_lr=0.2, weight_decay=5e-4, grad_clip=5.0),
        schedule=ScheduleConfig(kind="cosine", epochs=25, warmup_iterations=20, warmup_factor=0.1),
        loss=LossConfig(backend="auto"),
        runtime=RuntimeConfig(device="cpu", num_threads=2, seed=0),
        # evaluate every 5 epochs (400 images / 8 = 50 steps per epoch): five points on the mAP curve
        run=RunConfig(output_dir="runs/demo", log_every=5, checkpoint_every=0, keep_last=2, eval_every=250,
                      eval_batch_size=16, tensorboard=True),
    )


def coco() -> TrainConfig:
    """SSD300-VGG16 on COCO 2017: train2017 -> val2017, the paper's COCO model and schedule.

    Source: SSD paper (Liu et al., ECCV 2016) §3.4 "COCO": SGD at LR 1e-3 for 160k iterations, then 1e-4 for
    40k and 1e-5 for 40k (240k in all), batch 32 (momentum 0.9, weight decay 5e-4 as for VOC, §3), with smaller
    default boxes than for VOC because COCO's objects are smaller; torchvision's ``ssd300_vgg16`` COCO model
    uses scales 0.07 (conv4_3), 0.15, 0.33, ... 1.05, our prior preset ``torchvision-coco``
    (``reference.priors.TORCHVISION_COCO``, equal to torchvision's ``DefaultBoxGenerator``; tested). What was
    verified: the priors against torchvision's generator (tested). The schedule figures are the SSD paper's
    §3.4 as quoted by the project's COCO plan; they have not been re-read against the paper's text. The
    warmup (500 iterations) is ours, as in ``voc07``.

    Data: ``data/coco/annotations/instances_{train2017,val2017}.json`` over ``data/coco/{train2017,val2017}``
    (COCO's own layout, ``DataConfig.coco_files``); the 80 classes are the file's categories in id order.
    ``data.skip_bad`` is on: train2017 has two annotations of zero height, which the reader refuses; with
    ``skip_bad`` their two images are left out, counted and logged (2 of 118k images) instead of stopping the
    run. The evaluation every 20k iterations is pycocotools' AP@[.5:.95] on val2017 (``best.pt`` keeps it),
    with the VOC07 mAP of the same detections next to it. Needs ImageNet VGG16 weights (``model.backbone_weights``)
    or a checkpoint to start from (``model.init_from``), like ``voc07``.
    """
    return TrainConfig(
        name="coco",
        data=DataConfig(dataset="coco", roots=("data/coco",), val_roots=("data/coco",), train_split="train2017",
                        val_split="val2017", skip_bad=True),
        model=ModelSection(preset="ssd300_vgg16", priors="torchvision-coco"),
        schedule=ScheduleConfig(iterations=240_000, milestones=(160_000, 200_000)),
        run=RunConfig(output_dir="runs/coco", eval_every=20_000),
    )


PRESETS: dict[str, Callable[[], TrainConfig]] = {"voc07": voc07, "coco": coco, "demo": demo}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON config file (a nested dict, possibly partial); errors name the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--config {path} is a folder, not a JSON config file (e.g. a run's config.json)")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text, so not a JSON config file (a photo or a "
                          f"binary file?); check the path") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
    except RecursionError:
        raise ConfigError(f"config file {path}: its JSON is nested too deeply to be a config") from None
    if not isinstance(d, dict):
        raise ConfigError(f"config file {path} must hold a JSON object, got {type(d).__name__}")
    return d


def _merge(base: dict[str, Any], update: dict[str, Any], where: str = "config") -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if key not in out:
            _refuse_moved(where, key)
            raise ConfigError(f"{where}: unknown key {key!r}; known keys are {sorted(out)}")
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key} must be an object, got {value!r}")
            out[key] = _merge(out[key], value, f"{where}.{key}")
        else:
            out[key] = value
    return out


def _parse_value(text: str) -> Any:
    """A flag value: JSON when it parses (numbers, true/false/null, lists), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (value parsed as JSON, else a string) to a nested dict."""
    out = json.loads(json.dumps(d))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, text = item.split("=", 1)
        node: Any = _parse_value(text)
        for part in reversed(dotted.strip().split(".")):
            node = {part: node}
        out = _merge(out, node)
    return out


def resolve_config(preset: str = "voc07", config_file: str | Path | None = None,
                   overrides: list[str] | None = None) -> TrainConfig:
    """preset -> config file -> overrides (later wins) -> a validated ``TrainConfig``."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown training preset {preset!r}; choose one of {sorted(PRESETS)}")
    d = PRESETS[preset]().to_dict()
    if config_file is not None:
        d = _merge(d, load_config_file(config_file), f"config file {config_file}")
    d = apply_overrides(d, list(overrides or []))
    return TrainConfig.from_dict(d)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as indented JSON, atomically (``ssd_torch.files.atomic_write_text``)."""
    atomic_write_text(path, json.dumps(cfg.to_dict(), indent=2, sort_keys=False) + "\n")
