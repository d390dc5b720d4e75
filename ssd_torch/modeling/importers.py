"""Trained SSD300 weights in the layouts the ecosystem ships them, to and from our checkpoint format.

Three peers train the same network as our ``ssd300_vgg16`` preset (VGG16 with pool5 3x3/1, dilated fc6, 1x1 fc7,
L2Norm on conv4_3, extras conv8..conv11, one 3x3 loc and conf conv per source map). Their state dicts differ only
in key names; the tensors map one to one, unchanged, because all four flatten a head's output the same way
(NCHW -> NHWC, channel ``a * K + k`` is box ``a``'s column ``k``: ssd.pytorch ``SSD.forward``, lufficc
``BoxPredictor.forward``, torchvision ``SSDScoringHead.forward``), and all four encode offsets as
docs/CONTRACT.md "Encoding" (torchvision's ``BoxCoder(weights=(10, 10, 5, 5))`` is variances (0.1, 0.2)).
What differs besides the names is carried by our checkpoint: the priors (``reference.priors`` presets), the
input convention (``ssd_torch.data.preprocess`` presets), the box coder's variances, the class names (with their
COCO category ids for torchvision's published class list: docs/CONTRACT.md "Classes of a checkpoint and a COCO
file") and the peer's own post-processing (``PostprocessConfig``), so that an imported model detects as its own
code does:

=============  =========  ========  ==========  =============  ========  ================================
format         score >    per class  NMS IoU >  per image      clipping  read in
=============  =========  ========  ==========  =============  ========  ================================
torchvision    0.01       400       0.45        200            yes       ``SSD.__init__`` defaults,
                                                                         ``postprocess_detections``
ssd.pytorch    0.01       200       0.45        no cap         no        ``Detect(C, 0, 200, 0.01, 0.45)``
lufficc        0.01       no cap    0.45        100            no        ``defaults.py`` TEST, ``inference.py``
=============  =========  ========  ==========  =============  ========  ================================

A published figure (``published``) is stated only for the published file itself: torchvision names its files by
their SHA-256 prefix, which the file's hash must start with; ssd.pytorch and lufficc publish no hash, so no figure
is claimed for their files.

=============  ==========================================  =========================================  ===========
format         file                                        keys                                       classes
=============  ==========================================  =========================================  ===========
torchvision    ``ssd300_vgg16_coco-b556d3b4.pth``          ``backbone.features.N``, ``backbone.extra  91 (COCO,
               (``SSD300_VGG16_Weights.COCO_V1``)          .N...``, ``backbone.scale_weight``,        incl. N/A)
                                                           ``head.{classification,regression}_head``
ssd.pytorch    ``ssd300_mAP_77.43_v2.pth``                 ``vgg.N``, ``L2Norm.weight``,              21 (VOC)
                                                           ``extras.N``, ``loc.N``, ``conf.N``
lufficc        ``vgg_ssd300_voc0712.pth`` (``{"model":     ``backbone.vgg.N``, ``backbone.l2_norm``,  21 (VOC)
               state_dict, "optimizer": ...}``)            ``backbone.extras.N``, ``box_head.
                                                           predictor.{cls,reg}_headers.N``
=============  ==========================================  =========================================  ===========

Sources read for these facts: torchvision ``models/detection/ssd.py`` (``ssd300_vgg16``,
``SSDFeatureExtractorVGG``, ``SSDHead``), ``anchor_utils.py`` (``DefaultBoxGenerator``); ssd.pytorch ``ssd.py``
(``vgg``, ``add_extras``, ``multibox``, ``SSD``), ``data/config.py``, ``data/voc0712.py``; lufficc/SSD
``ssd/modeling/backbone/vgg.py``, ``ssd/modeling/box_head/box_predictor.py``, ``ssd/config/defaults.py``,
``ssd/data/datasets/voc.py``, ``ssd/utils/checkpoint.py``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from reference.priors import LUFFICC_VOC, SSD_PYTORCH_VOC, TORCHVISION_COCO, PriorSpec
from ssd_torch.labels import categories_of
from ssd_torch.data.preprocess import CAFFE_RGB, TORCHVISION_SSD, Preprocess
from ssd_torch.checkpoint import check_finite
from ssd_torch.errors import CheckpointError
from ssd_torch.modeling.model_config import ModelConfig, ssd300_vgg16
from ssd_torch.modeling.postprocess_config import PostprocessConfig
from ssd_torch.modeling.weights import listed, mismatch_problems, read_state_dict

__all__ = ["PeerFormat", "FORMATS", "ImportReport", "peer_key_map", "import_state_dict", "export_state_dict",
           "import_peer_file", "imported_checkpoint", "coco_class_names", "coco_category_ids", "voc_class_names",
           "published_claim"]


def voc_class_names() -> tuple[str, ...]:
    """Background + the 20 VOC classes in the order ssd.pytorch (``VOC_CLASSES``) and lufficc (``class_names``)
    number them (alphabetical; label = index + 1)."""
    from ssd_torch.data.voc import VOC_CLASSES
    return categories_of(VOC_CLASSES)


def coco_class_names() -> tuple[str, ...]:
    """torchvision's 91 COCO category names (``SSD300_VGG16_Weights.COCO_V1.meta["categories"]``: the 80 classes
    at their COCO ids, ``"N/A"`` at the 10 unused ids), with its ``"__background__"`` named ``"background"``."""
    from torchvision.models.detection import SSD300_VGG16_Weights
    categories = SSD300_VGG16_Weights.COCO_V1.meta["categories"]
    return categories_of(categories[1:])  # torchvision names its label 0 "__background__"


def coco_category_ids(names: Sequence[str]) -> tuple[int | None, ...]:
    """torchvision's COCO outputs -> COCO category ids: output ``k`` is category ``k`` (its list is laid out by
    id); background and the ``"N/A"`` placeholders of unused ids have none (docs/CONTRACT.md "Classes of a
    checkpoint and a COCO file")."""
    return tuple(None if k == 0 or name == "N/A" else k for k, name in enumerate(names))


@dataclass(frozen=True)
class PeerFormat:
    """One peer's trained-SSD300 file: ``module_name(ours) -> theirs`` renames our conv modules,
    ``l2norm_key`` is its L2Norm scale, ``prior_spec`` / ``preprocess`` / ``class_names`` / ``variances`` what
    its models were trained with, ``postprocess`` how its code turns outputs into detections, ``category_ids``
    the COCO ids of its published class list (None: matched by name), ``published`` the number its authors
    report for ``file`` (the name users have), ``published_sha256`` the hex prefix of that file's SHA-256 (None:
    not published, so no file can be recognised as the published one)."""

    name: str
    file: str
    module_name: Callable[[str], str]
    l2norm_key: str
    prior_spec: PriorSpec
    preprocess: Preprocess
    class_names: Callable[[], tuple[str, ...]]
    published: str
    published_sha256: str | None
    postprocess: PostprocessConfig
    variances: tuple[float, float] = (0.1, 0.2)
    category_ids: Callable[[Sequence[str]], tuple[int | None, ...]] | None = None


#: Our conv modules of the ``ssd300_vgg16`` preset: VGG convs in ``lower`` (conv1_1 .. conv4_3, at the indices
#: of torchvision's ``features`` / ssd.pytorch's ``vgg``) and ``upper`` (conv5_1 .. conv5_3, fc6, fc7), extras
#: (1x1 at 0, 3x3 at 2 of each block), then the heads.
_LOWER = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21)
_UPPER = (1, 3, 5, 8, 10)
_OUR_MODULES = ([f"lower.{i}" for i in _LOWER] + [f"upper.{j}" for j in _UPPER]
                + [f"extras.{k}.{m}" for k in range(4) for m in (0, 2)]
                + [f"{head}.{k}" for head in ("loc_heads", "conf_heads") for k in range(6)])
#: ssd.pytorch's ``vgg`` list continues after conv4_3's ReLU (index 22) with pool4 at 23, where our ``upper`` starts.
_UPPER_OFFSET = 23


def _ssd_pytorch_module(ours: str, prefix: str = "", loc: str = "loc", conf: str = "conf") -> str:
    """ssd.pytorch ``vgg.N`` / ``extras.N`` (a flat list: 1x1 and 3x3 alternate) / ``loc.k`` / ``conf.k``."""
    part, idx, *rest = ours.split(".")
    if part == "lower":
        return f"{prefix}vgg.{idx}"
    if part == "upper":
        return f"{prefix}vgg.{int(idx) + _UPPER_OFFSET}"
    if part == "extras":
        return f"{prefix}extras.{2 * int(idx) + int(rest[0]) // 2}"
    return f"{loc if part == 'loc_heads' else conf}.{idx}"


def _lufficc_module(ours: str) -> str:
    """lufficc ``SSDDetector``: ssd.pytorch's lists under ``backbone.``, heads in ``box_head.predictor``."""
    return _ssd_pytorch_module(ours, "backbone.", "box_head.predictor.reg_headers",
                               "box_head.predictor.cls_headers")


#: torchvision ``SSDFeatureExtractorVGG``: ``features`` stops before pool4; ``extra.0`` = pool4, conv5_x (ReLUs
#: between) then ``fc`` = (pool5, fc6, ReLU, fc7, ReLU) at index 7; ``extra.1..4`` are our extras blocks.
_TORCHVISION_UPPER = {1: "backbone.extra.0.1", 3: "backbone.extra.0.3", 5: "backbone.extra.0.5",
                      8: "backbone.extra.0.7.1", 10: "backbone.extra.0.7.3"}


def _torchvision_module(ours: str) -> str:
    part, idx, *rest = ours.split(".")
    if part == "lower":
        return f"backbone.features.{idx}"
    if part == "upper":
        return _TORCHVISION_UPPER[int(idx)]
    if part == "extras":
        return f"backbone.extra.{int(idx) + 1}.{rest[0]}"
    head = "regression_head" if part == "loc_heads" else "classification_head"
    return f"head.{head}.module_list.{idx}"


FORMATS: dict[str, PeerFormat] = {
    "torchvision": PeerFormat(
        name="torchvision", file="ssd300_vgg16_coco-b556d3b4.pth", module_name=_torchvision_module,
        l2norm_key="backbone.scale_weight", prior_spec=TORCHVISION_COCO, preprocess=TORCHVISION_SSD,
        class_names=coco_class_names, published="COCO val2017 box AP 25.1 (SSD300_VGG16_Weights.COCO_V1)",
        published_sha256="b556d3b4", category_ids=coco_category_ids,
        # SSD(score_thresh=0.01, nms_thresh=0.45, detections_per_img=200, topk_candidates=400): candidates per
        # class before NMS; boxes clipped to the image; BoxCoder(weights=(10, 10, 5, 5)) = variances (0.1, 0.2)
        postprocess=PostprocessConfig(score_threshold=0.01, top_k=400, nms_threshold=0.45, max_detections=200,
                                      clip_boxes=True)),
    "ssd.pytorch": PeerFormat(
        name="ssd.pytorch", file="ssd300_mAP_77.43_v2.pth", module_name=_ssd_pytorch_module,
        l2norm_key="L2Norm.weight", prior_spec=SSD_PYTORCH_VOC, preprocess=CAFFE_RGB, class_names=voc_class_names,
        published="VOC2007 test mAP 77.43 (11-point; ssd.pytorch README)", published_sha256=None,
        # Detect(num_classes, 0, 200, 0.01, 0.45): nms(..., top_k=200) per class, output [B, C, 200] (no per-image
        # cut: its rank mask fills a copy), decode() without clamping; cfg["variance"] = [0.1, 0.2]
        postprocess=PostprocessConfig(score_threshold=0.01, top_k=200, nms_threshold=0.45, max_detections=None,
                                      clip_boxes=False)),
    "lufficc": PeerFormat(
        name="lufficc", file="vgg_ssd300_voc0712.pth", module_name=_lufficc_module,
        l2norm_key="backbone.l2_norm.weight", prior_spec=LUFFICC_VOC, preprocess=CAFFE_RGB,
        class_names=voc_class_names, published="VOC2007 test mAP 77.7 (lufficc/SSD README model zoo)",
        published_sha256=None,
        # TEST: CONFIDENCE_THRESHOLD 0.01, NMS_THRESHOLD 0.45, MAX_PER_IMAGE 100 (MAX_PER_CLASS -1 is never read);
        # PostProcessor: batched_nms of every candidate, no clipping; CENTER/SIZE_VARIANCE 0.1 / 0.2
        postprocess=PostprocessConfig(score_threshold=0.01, top_k=None, nms_threshold=0.45, max_detections=100,
                                      clip_boxes=False)),
}


def peer_key_map(fmt: PeerFormat) -> dict[str, str]:
    """Our state-dict key -> the peer's, for every tensor of ``ssd300_vgg16`` (71: 35 convs, the L2Norm scale)."""
    out = {f"{m}.{p}": f"{fmt.module_name(m)}.{p}" for m in _OUR_MODULES for p in ("weight", "bias")}
    out["l2norm.weight"] = fmt.l2norm_key
    return out


def _format(name: str) -> PeerFormat:
    if name not in FORMATS:
        raise CheckpointError(f"unknown format {name!r}; known formats: {sorted(FORMATS)}")
    return FORMATS[name]


def _expected_shapes(num_classes: int) -> dict[str, tuple[int, ...]]:
    """Our key -> shape for ``ssd300_vgg16(num_classes)`` (built on the meta device: no memory, no init)."""
    from ssd_torch.modeling.model import model_from_config
    with torch.device("meta"):
        model = model_from_config(ssd300_vgg16(num_classes=num_classes))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _closest_format(keys: set[str], exclude: str) -> str | None:
    """The other format whose keys ``keys`` are exactly, if any (for the "wrong layout" hint)."""
    for name, fmt in FORMATS.items():
        if name != exclude and set(peer_key_map(fmt).values()) == keys:
            return name
    return None


def _check_layout(sd: Mapping[str, Tensor], fmt: PeerFormat, source: str) -> None:
    expected = set(peer_key_map(fmt).values())
    if set(sd) == expected:
        return
    missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
    other = _closest_format(set(sd), fmt.name)
    if other:
        hint = f"; it is a {other} file: use format {other!r}"
    elif set(sd) == set(peer_key_map(fmt)):
        hint = "; it is already an ssd300 checkpoint's model: use the checkpoint directly"
    else:
        hint = f"; expected the {len(expected)} tensors of {fmt.name}'s SSD300 ({fmt.file})"
    raise CheckpointError(f"{source}: not a {fmt.name} SSD300 state dict (missing keys: {listed(missing)}; "
                          f"unexpected keys: {listed(unexpected)}){hint}")


def _num_classes(sd: Mapping[str, Tensor], fmt: PeerFormat, source: str) -> int:
    """C from the first conf head (4 boxes per cell: ``4 * C`` output channels)."""
    key = f"{fmt.module_name('conf_heads.0')}.weight"
    rows = int(sd[key].shape[0]) if sd[key].dim() == 4 else -1
    if rows <= 0 or rows % 4:
        raise CheckpointError(f"{source}: {key} has shape {list(sd[key].shape)}; a conf head of 4 boxes per cell "
                              f"needs [4 * C, 512, 3, 3]")
    return rows // 4


def _class_names(fmt: PeerFormat, num_classes: int, given: Sequence[str] | None, source: str) -> tuple[str, ...]:
    """``given`` (object classes, background added) or the format's published class list, checked against C."""
    names = categories_of(given) if given is not None else fmt.class_names()
    if len(names) != num_classes:
        origin = "the class names given" if given is not None else f"{fmt.name}'s published model"
        raise CheckpointError(
            f"{source}: the file has {num_classes} classes (conf head 0: 4 boxes x {num_classes}) but {origin} has "
            f"{len(names)} (background included); pass the {num_classes - 1} object class names in label order "
            f"(--classes a,b,...)")
    if len(set(names)) != len(names) and given is not None:
        raise CheckpointError(f"{source}: class names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    return tuple(names)


def import_state_dict(fmt_name: str, sd: Mapping[str, Tensor], *, class_names: Sequence[str] | None = None,
                      source: str = "state dict") -> tuple[ModelConfig, tuple[str, ...], dict[str, Tensor]]:
    """A peer's state dict -> (our ``ModelConfig`` with the peer's priors and input convention, class names with
    background first, our state dict). Wrong layout, class count, shapes or non-finite values: one
    :class:`CheckpointError` line naming the file (``source``) and what differs."""
    fmt = _format(fmt_name)
    _check_layout(sd, fmt, source)
    num_classes = _num_classes(sd, fmt, source)
    names = _class_names(fmt, num_classes, class_names, source)
    key_map = peer_key_map(fmt)
    expected = {key_map[k]: shape for k, shape in _expected_shapes(num_classes).items()}
    problems = mismatch_problems(sd, expected)
    if problems:
        raise CheckpointError(f"{source}: not {fmt.name}'s SSD300-VGG16 with {num_classes} classes; "
                              + "; ".join(problems))
    check_finite(sd, source)  # the one finiteness rule of every reader (ssd_torch.checkpoint)
    cfg = ModelConfig(name="ssd300_vgg16", num_classes=num_classes, prior_spec=fmt.prior_spec,
                      preprocess=fmt.preprocess, variances=fmt.variances)
    ours = {k: sd[theirs].float() for k, theirs in key_map.items()}  # a half-precision file becomes float32
    return cfg, names, ours


def export_state_dict(fmt_name: str, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our ``ssd300_vgg16`` state dict -> the peer's key names (the same tensors), e.g. to load our weights in
    torchvision's ``ssd300_vgg16`` or ssd.pytorch's ``build_ssd``. The priors and input convention are the
    checkpoint's; they match the peer's only for a model imported from (or trained like) that peer."""
    key_map = peer_key_map(_format(fmt_name))
    missing = sorted(set(key_map) - set(state_dict))
    if missing:
        raise CheckpointError(f"not an ssd300_vgg16 state dict: missing keys {listed(missing)}")
    return {theirs: state_dict[ours] for ours, theirs in key_map.items()}


def published_claim(fmt: PeerFormat, sha256: str) -> tuple[str | None, str]:
    """``(figure, sentence)``: the peer's published figure only when ``sha256`` (the file's hex digest) is the
    published file's (it starts with ``fmt.published_sha256``), else None; the sentence says which case holds."""
    if fmt.published_sha256 is None:
        return None, (f"none claimed: {fmt.name} publishes no hash of {fmt.file}, so no file can be recognised "
                      f"as the published one (evaluate it: ssd-eval)")
    if sha256.lower().startswith(fmt.published_sha256.lower()):
        return fmt.published, f"{fmt.published} (this is the published file: sha256 {fmt.published_sha256}...)"
    return None, (f"none: this file is not {fmt.name}'s published {fmt.file} (sha256 {sha256[:8]}..., expected "
                  f"{fmt.published_sha256}...)")


@dataclass(frozen=True)
class ImportReport:
    """What ``ssd-import`` read and what the checkpoint holds; :meth:`text` prints it. ``published``: the peer's
    figure when the file is the published one (else None); ``claim``: the sentence about it."""

    format: str
    path: str
    sha256: str
    num_classes: int
    class_names: tuple[str, ...]
    prior_spec: PriorSpec
    preprocess: Preprocess
    published: str | None
    claim: str
    postprocess: PostprocessConfig
    variances: tuple[float, float]
    category_ids: tuple[int | None, ...] | None

    def text(self) -> str:
        shown = ", ".join(self.class_names[1:6]) + (", ..." if len(self.class_names) > 6 else "")
        ids = "" if self.category_ids is None else (
            f"; COCO category ids, {sum(c is None for c in self.category_ids[1:])} unused outputs never predicted")
        return "\n".join([
            f"imported {self.format} SSD300 from {self.path} (sha256 {self.sha256[:16]}...)",
            f"  classes: {self.num_classes} incl. background ({shown}){ids}",
            f"  priors: steps {list(self.prior_spec.steps or [])}, scales {list(self.prior_spec.scales)}, "
            f"clip {_clip_text(self.prior_spec)}",
            f"  input: {self.preprocess.describe()}",
            f"  box coder: variances {tuple(self.variances)}",
            f"  post-processing ({self.format}'s): {_postprocess_text(self.postprocess)}",
            f"  published: {self.claim}"])


def _postprocess_text(p: PostprocessConfig) -> str:
    def cap(n: int | None) -> str:
        return "no cap" if n is None else str(n)
    return (f"score > {p.score_threshold:g}, {cap(p.top_k)} per class, NMS IoU > {p.nms_threshold:g}, "
            f"{cap(p.max_detections)} per image, boxes {'clipped to the image' if p.clip_boxes else 'not clipped'}")


def _clip_text(spec: PriorSpec) -> str:
    if not spec.clip:
        return "none"
    return "cx, cy, w, h" if spec.clip_centres else "w, h only"


def import_peer_file(fmt_name: str, path: str | os.PathLike, *, class_names: Sequence[str] | None = None,
                     trust: bool = False) -> tuple[ModelConfig, tuple[str, ...], dict[str, Tensor], ImportReport]:
    """Read a peer's file (weights only unless ``trust``) and :func:`import_state_dict` it; also the report. The
    file holds a state dict, or a dict with the state dict under ``"model"`` (lufficc's ``CheckPointer``, with
    ``optimizer``, ``scheduler`` and ``iteration`` beside it)."""
    from ssd_torch.files import file_sha256  # the one file hash (ssd-eval keys its cache with it)

    fmt = _format(fmt_name)
    path = Path(path)
    sd = read_state_dict(path, trust=trust, container_key="model")
    cfg, names, ours = import_state_dict(fmt_name, sd, class_names=class_names, source=str(path))
    sha256 = file_sha256(path)
    published, claim = published_claim(fmt, sha256)
    # the published class list's ids; classes given by the user are matched by name
    ids = fmt.category_ids(names) if fmt.category_ids is not None and class_names is None else None
    report = ImportReport(format=fmt.name, path=str(path), sha256=sha256, num_classes=cfg.num_classes,
                          class_names=names, prior_spec=cfg.prior_spec, preprocess=cfg.preprocess,
                          published=published, claim=claim, postprocess=fmt.postprocess, variances=cfg.variances,
                          category_ids=ids)
    return cfg, names, ours, report


def imported_checkpoint(fmt_name: str, path: str | os.PathLike, *, class_names: Sequence[str] | None = None,
                        trust: bool = False) -> tuple[dict[str, Any], ImportReport]:
    """Our checkpoint dict (``ssd_torch.checkpoint.build_checkpoint``: step 0, no optimizer) for a peer's file,
    with the peer's post-processing in ``postprocess``, the COCO ids of its published classes in
    ``category_ids`` (``ssd_torch.modeling.categories``) and the provenance in ``extra["imported_from"]``;
    ``ssd-eval``, ``ssd-detect``, ``ssd-export`` and fine-tuning read it like any of ours."""
    from ssd_torch.modeling.model import model_from_config
    from ssd_torch.checkpoint import build_checkpoint

    cfg, names, ours, report = import_peer_file(fmt_name, path, class_names=class_names, trust=trust)
    with torch.device("meta"):  # no initialisation to pay for: every tensor is assigned from the file
        model = model_from_config(cfg)
    model.load_state_dict(ours, assign=True)
    extra = {"imported_from": {"format": report.format, "file": report.path, "sha256": report.sha256,
                               "published": report.published}}
    ckpt = build_checkpoint(model=model, model_config=cfg.to_dict(), class_names=list(names), step=0, epoch=0,
                            extra=extra, postprocess=report.postprocess.to_dict())
    if report.category_ids is not None:
        ckpt["category_ids"] = list(report.category_ids)
    return ckpt, report
