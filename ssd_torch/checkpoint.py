"""The checkpoint file format ``ssd300-checkpoint/1`` (ARCHITECTURE.md "Checkpoint format"): its one reader,
its one builder, the one ``torch.load`` of the project and atomic saves. The run-folder side (rotation, best
file, RNG capture) is ``ssd_torch.training.checkpoint``; what inference reads from a checkpoint is
``ssd_torch.modeling.predictor``.

Safe by construction: a checkpoint holds only tensors and plain containers (dict, list, tuple, str, numbers,
None) — RNG states included — so :func:`read_checkpoint` unpickles with ``torch.load(weights_only=True)``. A
file that needs anything else (a pickled callable, a NumPy array of an old checkpoint) is refused in one line
that names the type; nothing from it runs. ``trust=True`` (the tools' ``--trust-checkpoint``) is the explicit
way to load such a file anyway.

Atomic: ``torch.save`` into a temp file in the SAME folder (``os.replace`` is atomic only within one
filesystem), fsync, then ``os.replace`` onto the final name — a crash mid-write leaves the previous file intact.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Mapping

import torch

from ssd_torch.errors import CheckpointError
from ssd_torch.labels import check_categories

__all__ = ["FORMAT", "REQUIRED_KEYS", "atomic_save", "build_checkpoint", "check_finite", "load_torch_file",
           "nonfinite_keys", "read_checkpoint", "unwrap_model"]

FORMAT = "ssd300-checkpoint/1"
#: What inference needs; training checkpoints add optimizer, scheduler, scaler, RNG and position.
REQUIRED_KEYS = ("format", "model", "model_config", "class_names")


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (``ssd_torch.files.atomic_write``: temp file in the same folder
    + ``os.replace``; whatever goes wrong, even KeyboardInterrupt, the previous checkpoint stays untouched)."""
    from ssd_torch.files import atomic_write

    return atomic_write(path, lambda f: torch.save(obj, f))


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def build_checkpoint(*, model: torch.nn.Module, model_config: dict[str, Any], class_names: list[str], step: int,
                     epoch: int, optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                     scaler: Any = None, rng: dict[str, Any] | None = None,
                     train_config: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
                     extra: dict[str, Any] | None = None,
                     postprocess: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint dict of ARCHITECTURE.md. ``class_names[0]`` must be ``"background"``; ``rng``: the RNG
    states that exact resume restores (``ssd_torch.training.checkpoint.capture_rng``; None for a file that is
    not resumed, e.g. an import); ``extra`` holds the engine's position (e.g. ``step_in_epoch``) and NaN-guard
    counters; ``postprocess``: the post-processing settings every inference path applies
    (``ssd_torch.modeling.postprocess_config.PostprocessConfig.to_dict``; None: the contract's defaults)."""
    check_categories(class_names, "build_checkpoint", model_config.get("num_classes"))
    return {"format": FORMAT, "model": unwrap_model(model).state_dict(), "model_config": model_config,
            "class_names": list(class_names), "step": int(step), "epoch": int(epoch),
            "optimizer": None if optimizer is None else optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "scaler": None if scaler is None or not scaler.is_enabled() else scaler.state_dict(),
            "rng": rng, "train_config": train_config or {},
            "metrics": metrics or {}, "extra": extra or {}, "postprocess": dict(postprocess or {})}


def _unsafe_globals(path: Path) -> list[str]:
    """The types a weights-only load of ``path`` would refuse (read without unpickling); [] if none or unknown."""
    try:
        return sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path))))
    except Exception:  # noqa: BLE001 - not a zip checkpoint (a legacy or junk file)
        return []


def load_torch_file(path: str | Path, *, trust: bool = False, map_location: str | torch.device = "cpu") -> Any:
    """Whatever ``path`` holds, by ``torch.load`` with ``weights_only=not trust``: the one loader of every
    ``.pt`` / ``.pth`` file (our checkpoints through :func:`read_checkpoint`, peers' state dicts through
    ``ssd_torch.modeling.weights.read_state_dict``). Every failure is a :class:`CheckpointError` naming the
    file, in our own words (torch's advice to retry with full unpickling is never passed on); a file that
    needs more than tensors and plain containers is refused with the types named, and nothing from it runs."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError:
        if trust:
            raise CheckpointError(f"checkpoint {path}: not a PyTorch checkpoint (it cannot be unpickled)") from None
        raise CheckpointError(_refusal(path)) from None
    except Exception as e:  # noqa: BLE001 - the weights-only unpickler fails on junk in many ways (KeyError...)
        raise CheckpointError(f"checkpoint {path}: not a PyTorch checkpoint ({_first_line(e)})") from None


#: The first bytes of a legacy (pre-zip) ``torch.save`` file: its pickled magic number (protocol 2).
_LEGACY_MAGIC = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)[:-1]
_TRUST_ADVICE = ("nothing from the file was executed (pass --trust-checkpoint only for a file you trust, e.g. one "
                 "written before weights-only checkpoints)")


def _refusal(path: Path) -> str:
    """Why a weights-only load of ``path`` failed, in one line: the unsafe types of a zip checkpoint, an old
    (legacy pickle) torch file, or not a torch file at all."""
    needed = _unsafe_globals(path)
    if needed:
        return (f"checkpoint {path}: refused to load, it needs {', '.join(needed)}, which an SSD300 checkpoint "
                f"never holds; {_TRUST_ADVICE}")
    with path.open("rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
    if head == _LEGACY_MAGIC:
        return (f"checkpoint {path}: refused to load, a legacy-format torch file (before zip serialisation) "
                f"that holds more than tensors and plain containers; {_TRUST_ADVICE}")
    return f"checkpoint {path}: not a PyTorch checkpoint (neither a torch zip file nor a legacy torch file)"


def _first_line(e: Exception) -> str:
    """``Type: first line`` of an exception (torch's loader errors run to several paragraphs)."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def nonfinite_keys(state: Mapping[str, Any]) -> list[str]:
    """The keys of ``state`` (a state dict) whose floating-point tensors hold a NaN or an inf, in order."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def check_finite(state: Mapping[str, Any], source: str) -> None:
    """The one finiteness rule of weights read from a file (parameters AND buffers, e.g. BatchNorm's
    ``running_var``): a :class:`CheckpointError` ``<source>: non-finite values (NaN/inf) in [...]`` naming the
    tensors. A model that diverged is never trained on, evaluated, exported or detected with."""
    bad = nonfinite_keys(state)
    if bad:
        more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
        raise CheckpointError(f"{source}: non-finite values (NaN/inf) in {bad[:5]}{more}; the model diverged or "
                              f"the file is damaged: use an earlier checkpoint")


def read_checkpoint(path: str | Path, *, trust: bool = False, map_location: str | torch.device = "cpu",
                    require_finite: bool = True) -> dict[str, Any]:
    """The one checkpoint reader: load ``path`` (weights only, unless ``trust``) and check the format tag,
    :data:`REQUIRED_KEYS` and (``require_finite``) that every weight is finite (:func:`check_finite`; so
    ssd-eval, ssd-detect, ssd-export, ``--init-from`` and ``--resume`` all refuse a diverged model). Every
    failure is a :class:`CheckpointError` naming the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path}: file not found")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: not a file")
    ckpt = load_torch_file(path, trust=trust, map_location=map_location)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict with keys {list(REQUIRED_KEYS)}, "
                              f"got a {type(ckpt).__name__}")
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: format tag {ckpt.get('format')!r}, expected {FORMAT!r} (not "
                              f"written by ssd300; import a peer's file with ssd-import)")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path}: missing keys {missing}")
    model = ckpt["model"]
    if not isinstance(model, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in model.items()):
        raise CheckpointError(f"checkpoint {path}: 'model' must be a state dict (names -> tensors), got "
                              f"{type(model).__name__}; the file is damaged or not an ssd300 checkpoint")
    if require_finite:
        check_finite(model, f"checkpoint {path}")
    return ckpt
