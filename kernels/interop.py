"""Torch glue for the numba kernels: the entry points that ``ssd_torch`` calls for ``backend="numba"``.

* CPU tensors run the ``@njit`` CPU twins on zero-copy NumPy views (``Tensor.numpy()``).
* CUDA tensors run the CUDA kernels zero-copy (``cuda.as_cuda_array`` on detached tensors, i.e. the
  ``__cuda_array_interface__``), launched on torch's *current* stream of the tensors' device through
  ``cuda.external_stream``; outputs are allocated by torch on the same device. Nothing here synchronises the
  host, so a CUDA call returns as soon as the kernels are queued.

Input rules (a wrong input raises ``TypeError``/``ValueError`` naming the argument, never a silent result):
float tensors must be float32; integer tensors may be any integer dtype (int64 is used as is, others are
converted to int64 — a copy); non-contiguous tensors are copied with ``.contiguous()``; all tensors must sit
on one device. Checks that read the values themselves follow :class:`ValueChecks` (``value_checks=``): by default
they run for CPU tensors only (``ValueChecks.CPU_ONLY``), because on CUDA they need a host synchronisation;
``ALWAYS`` runs them on CUDA too, and ``NEVER`` skips them (``ssd_torch.matching.match_batch`` passes ``NEVER``:
it validated already, or was told not to). The ground truth is checked by the reference's one validator,
``reference.matching.check_padded_ground_truth`` (docs/CONTRACT.md "Matching" step 6), and the variances by
``reference.coding.check_variances``; the kernels clamp counts to their valid range so that an unchecked bad
count can never read out of bounds.
"""
from __future__ import annotations

import contextlib
import enum
from typing import Any, Iterator, Sequence

import torch

from reference.coding import check_variances
from reference.matching import check_padded_ground_truth

from . import matching as _matching
from . import nms as _nms

__all__ = ["ValueChecks", "match_batch_numba", "nms_keep_numba", "cuda_available"]

_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def cuda_available() -> bool:
    """True when torch sees a CUDA device and numba can use it (both are needed for the CUDA path)."""
    if not torch.cuda.is_available():
        return False
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken driver/toolkit setup reads as "no CUDA", the CPU twins still work
        return False


# ---------------------------------------------------------------------------------------------- validation
class ValueChecks(enum.Enum):
    """Whether an entry point reads its inputs' values to check them (counts in range, valid ground truth).

    Shape, dtype and device checks always run; these are the checks that need the data itself.
    """

    CPU_ONLY = "cpu_only"  #: check CPU tensors; skip on CUDA, where reading the values syncs the host
    ALWAYS = "always"  #: check on every device (a host synchronisation on CUDA)
    NEVER = "never"  #: check nothing: the caller validated already, or chose not to

    def run_on(self, device: torch.device) -> bool:
        """True when the value checks run for tensors on ``device``."""
        return self is ValueChecks.ALWAYS or (self is ValueChecks.CPU_ONLY and device.type == "cpu")


def _value_checks(value_checks: object) -> ValueChecks:
    """``value_checks`` itself when it is a :class:`ValueChecks`, else a TypeError naming the members."""
    if not isinstance(value_checks, ValueChecks):
        raise TypeError(f"value_checks must be a kernels.interop.ValueChecks "
                        f"({', '.join(m.name for m in ValueChecks)}), got {value_checks!r}")
    return value_checks


def _float_arg(t: object, name: str, shape_doc: str, ndim: int) -> torch.Tensor:
    """``t`` as a contiguous float32 tensor of ``ndim`` dims with a last axis of 4, else TypeError/ValueError."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {shape_doc}, got {type(t).__name__}")
    if t.dtype != torch.float32:
        raise TypeError(f"{name} must be float32, got {t.dtype}")
    if t.dim() != ndim or t.shape[-1] != 4:
        raise ValueError(f"{name} must have shape {shape_doc}, got {tuple(t.shape)}")
    return t.detach().contiguous()


def _int_arg(t: object, name: str, shape: tuple[int, ...], shape_doc: str) -> torch.Tensor:
    """``t`` as a contiguous int64 tensor of exactly ``shape`` (other integer dtypes are converted)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {shape_doc}, got {type(t).__name__}")
    if t.dtype not in _INT_DTYPES:
        raise TypeError(f"{name} must be an integer tensor (int64 preferred), got {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape_doc} = {shape}, got {tuple(t.shape)}")
    return t.detach().to(torch.int64).contiguous()


def _same_device(**tensors: torch.Tensor) -> torch.device:
    """The one device that all ``tensors`` share; ValueError listing them otherwise."""
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) != 1:
        raise ValueError(f"all tensors must be on one device, got {devices}")
    device = next(iter(devices.values()))
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"numba kernels run on CPU or CUDA tensors, got device {device}")
    return device


def _check_counts(counts: torch.Tensor, upper: int, name: str) -> None:
    """ValueError when some count is outside [0, upper] (reads the data: a host sync on CUDA)."""
    bad = (counts < 0) | (counts > upper)
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{name}{list(index)} = {int(counts[index])} is outside [0, {upper}]")


# ---------------------------------------------------------------------------------------------- CUDA glue
@contextlib.contextmanager
def _torch_stream(device: torch.device) -> Iterator[Any]:
    """Make ``device`` numba's current GPU and yield a numba stream wrapping torch's current stream there.

    The stream is created inside the device context so that it is bound to that device's (primary) context,
    the one torch uses too.
    """
    from numba import cuda

    index = device.index if device.index is not None else torch.cuda.current_device()
    handle = torch.cuda.current_stream(index).cuda_stream
    with cuda.gpus[index]:
        yield cuda.external_stream(handle) if handle else cuda.default_stream()


def _device_view(t: torch.Tensor) -> Any:
    """Zero-copy numba view of a CUDA tensor; ``sync=False`` because we launch on the tensor's own stream."""
    from numba import cuda

    return cuda.as_cuda_array(t, sync=False)


# ---------------------------------------------------------------------------------------------- matching
def match_batch_numba(gt_boxes: torch.Tensor, gt_labels: torch.Tensor, counts: torch.Tensor,
                      priors: torch.Tensor, iou_threshold: float = 0.5,
                      variances: Sequence[float] = (0.1, 0.2), *,
                      value_checks: ValueChecks = ValueChecks.CPU_ONLY) -> tuple[torch.Tensor, torch.Tensor]:
    """Match + encode a padded batch (docs/CONTRACT.md "Matching", "Encoding") with the numba kernels.

    gt_boxes ``Tensor[B, G, 4]`` float32 xyxy normalised, gt_labels ``Tensor[B, G]`` int (1..C-1), counts
    ``Tensor[B]`` int (gts ``g >= counts[b]`` are padding), priors ``Tensor[P, 4]`` float32 cxcywh
    normalised, all on one device (CPU -> CPU twin, CUDA -> CUDA kernels on the current stream).
    Returns ``labels Tensor[B, P]`` int64 (0 = background) and ``loc_targets Tensor[B, P, 4]`` float32
    (0 for background priors), on that device. ``value_checks``: :class:`ValueChecks`.
    """
    gt_boxes = _float_arg(gt_boxes, "gt_boxes", "[B, G, 4]", 3)
    priors = _float_arg(priors, "priors", "[P, 4]", 2)
    num_images, max_gt, num_priors = gt_boxes.shape[0], gt_boxes.shape[1], priors.shape[0]
    gt_labels = _int_arg(gt_labels, "gt_labels", (num_images, max_gt), "[B, G]")
    counts = _int_arg(counts, "counts", (num_images,), "[B]")
    device = _same_device(gt_boxes=gt_boxes, gt_labels=gt_labels, counts=counts, priors=priors)
    if num_priors == 0:
        raise ValueError("priors must hold at least one prior, got shape [0, 4]")
    v0, v1 = check_variances(variances)
    if _value_checks(value_checks).run_on(device):
        check_padded_ground_truth(gt_boxes.cpu(), gt_labels.cpu(), counts.cpu())  # docs/CONTRACT.md step 6
    if num_images == 0 or max_gt == 0:  # G = 0: every prior is background, loc targets 0
        return (torch.zeros((num_images, num_priors), dtype=torch.int64, device=device),
                torch.zeros((num_images, num_priors, 4), dtype=torch.float32, device=device))
    labels = torch.empty((num_images, num_priors), dtype=torch.int64, device=device)  # the kernels write all
    loc = torch.empty((num_images, num_priors, 4), dtype=torch.float32, device=device)
    if device.type == "cpu":
        _matching.match_encode_cpu(priors.numpy(), gt_boxes.numpy(), gt_labels.numpy(), counts.numpy(),
                                   float(iou_threshold), v0, v1, labels.numpy(), loc.numpy())
    else:
        _match_cuda(gt_boxes, gt_labels, counts, priors, float(iou_threshold), v0, v1, labels, loc)
    return labels, loc


def _match_cuda(gt_boxes: torch.Tensor, gt_labels: torch.Tensor, counts: torch.Tensor, priors: torch.Tensor,
                iou_threshold: float, v0: float, v1: float, labels: torch.Tensor, loc: torch.Tensor) -> None:
    """Queue the two matching kernels on torch's current stream (the int64 key scratch is torch-allocated)."""
    best_key = torch.zeros(gt_labels.shape, dtype=torch.int64, device=gt_boxes.device)
    with _torch_stream(gt_boxes.device) as stream:
        _matching.match_encode_cuda(
            _device_view(priors), _device_view(gt_boxes), _device_view(gt_labels), _device_view(counts),
            iou_threshold, v0, v1, _device_view(labels), _device_view(loc),
            stream=stream, best_key=_device_view(best_key))


# ---------------------------------------------------------------------------------------------- NMS
def nms_keep_numba(boxes: torch.Tensor, counts: torch.Tensor, iou_threshold: float = 0.45, *,
                   value_checks: ValueChecks = ValueChecks.CPU_ONLY) -> torch.Tensor:
    """Greedy NMS of every (image, class) at once (docs/CONTRACT.md "NMS and post-processing").

    boxes ``Tensor[B, C, K, 4]`` float32 xyxy, each (image, class) already sorted by score descending
    (stable); counts ``Tensor[B, C]`` int, entries ``k >= counts[b, c]`` are padding. Returns
    ``keep Tensor[B, C, K]`` bool on the same device: True for the survivors (strict ``IoU > t`` suppresses,
    only kept boxes suppress), False for suppressed boxes and padding. The CUDA path needs ``K <= 448``.
    ``value_checks`` (counts in ``[0, K]``): :class:`ValueChecks`.
    """
    boxes = _float_arg(boxes, "boxes", "[B, C, K, 4]", 4)
    num_images, num_classes, k_max = boxes.shape[0], boxes.shape[1], boxes.shape[2]
    counts = _int_arg(counts, "counts", (num_images, num_classes), "[B, C]")
    device = _same_device(boxes=boxes, counts=counts)
    if device.type == "cuda" and k_max > _nms.MAX_K:
        raise ValueError(f"the CUDA NMS kernel handles at most K = {_nms.MAX_K} candidates per (image, class), "
                         f"got K = {k_max}; cut to the top_k first")
    if _value_checks(value_checks).run_on(device):
        _check_counts(counts, k_max, "counts")
    if boxes.numel() == 0:
        return torch.zeros((num_images, num_classes, k_max), dtype=torch.bool, device=device)
    if device.type == "cpu":
        keep = torch.empty((num_images, num_classes, k_max), dtype=torch.bool)
        _nms.nms_batched_cpu(boxes.numpy(), counts.numpy(), float(iou_threshold), keep.numpy())
        return keep
    keep = torch.empty((num_images, num_classes, k_max), dtype=torch.uint8, device=device)
    with _torch_stream(device) as stream:
        _nms.nms_batched_cuda(_device_view(boxes), _device_view(counts), float(iou_threshold),
                              _device_view(keep), stream=stream)
    return keep.view(torch.bool)
