"""``ssd-crosscheck``: every fast path against the NumPy reference, on the same real batches, in one table.

What a user runs first on a new machine or a new version. The paths are ``torch-cpu`` and ``numba-cpu``, plus
``torch-cuda`` and ``numba-cuda`` when a GPU is present (``numba`` = the ``kernels/`` backend of matching and
NMS; priors, encoding and the loss sums are torch on every path). The batches come from a dataset split
(``--data ROOT --split S``) through the *training* augmentation, or from a synthetic VOC tree generated in a
temporary folder when ``--data`` is absent. Model outputs for the loss and post-processing rows come from
``--checkpoint``, else from a randomly initialised slim SSD300 (seeded); every path and the reference receive
the very same outputs (float32, cast to float64 for the reference), so differences are arithmetic only.

Rows (one per check and path), each with the agreement rate, the max abs / rel difference against the
reference, and the tolerance it must meet (:data:`TOLERANCES`):

- ``priors``: default boxes (cxcywh) against ``reference.priors.default_boxes``.
- ``matching``: per-prior labels against ``reference.loss.match_and_encode``. A differing label counts as
  agreeing only where the reference itself decided a tie within float32 rounding (:func:`ambiguous_priors`:
  IoU at the threshold, symmetric priors tying for a gt's best prior, a prior equally close to two gts).
- ``targets``: encoded offsets on the unambiguous positives both agree on.
- ``loss``: (loc, conf, num_pos) per batch against ``reference.loss.multibox_loss``, the path's loss computed
  from the reference's targets (the matching has its own row).
- ``detections``: post-processed detections per image against ``reference.nms.postprocess``: a reference
  detection agrees when the path has one of the same class with box and score within tolerance (scores tied
  within float32 rounding may swap places at the 200-detection cut, hence an agreement threshold below 1).

Exit status 1 when any row leaves its tolerance; a path that raises (a broken install, a kernel that fails
to compile) fails all its rows with the error in the note, and the other paths are still checked. Test hook: ``SSD_CROSSCHECK_BREAK=torch-cpu:matching`` (a
comma-separated list of ``path:check``), or the ``break_checks`` argument of :func:`run_crosscheck`,
deliberately corrupts a path's result so that a test can prove the tool fails loudly.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ssd_torch.cli import UserError, add_trust_flag, run_cli

__all__ = ["Tolerance", "TOLERANCES", "CHECKS", "FastPath", "Row", "available_paths", "parse_breaks",
           "load_batches", "run_crosscheck", "format_rows", "main"]

CHECKS = ("priors", "matching", "targets", "loss", "detections")
BREAK_ENV = "SSD_CROSSCHECK_BREAK"


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
    "detections": Tolerance(1e-4, 1e-4, 0.99),
}


@dataclass(frozen=True)
class FastPath:
    """A fast implementation to check: torch tensors on ``device``, matching/NMS through ``backend``."""

    name: str
    device: str
    backend: str


@dataclass
class Row:
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


def available_paths() -> list[FastPath]:
    """torch-cpu always; numba-cpu when ``kernels`` imports; the CUDA twins when a GPU is visible."""
    import torch

    paths = [FastPath("torch-cpu", "cpu", "torch")]
    numba_ok = _numba_available()
    if numba_ok:
        paths.append(FastPath("numba-cpu", "cpu", "numba"))
    if torch.cuda.is_available():
        paths.append(FastPath("torch-cuda", "cuda", "torch"))
        if numba_ok and _numba_cuda_available():
            paths.append(FastPath("numba-cuda", "cuda", "numba"))
    return paths


def _numba_available() -> bool:
    try:
        import kernels.interop  # noqa: F401
    except Exception:  # numba missing or broken: the path is simply not offered
        return False
    return True


def _numba_cuda_available() -> bool:
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:
        return False


def parse_breaks(text: str | None) -> dict[str, set[str]]:
    """``"torch-cpu:matching,numba-cpu:loss"`` -> ``{"torch-cpu": {"matching"}, "numba-cpu": {"loss"}}``."""
    out: dict[str, set[str]] = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        path, _, check = item.partition(":")
        if check not in CHECKS:
            raise UserError(f"{BREAK_ENV}: unknown check {check!r} in {item!r}; checks are {list(CHECKS)}")
        out.setdefault(path, set()).add(check)
    return out


# ---------------------------------------------------------------------------------------------- data
def _class_names_for(root: Path) -> tuple[str, ...]:
    """The synthetic classes for a tree written by ``ssd_torch.data.synthetic``, else the 20 VOC classes."""
    from ssd_torch.data.synthetic import SYNTHETIC_CLASSES
    from ssd_torch.data.voc import VOC_CLASSES

    return SYNTHETIC_CLASSES if (root / "synthetic.json").is_file() else VOC_CLASSES


def load_batches(roots: Sequence[Path], split: str, class_names: Sequence[str], batch_size: int,
                 num_batches: int, seed: int, preprocess: Any = None) -> list[Any]:
    """The first ``num_batches`` padded batches (``collate.Batch``) of the split through the training
    augmentation, with torch's RNG seeded so that every run sees the same batches."""
    import torch

    from ssd_torch.data.collate import collate_detection
    from ssd_torch.data.preprocess import IMAGENET
    from ssd_torch.data.transforms import SSDTrainTransform
    from ssd_torch.data.voc import DatasetError, VOCDataset

    try:
        ds = VOCDataset(list(roots), split, class_names=tuple(class_names), transform=SSDTrainTransform(preprocess=preprocess or IMAGENET))
    except DatasetError as e:
        raise UserError(str(e)) from e
    if len(ds) < batch_size:
        raise UserError(f"split {split!r} of {[str(r) for r in roots]} has {len(ds)} images, fewer than one "
                        f"batch of {batch_size}")
    torch.manual_seed(seed)
    n = min(num_batches, len(ds) // batch_size)
    try:
        return [collate_detection([ds[b * batch_size + i] for i in range(batch_size)]) for b in range(n)]
    except DatasetError as e:
        raise UserError(str(e)) from e


def _model_outputs(model: Any, batches: list[Any]) -> list[tuple[Any, Any]]:
    """``(loc[B,P,4], conf[B,P,C])`` float32 on the CPU for every batch (computed once, shared by all paths)."""
    import torch

    with torch.no_grad():
        return [tuple(t.float().cpu() for t in model(batch.images)) for batch in batches]


def _model_and_classes(checkpoint: Path | None, class_names: Sequence[str] | None, seed: int,
                       trust_checkpoint: bool = False) -> tuple[Any, Any, list[str]]:
    """The checkpoint's model, or a seeded random slim SSD300 for ``class_names``."""
    import torch

    from ssd_torch.modeling.model_config import ssd300_slim
    from ssd_torch.inference import load_model_for_inference
    from ssd_torch.modeling.model import model_from_config

    if checkpoint is not None:
        model, cfg, names = load_model_for_inference(checkpoint, "cpu", trust_checkpoint=trust_checkpoint)
        return model, cfg, names
    torch.manual_seed(seed)
    cfg = ssd300_slim(num_classes=len(class_names) + 1)
    return model_from_config(cfg).eval(), cfg, ["background", *class_names]


# ---------------------------------------------------------------------------------------------- compute
def _gt_lists(batch: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The padded gt of a batch as per-image float64 / int64 lists (the reference's input)."""
    counts = batch.counts.tolist()
    boxes = [batch.boxes[i, :n].double().numpy() for i, n in enumerate(counts)]
    labels = [batch.labels[i, :n].numpy().astype(np.int64) for i, n in enumerate(counts)]
    return boxes, labels


#: IoUs closer than this are a tie under float32 rounding (float32 IoUs carry ~1e-7 relative error).
TIE_EPS = 1e-5


def ambiguous_priors(gt_boxes: np.ndarray, priors: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """``[P]`` bool: priors whose match a float32 implementation may legitimately decide the other way.

    docs/CONTRACT.md "Matching" compares IoUs three times; a prior is ambiguous when one comparison is a tie within
    :data:`TIE_EPS`: its best IoU sits at the threshold (step 5), it is (near) the best prior of some gt (the
    forcing of step 3/4: symmetric priors often tie exactly in real arithmetic, and rounding picks one), or
    its two best gts overlap it equally (step 2).
    """
    from reference.boxes import box_iou, cxcywh_to_xyxy

    if len(gt_boxes) == 0:
        return np.zeros(len(priors), dtype=bool)
    iou = box_iou(np.asarray(gt_boxes, np.float64), cxcywh_to_xyxy(np.asarray(priors, np.float64)))
    best = iou.max(axis=0)
    at_threshold = np.abs(best - iou_threshold) <= TIE_EPS
    near_forced = (iou >= iou.max(axis=1, keepdims=True) - TIE_EPS).any(axis=0)
    top2 = np.sort(iou, axis=0)[-2:] if len(iou) > 1 else np.stack([np.full_like(best, -1.0), best])
    two_gts = top2[1] - top2[0] <= TIE_EPS
    return at_threshold | near_forced | two_gts


def reference_results(spec: Any, batches: list[Any], outputs: list[tuple[Any, Any]]) -> Results:
    """The NumPy float64 reference on every batch (docs/CONTRACT.md: matching, encoding, loss, post-processing)."""
    from reference.loss import match_and_encode, multibox_loss
    from reference.nms import postprocess
    from reference.priors import default_boxes

    priors = default_boxes(spec)
    res = Results(priors=priors)
    for batch, (loc, conf) in zip(batches, outputs):
        gt_boxes, gt_labels = _gt_lists(batch)
        matched = [match_and_encode(b, l, priors) for b, l in zip(gt_boxes, gt_labels)]
        res.labels.append(np.stack([m[0] for m in matched]))
        res.ambiguous.append(np.stack([ambiguous_priors(b, priors) for b in gt_boxes]))
        res.targets.append(np.stack([m[1] for m in matched]))
        loc64, conf64 = loc.double().numpy(), conf.double().numpy()
        res.loss.append(np.array(multibox_loss(loc64, conf64, gt_boxes, gt_labels, priors), dtype=np.float64))
        res.detections += [postprocess(loc64[i], conf64[i], priors) for i in range(len(loc64))]
    return res


def path_results(path: FastPath, spec: Any, batches: list[Any], outputs: list[tuple[Any, Any]],
                 ref: Results) -> Results:
    """One fast path on every batch, converted to float64 NumPy for the comparison.

    The loss is computed from the *reference's* targets (cast to float32), so that the loss row measures the
    loss arithmetic alone; a prior whose label legitimately flips under float32 rounding (see
    :func:`ambiguous_priors`) would otherwise move num_pos and every loss part.
    """
    import torch

    from ssd_torch.loss import multibox_loss_from_targets
    from ssd_torch.matching import match_batch
    from ssd_torch.nms import postprocess
    from ssd_torch.priors import default_boxes

    dev = torch.device(path.device)
    priors = default_boxes(spec, device=dev)
    res = Results(priors=priors.double().cpu().numpy())
    for k, (batch, (loc, conf)) in enumerate(zip(batches, outputs)):
        labels, targets = match_batch(batch.boxes.to(dev), batch.labels.to(dev), batch.counts.to(dev), priors,
                                      backend=path.backend)
        parts = multibox_loss_from_targets(loc.to(dev), conf.to(dev), torch.from_numpy(ref.labels[k]).to(dev),
                                           torch.from_numpy(ref.targets[k]).float().to(dev))
        res.labels.append(labels.cpu().numpy())
        res.targets.append(targets.double().cpu().numpy())
        res.loss.append(np.array([float(parts.loc), float(parts.conf), float(parts.num_pos)]))
        res.detections += [(d.boxes.double().cpu().numpy(), d.scores.double().cpu().numpy(),
                            d.labels.cpu().numpy()) for d in postprocess(loc.to(dev), conf.to(dev), priors,
                                                                         backend=path.backend)]
    return res


def break_results(res: Results, checks: set[str]) -> Results:
    """Corrupt the named parts of ``res`` well beyond every tolerance (the test hook)."""
    if "priors" in checks:
        res.priors = res.priors + 1e-3
    if "matching" in checks:  # relabel a quarter of each image's priors
        res.labels = [np.where(np.arange(l.shape[1]) % 4 == 0, (l + 1) % 3, l) for l in res.labels]
    if "targets" in checks:
        res.targets = [t + 0.01 for t in res.targets]
    if "loss" in checks:
        res.loss = [v * 1.01 + 0.01 for v in res.loss]
    if "detections" in checks:  # lose every second detection
        res.detections = [(b[::2], s[::2], l[::2]) for b, s, l in res.detections]
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
    ref_l, got_l = np.concatenate(ref.labels), np.concatenate(got.labels)
    if ref_l.shape != got_l.shape:
        return [Row("matching", path, 0.0, None, None, TOLERANCES["matching"], "shape mismatch")]
    ambiguous = np.concatenate(ref.ambiguous)
    same = ref_l == got_l
    excused = ~same & ambiguous  # flips within float32 rounding of a tie (see ambiguous_priors)
    note = f"{int((~same).sum())} of {same.size} prior labels differ"
    if excused.any():
        note += f", {int(excused.sum())} of them at a float32 tie"
    labels = Row("matching", path, float((same | excused).mean()), None, None, TOLERANCES["matching"], note)
    # targets where both sides matched the same class and the match is unambiguous (same gt for sure)
    both = same & (ref_l > 0) & ~ambiguous
    targets = _value_row("targets", path, np.concatenate(ref.targets)[both], np.concatenate(got.targets)[both],
                         f"{int(both.sum())} unambiguous positives")
    return [labels, targets]


def _detection_pairs(ref: tuple, got: tuple, tol: Tolerance) -> tuple[int, int, list[float], list[float]]:
    """``(agreeing, compared, abs diffs, rel diffs)`` of one image's detections (same class, box + score close)."""
    rb, rs, rl = ref
    gb, gs, gl = got
    compared = max(len(rs), len(gs))
    if len(rs) == 0 or len(gs) == 0:
        return 0, compared, [], []
    box_diff = np.abs(rb[:, None, :] - gb[None, :, :]).max(-1)
    score_diff = np.abs(rs[:, None] - gs[None, :])
    close = ((rl[:, None] == gl[None, :]) & (box_diff <= tol.atol + tol.rtol)
             & (score_diff <= tol.atol + tol.rtol * np.abs(rs[:, None])))
    matched = close.any(axis=1)
    best = np.where(close, np.maximum(box_diff, score_diff), np.inf).argmin(axis=1)[matched]
    diffs = np.maximum(box_diff, score_diff)[np.flatnonzero(matched), best]
    rel = score_diff[np.flatnonzero(matched), best] / np.maximum(rs[matched], np.finfo(np.float64).tiny)
    return int(matched.sum()), compared, diffs.tolist(), rel.tolist()


def _detection_row(path: str, ref: Results, got: Results) -> Row:
    tol = TOLERANCES["detections"]
    agree = total = 0
    diffs: list[float] = []
    rels: list[float] = []
    for r, g in zip(ref.detections, got.detections):
        a, n, d, rr = _detection_pairs(r, g, tol)
        agree, total, diffs, rels = agree + a, total + n, diffs + d, rels + rr
    rate = agree / total if total else 1.0
    return Row("detections", path, rate, max(diffs, default=0.0), max(rels, default=0.0), tol,
               f"{agree} of {total} detections agree over {len(ref.detections)} images")


def compare(path: str, ref: Results, got: Results) -> list[Row]:
    """The table rows of one path, in :data:`CHECKS` order."""
    rows = [_value_row("priors", path, ref.priors, got.priors)]
    rows += _matching_rows(path, ref, got)
    rows.append(_value_row("loss", path, np.stack(ref.loss), np.stack(got.loss),
                           f"(loc, conf, num_pos) of {len(ref.loss)} batches"))
    rows.append(_detection_row(path, ref, got))
    return rows


# ---------------------------------------------------------------------------------------------- run
def run_crosscheck(batches: list[Any], model: Any, spec: Any, paths: Sequence[FastPath] | None = None,
                   break_checks: dict[str, set[str]] | None = None) -> list[Row]:
    """Reference + every path on ``batches`` with ``model``'s outputs; the rows of the table.

    ``break_checks`` (``{path name: {check, ...}}``, merged with ``$SSD_CROSSCHECK_BREAK``) corrupts results
    on purpose: the test hook proving that a broken path fails.
    """
    breaks = parse_breaks(os.environ.get(BREAK_ENV))
    for name, checks in (break_checks or {}).items():
        breaks.setdefault(name, set()).update(checks)
    outputs = _model_outputs(model, batches)
    ref = reference_results(spec, batches, outputs)
    rows: list[Row] = []
    for path in paths if paths is not None else available_paths():
        try:
            got = path_results(path, spec, batches, outputs, ref)
        except Exception as e:  # a path that crashes (a broken install, a kernel that fails to compile) fails
            rows += _error_rows(path.name, e)  # its rows; the other paths are still checked and reported
            continue
        if path.name in breaks:
            got = break_results(got, breaks[path.name])
        rows += compare(path.name, ref, got)
    order = {c: i for i, c in enumerate(("priors", "matching", "targets", "loss", "detections"))}
    return sorted(rows, key=lambda r: order[r.check])  # stable: paths keep their order inside a check


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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssd-crosscheck",
                                description="Compare every fast path (torch/numba, CPU/CUDA) with the NumPy reference.")
    p.add_argument("--data", type=Path, nargs="+", default=None, metavar="ROOT",
                   help="VOC year folder(s); default: a synthetic tree generated in a temporary folder")
    p.add_argument("--split", default="trainval", help="split of --data (default: %(default)s)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="model outputs from this checkpoint (default: a seeded random slim model)")
    p.add_argument("--batches", type=int, default=2, help="number of batches (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="augmentation / random model seed")
    p.add_argument("--paths", default=None,
                   help="comma-separated subset of the paths to check (default: every available one)")
    add_trust_flag(p)
    return p


def _select_paths(spec: str | None) -> list[FastPath]:
    paths = available_paths()
    if spec is None:
        return paths
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    names = [p.name for p in paths]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise UserError(f"--paths: {unknown} not available here; available: {names}")
    return [p for p in paths if p.name in wanted]


def _crosscheck(args: argparse.Namespace, roots: list[Path]) -> list[Row]:
    names_given = None
    if args.checkpoint is None:
        names_given = _class_names_for(roots[0])
    model, cfg, names = _model_and_classes(args.checkpoint, names_given, args.seed, args.trust_checkpoint)
    batches = load_batches(roots, args.split, names[1:], args.batch_size, args.batches, args.seed,
                           cfg.preprocess)
    paths = _select_paths(args.paths)
    print(f"{len(batches)} batches x {args.batch_size} images from {', '.join(map(str, roots))} ({args.split}), "
          f"model: {args.checkpoint or f'random {cfg.name} (seed {args.seed})'}; "
          f"paths: {', '.join(p.name for p in paths)}")
    return run_crosscheck(batches, model, cfg.prior_spec, paths)


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.batches < 1 or args.batch_size < 1:
        raise UserError(f"--batches and --batch-size must be >= 1, got {args.batches} and {args.batch_size}")
    parse_breaks(os.environ.get(BREAK_ENV))  # a malformed hook or path list is reported before any work
    _select_paths(args.paths)
    if args.data is not None:
        for root in args.data:
            if not root.is_dir():
                raise UserError(f"data root {root} does not exist")
        rows = _crosscheck(args, list(args.data))
    else:
        from ssd_torch.data.synthetic import generate_voc

        with tempfile.TemporaryDirectory(prefix="ssd-crosscheck-") as tmp:
            root = generate_voc(Path(tmp) / "VOC2007", args.batches * args.batch_size, 0, seed=args.seed)
            args.split = "trainval"
            rows = _crosscheck(args, [root])
    print(format_rows(rows))
    failed = [r for r in rows if not r.ok]
    for r in failed:
        print(f"FAIL: {r.check} on {r.path}: agreement {100 * r.agreement:.3f}% < "
              f"{100 * r.tolerance.min_agreement:.3f}% ({r.note})")
    print("all paths within tolerance" if not failed else f"{len(failed)} row(s) out of tolerance")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, "ssd-crosscheck")


if __name__ == "__main__":
    raise SystemExit(main())
