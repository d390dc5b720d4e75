"""Parity of every fast path with the NumPy reference, on the same batches and the same model outputs.

The library behind ``ssd-crosscheck``, for tests and users alike: :func:`run_parity` takes padded batches
(``ssd_torch.data.collate.Batch``), a model and its prior layout, runs the float64 reference and each fast path
(:class:`FastPath`: torch tensors on a device, matching and NMS through a backend) on them, and returns one
:class:`Row` per check and path. Every path and the reference receive the very same model outputs (float32,
cast to float64 for the reference), so the differences are arithmetic only. ``all(row.ok for row in rows)``
is the verdict; :func:`format_rows` prints the table.

Checks (:data:`CHECKS`), each against its tolerance (:data:`TOLERANCES`):

- ``priors``: default boxes (cxcywh) against ``reference.priors.default_boxes``.
- ``matching``: per-prior labels against ``reference.loss.match_and_encode``; a differing label counts as
  agreeing only on a prior the reference itself marks as a float32 near-tie
  (``reference.matching.float32_ambiguous_priors``, the one definition docs/CONTRACT.md "Matching" names).
- ``targets``: encoded offsets on the positives both agree on, near-ties left out.
- ``loss``: (loc, conf, num_pos) per batch against ``reference.loss.multibox_loss``, the path's loss computed
  from the reference's targets (the matching has its own row).
- ``detections``: post-processed detections per image against ``reference.nms.postprocess`` (through
  ``reference.nms.float32_ambiguous_detections``, which also names the float32 near-ties of docs/CONTRACT.md
  "Ranking key"): each path detection, in its order, must be the next reference detection of the same class
  with box and score within tolerance (:func:`match_detections`); only the near-tie cases are exempt, and
  the row fails when more than :data:`EXEMPT_CAP` of the detections are exempt.

A path that raises (a broken install, a kernel that fails to compile) fails all its rows with the error in
the note, and the other paths are still checked. Fault injection for tests: monkeypatch the functions this
module calls (``match_batch``, ``multibox_loss_from_targets``, ``postprocess``, ``default_boxes``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from reference.matching import float32_ambiguous_priors
from reference.nms import ExpectedDetections, float32_ambiguous_detections, near_tied
from ssd_torch.backend import numba_usable
from ssd_torch.errors import UserError
from ssd_torch.loss import multibox_loss_from_targets
from ssd_torch.matching import match_batch
from ssd_torch.nms import postprocess
from ssd_torch.priors import default_boxes

__all__ = ["CHECKS", "Tolerance", "TOLERANCES", "EXEMPT_CAP", "FastPath", "Row", "Results", "DetectionMatch",
           "available_paths", "load_batches", "model_outputs", "reference_results", "path_results",
           "match_detections", "compare", "run_parity", "format_rows"]

CHECKS = ("priors", "matching", "targets", "loss", "detections")


@dataclass(frozen=True)
class Tolerance:
    """A value agrees when ``|got - ref| <= atol + rtol * |ref|``; a row passes when its agreement rate is
    at least ``min_agreement``."""

    atol: float
    rtol: float
    min_agreement: float

    def describe(self) -> str:
        parts = [f"atol {self.atol:g}", f"rtol {self.rtol:g}"] if (self.atol or self.rtol) else ["exact"]
        return ", ".join(parts) + f", agree >= {self.min_agreement:.4g}"


TOLERANCES: dict[str, Tolerance] = {
    "priors": Tolerance(1e-6, 1e-6, 1.0),
    "matching": Tolerance(0.0, 0.0, 1.0),
    "targets": Tolerance(1e-4, 1e-4, 1.0),
    "loss": Tolerance(1e-5, 1e-4, 1.0),
    "detections": Tolerance(1e-4, 1e-4, 1.0),
}
#: At most this share of the compared detections may be exempt as float32 near-ties (docs/CONTRACT.md
#: "Ranking key"); beyond it the exemption would hide a real difference, so none is granted.
EXEMPT_CAP = 0.02


@dataclass(frozen=True)
class FastPath:
    """A fast implementation to check: torch tensors on ``device``, matching/NMS through ``backend``."""

    name: str
    device: str
    backend: str


@dataclass
class Row:
    """One check on one path: the agreement rate, the max abs / rel difference and the tolerance it must meet."""

    check: str
    path: str
    agreement: float
    max_abs: float | None
    max_rel: float | None
    tolerance: Tolerance
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.agreement >= self.tolerance.min_agreement


@dataclass
class Results:
    """Everything one implementation computed on the batches (NumPy, float64)."""

    priors: np.ndarray                        # [P, 4] cxcywh
    labels: list[np.ndarray] = field(default_factory=list)       # per batch [B, P]
    targets: list[np.ndarray] = field(default_factory=list)      # per batch [B, P, 4]
    loss: list[np.ndarray] = field(default_factory=list)         # per batch [3]: loc, conf, num_pos
    ambiguous: list[np.ndarray] = field(default_factory=list)    # per batch [B, P] bool (reference only)
    detections: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)  # per image
    expected: list[ExpectedDetections] = field(default_factory=list)  # per image, with near-ties (reference only)


def available_paths() -> list[FastPath]:
    """torch-cpu always; numba-cpu when the kernels run here; the CUDA twins when a GPU is usable."""
    paths = [FastPath("torch-cpu", "cpu", "torch")]
    if numba_usable("cpu"):
        paths.append(FastPath("numba-cpu", "cpu", "numba"))
    if torch.cuda.is_available():
        paths.append(FastPath("torch-cuda", "cuda", "torch"))
        if numba_usable("cuda"):
            paths.append(FastPath("numba-cuda", "cuda", "numba"))
    return paths


# ---------------------------------------------------------------------------------------------- inputs
def load_batches(roots: Sequence[Path], split: str | None, class_names: Sequence[str], batch_size: int,
                 num_batches: int, seed: int, preprocess: Any = None, *, images: Path | None = None,
                 category_ids: Sequence[int | None] | None = None) -> list[Any]:
    """The first ``num_batches`` padded batches (``collate.Batch``) of a data set through the *training*
    augmentation (real gt boxes in every position and size), torch's RNG seeded: every run sees the same.

    The data set: VOC year folders ``roots`` and their ``split``; or COCO data, ``roots`` = one instances
    ``.json`` (``ssd_torch.data.coco.is_coco_data``) over the folder ``images`` (``split`` unused), categories
    matched to ``class_names`` by name, or by id with ``category_ids`` (``ssd_torch.modeling.categories``)."""
    from ssd_torch.data.coco import CocoDataset, is_coco_data
    from ssd_torch.data.collate import collate_detection
    from ssd_torch.data.preprocess import IMAGENET
    from ssd_torch.data.transforms import SSDTrainTransform
    from ssd_torch.data.voc import VOCDataset

    transform = SSDTrainTransform(preprocess=preprocess or IMAGENET)
    # a bad file raises DatasetError, a UserError already: one line naming the file
    if is_coco_data(roots):
        if images is None:
            raise UserError(f"{roots[0]} is a COCO annotation file: the folder of its images is needed too")
        ds: Any = CocoDataset(images, roots[0], transform=transform, class_names=tuple(class_names),
                              category_ids=category_ids)
    else:
        ds = VOCDataset(list(roots), split, class_names=tuple(class_names), transform=transform)
    if len(ds) < batch_size:
        raise UserError(f"{'split ' + repr(split) + ' of ' if not is_coco_data(roots) else ''}"
                        f"{[str(r) for r in roots]} has {len(ds)} images, fewer than one batch of {batch_size}")
    torch.manual_seed(seed)
    n = min(num_batches, len(ds) // batch_size)
    return [collate_detection([ds[b * batch_size + i] for i in range(batch_size)]) for b in range(n)]


def model_outputs(model: torch.nn.Module, batches: list[Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(loc[B,P,4], conf[B,P,C])`` float32 on the CPU for every batch (computed once, shared by all paths)."""
    with torch.no_grad():
        return [tuple(t.float().cpu() for t in model(batch.images)) for batch in batches]


def _gt_lists(batch: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The padded gt of a batch as per-image float64 / int64 lists (the reference's input)."""
    counts = batch.counts.tolist()
    boxes = [batch.boxes[i, :n].double().numpy() for i, n in enumerate(counts)]
    labels = [batch.labels[i, :n].numpy().astype(np.int64) for i, n in enumerate(counts)]
    return boxes, labels


# ---------------------------------------------------------------------------------------------- compute
def reference_results(spec: Any, batches: list[Any], outputs: list[tuple[torch.Tensor, torch.Tensor]],
                      variances: Sequence[float] = (0.1, 0.2), post: dict[str, Any] | None = None) -> Results:
    """The NumPy float64 reference on every batch (docs/CONTRACT.md: matching, encoding, loss, post-processing),
    with each image's float32 near-ties (``float32_ambiguous_priors``); ``variances`` and ``post`` (the
    keywords of ``postprocess``): the model's, as its ``Predictor`` decodes."""
    from reference.loss import match_and_encode, multibox_loss
    from reference.priors import default_boxes as reference_default_boxes

    priors = reference_default_boxes(spec)
    res = Results(priors=priors)
    for batch, (loc, conf) in zip(batches, outputs):
        gt_boxes, gt_labels = _gt_lists(batch)
        matched = [match_and_encode(b, lab, priors, variances=variances) for b, lab in zip(gt_boxes, gt_labels)]
        res.labels.append(np.stack([m[0] for m in matched]))
        res.ambiguous.append(np.stack([float32_ambiguous_priors(b, priors) for b in gt_boxes]))
        res.targets.append(np.stack([m[1] for m in matched]))
        loc64, conf64 = loc.double().numpy(), conf.double().numpy()
        res.loss.append(np.array(multibox_loss(loc64, conf64, gt_boxes, gt_labels, priors, variances=variances),
                                 dtype=np.float64))
        expected = [float32_ambiguous_detections(loc64[i], conf64[i], priors, variances=variances, **(post or {}))
                    for i in range(len(loc64))]
        res.expected += expected
        res.detections += [(e.boxes, e.scores, e.labels) for e in expected]
    return res


def path_results(path: FastPath, spec: Any, batches: list[Any], outputs: list[tuple[torch.Tensor, torch.Tensor]],
                 ref: Results, variances: Sequence[float] = (0.1, 0.2), post: dict[str, Any] | None = None) -> Results:
    """One fast path on every batch, converted to float64 NumPy for the comparison.

    The loss is computed from the *reference's* targets (cast to float32), so that the loss row measures the
    loss arithmetic alone; a prior whose label legitimately flips under float32 rounding would otherwise move
    num_pos and every loss part.
    """
    dev = torch.device(path.device)
    priors = default_boxes(spec, device=dev)
    res = Results(priors=priors.double().cpu().numpy())
    for k, (batch, (loc, conf)) in enumerate(zip(batches, outputs)):
        labels, targets = match_batch(batch.boxes.to(dev), batch.labels.to(dev), batch.counts.to(dev), priors,
                                      variances=variances, backend=path.backend)
        parts = multibox_loss_from_targets(loc.to(dev), conf.to(dev), torch.from_numpy(ref.labels[k]).to(dev),
                                           torch.from_numpy(ref.targets[k]).float().to(dev))
        res.labels.append(labels.cpu().numpy())
        res.targets.append(targets.double().cpu().numpy())
        res.loss.append(np.array([float(parts.loc), float(parts.conf), float(parts.num_pos)]))
        detections = postprocess(loc.to(dev), conf.to(dev), priors, variances=variances, backend=path.backend,
                                 **(post or {}))
        res.detections += [(d.boxes.double().cpu().numpy(), d.scores.double().cpu().numpy(), d.labels.cpu().numpy())
                           for d in detections]
    return res


# ---------------------------------------------------------------------------------------------- compare
def _value_row(check: str, path: str, ref: np.ndarray, got: np.ndarray, note: str = "") -> Row:
    """Elementwise comparison of equally shaped arrays under ``TOLERANCES[check]``."""
    tol = TOLERANCES[check]
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    if ref.shape != got.shape:
        return Row(check, path, 0.0, None, None, tol, f"shape {got.shape} vs reference {ref.shape}")
    if ref.size == 0:
        return Row(check, path, 1.0, 0.0, 0.0, tol, note or "nothing to compare")
    diff = np.abs(got - ref)
    # relative differences only where the reference is clearly non-zero (|ref| > atol): near 0 they mean nothing
    big = np.abs(ref) > max(tol.atol, np.finfo(np.float64).tiny)
    rel = np.where(big, diff / np.where(big, np.abs(ref), 1.0), 0.0)
    agree = float(np.mean(diff <= tol.atol + tol.rtol * np.abs(ref)))
    return Row(check, path, agree, float(diff.max()), float(rel.max()), tol, note)


def _matching_rows(path: str, ref: Results, got: Results) -> list[Row]:
    """The ``matching`` row (labels, float32 near-ties excused) and the ``targets`` row."""
    ref_l, got_l = np.concatenate(ref.labels), np.concatenate(got.labels)
    if ref_l.shape != got_l.shape:
        return [Row(check, path, 0.0, None, None, TOLERANCES[check], f"shape {got_l.shape} vs reference "
                    f"{ref_l.shape}") for check in ("matching", "targets")]
    ambiguous = np.concatenate(ref.ambiguous)
    same = ref_l == got_l
    excused = ~same & ambiguous
    note = f"{int((~same).sum())} of {same.size} prior labels differ"
    if excused.any():
        note += f", {int(excused.sum())} of them at a float32 near-tie"
    labels = Row("matching", path, float((same | excused).mean()), None, None, TOLERANCES["matching"], note)
    both = same & (ref_l > 0) & ~ambiguous  # the same gt for sure
    targets = _value_row("targets", path, np.concatenate(ref.targets)[both], np.concatenate(got.targets)[both],
                         f"{int(both.sum())} positives away from float32 near-ties")
    return [labels, targets]


@dataclass(frozen=True)
class DetectionMatch:
    """One image's (or a sum of images') detection comparison: ``agreeing`` reference detections reproduced in
    order, ``exempt`` float32 near-tie cases (a reference detection missing, or a path detection that is an
    open candidate, where ``reference.nms.float32_ambiguous_detections`` allows it), ``disagreeing`` (a sure
    reference detection missing, a path detection that matches nothing, an order inversion of keys that are
    not near-tied), and the max abs / rel differences of the matched pairs."""

    agreeing: int = 0
    exempt: int = 0
    disagreeing: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0

    @property
    def total(self) -> int:
        return self.agreeing + self.exempt + self.disagreeing

    def __add__(self, other: "DetectionMatch") -> "DetectionMatch":
        return DetectionMatch(self.agreeing + other.agreeing, self.exempt + other.exempt,
                              self.disagreeing + other.disagreeing, max(self.max_abs, other.max_abs),
                              max(self.max_rel, other.max_rel))


def _close(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, gb: np.ndarray, gs: float, gl: int,
           tol: Tolerance) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``boxes/scores/labels`` a path detection ``(gb, gs, gl)`` matches, and the differences."""
    box_diff = np.abs(boxes - gb[None, :]).max(axis=1, initial=0.0) if len(boxes) else np.zeros(0)
    score_diff = np.abs(scores - gs)
    close = (labels == gl) & (box_diff <= tol.atol + tol.rtol) & (score_diff <= tol.atol + tol.rtol * np.abs(scores))
    return close, np.maximum(box_diff, score_diff)


def match_detections(expected: ExpectedDetections, got: tuple, tol: Tolerance = TOLERANCES["detections"]
                     ) -> DetectionMatch:
    """Compare a path's detections ``got = (boxes[G, 4], scores[G], labels[G])`` (NumPy) of one image with the
    reference's ``expected``: each path detection, in order, takes the first unused reference detection it
    matches (same class, box and score within ``tol``), else an unused open extra candidate (exempt), else it
    disagrees; unused reference detections are exempt when flagged, else they disagree; consecutive path
    detections whose reference keys are inverted must be near-tied (``reference.nms.near_tied``)."""
    gb, gs, gl = (np.asarray(a) for a in got)
    used = np.zeros(len(expected.labels), dtype=bool)
    used_extra = np.zeros(len(expected.extra_labels), dtype=bool)
    agree, exempt, bad, diffs, rels, prev = 0, 0, 0, [0.0], [0.0], -1
    for g in range(len(gl)):
        close, diff = _close(expected.boxes, expected.scores, expected.labels, gb[g], float(gs[g]), int(gl[g]), tol)
        hits = np.flatnonzero(close & ~used)
        if len(hits):
            d = int(hits[0])
            used[d], agree = True, agree + 1
            diffs.append(float(diff[d]))
            rels.append(abs(float(gs[g]) - expected.scores[d]) / max(expected.scores[d], np.finfo(float).tiny))
            if prev > d and not near_tied(expected.keys[prev], expected.keys[d]):
                bad += 1  # an order inversion the contract does not allow
            prev = d
            continue
        close, _ = _close(expected.extra_boxes, expected.extra_scores, expected.extra_labels, gb[g],
                          float(gs[g]), int(gl[g]), tol)
        hits = np.flatnonzero(close & ~used_extra)
        if len(hits):
            used_extra[hits[0]], exempt = True, exempt + 1
        else:
            bad += 1
    missing = ~used
    exempt += int(np.sum(missing & expected.exempt))
    bad += int(np.sum(missing & ~expected.exempt))
    return DetectionMatch(agree, exempt, bad, max(diffs), max(rels))


def _detection_row(path: str, ref: Results, got: Results) -> Row:
    tol = TOLERANCES["detections"]
    total = DetectionMatch()
    for r, g in zip(ref.expected, got.detections):
        total = total + match_detections(r, g, tol)
    n = total.total
    note = (f"{total.agreeing} of {n} detections agree over {len(ref.detections)} images, "
            f"{total.exempt} exempt as float32 near-ties")
    within_cap = total.exempt <= EXEMPT_CAP * n
    if not within_cap:
        note += f" (more than {EXEMPT_CAP:.0%}: none granted)"
    rate = (total.agreeing + (total.exempt if within_cap else 0)) / n if n else 1.0
    return Row("detections", path, rate, total.max_abs, total.max_rel, tol, note)


def compare(path: str, ref: Results, got: Results) -> list[Row]:
    """The rows of one path, in :data:`CHECKS` order."""
    rows = [_value_row("priors", path, ref.priors, got.priors)]
    rows += _matching_rows(path, ref, got)
    rows.append(_value_row("loss", path, np.stack(ref.loss), np.stack(got.loss),
                           f"(loc, conf, num_pos) of {len(ref.loss)} batches"))
    rows.append(_detection_row(path, ref, got))
    return rows


# ---------------------------------------------------------------------------------------------- run
def run_parity(batches: list[Any], predictor: Any, paths: Sequence[FastPath] | None = None) -> list[Row]:
    """Reference + every path (default: :func:`available_paths`) on ``batches`` with the outputs of a
    ``ssd_torch.modeling.predictor.Predictor``'s model, its priors, variances and post-processing settings;
    the rows, grouped by check in :data:`CHECKS` order, paths in their given order inside a check."""
    spec, variances = predictor.config.prior_spec, predictor.config.variances
    post = predictor.postprocess.postprocess_kwargs()
    outputs = model_outputs(predictor.model, batches)
    ref = reference_results(spec, batches, outputs, variances, post)
    rows: list[Row] = []
    for path in paths if paths is not None else available_paths():
        try:
            got = path_results(path, spec, batches, outputs, ref, variances, post)
        except Exception as e:  # noqa: BLE001 - a path that crashes (a broken install, a kernel that fails to compile) fails
            rows += _error_rows(path.name, e)  # its rows; the other paths are still checked and reported
            continue
        rows += compare(path.name, ref, got)
    return sorted(rows, key=lambda r: CHECKS.index(r.check))  # stable: paths keep their order inside a check


def _error_rows(path: str, error: Exception) -> list[Row]:
    """One failing row per check for a path that raised: the table shows the error instead of a traceback."""
    message = f"error: {type(error).__name__}: {error}".splitlines()[0][:160]
    return [Row(check, path, 0.0, None, None, TOLERANCES[check], message) for check in CHECKS]


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2e}"


def format_rows(rows: Sequence[Row]) -> str:
    """The one table: check, path, agreement, max abs / rel difference, tolerance, status, note."""
    headers = ("check", "path", "agreement", "max abs", "max rel", "tolerance", "status", "note")
    cells = [(r.check, r.path, f"{100 * r.agreement:.3f}%", _fmt(r.max_abs), _fmt(r.max_rel),
              r.tolerance.describe(), "ok" if r.ok else "FAIL", r.note) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)
