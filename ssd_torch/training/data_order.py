"""Data order and augmentation as a pure function of ``(seed, epoch, sample index)``.

``StepSampler`` draws the epoch's permutation from ``(seed, epoch)`` and can start at any step;
``SeededDataset`` seeds the RNGs per sample from ``(seed, epoch, index)`` before the transform runs. Neither the
worker count nor the resume point can change the stream, which is what makes "N steps" and "N/2 + resume +
N/2" bit-identical on CPU.

A sample that fails to load inside a DataLoader worker comes back as a :class:`SampleError` value (the worker
would otherwise re-raise it in the main process as a multi-line traceback text); ``CollateOrError`` passes
it through and ``raise_sample_error`` raises it in the main process as the one-line ``DatasetError`` it was.
"""
from __future__ import annotations

import random
import signal
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from ssd_torch.errors import ConfigError, DatasetError

__all__ = ["sample_seed", "StepSampler", "SeededDataset", "SampleError", "CollateOrError",
           "raise_sample_error", "ignore_stop_signals"]


def sample_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integer keys (NumPy's SeedSequence: well-spread, platform-independent)."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(2, np.uint64)[0] >> 1)


class StepSampler(Sampler[list]):
    """Yields this rank's micro-batches of one epoch as lists of ``(epoch, index)`` keys.

    Step s of the epoch takes the global chunk ``perm[s*G : (s+1)*G]`` (G = micro_batch x accumulation x
    world_size; the incomplete last chunk is dropped); rank r takes the slice ``[r*b*a : (r+1)*b*a]`` of it and
    yields it as ``accumulation`` micro-batches of ``micro_batch``. So the images of a step are the same for
    every split of the effective batch, and ``set_epoch(epoch, start_step)`` resumes mid-epoch.
    """

    def __init__(self, num_samples: int, micro_batch: int, accumulation: int = 1, world_size: int = 1,
                 rank: int = 0, seed: int = 0, shuffle: bool = True) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if micro_batch <= 0 or accumulation <= 0:
            raise ValueError(f"micro_batch and accumulation must be > 0, got {micro_batch}, {accumulation}")
        self.num_samples, self.micro_batch, self.accumulation = num_samples, micro_batch, accumulation
        self.world_size, self.rank, self.seed, self.shuffle = world_size, rank, seed, shuffle
        self.global_batch = micro_batch * accumulation * world_size
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.global_batch

    def require_steps(self) -> None:
        """Raise :class:`ConfigError` when the data set is smaller than one effective batch (no step at all)."""
        if self.steps_per_epoch == 0:
            raise ConfigError(f"the training set has {self.num_samples} images, fewer than one effective batch of "
                              f"{self.global_batch} (batch x accumulation x processes): lower --batch-size or "
                              f"--accumulation, or use more images")

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        if not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"start_step must be in [0, {self.steps_per_epoch}], got {start_step}")
        self.epoch, self.start_step = epoch, start_step

    def permutation(self, epoch: int) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, 0x5A3))
        return torch.randperm(self.num_samples, generator=g)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        perm = self.permutation(self.epoch).tolist()
        per_rank = self.micro_batch * self.accumulation
        for s in range(self.start_step, self.steps_per_epoch):
            mine = perm[s * self.global_batch + self.rank * per_rank:][:per_rank]
            for m in range(self.accumulation):
                yield [(self.epoch, i) for i in mine[m * self.micro_batch:(m + 1) * self.micro_batch]]

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accumulation


class SampleError(NamedTuple):
    """A sample that could not be read: the parts of its :class:`DatasetError` (crosses process boundaries)."""

    path: str
    reason: str


class SeededDataset(Dataset):
    """Wraps a dataset whose ``__getitem__`` runs a random transform: for a key ``(epoch, index)`` the python,
    NumPy and torch RNGs are seeded from ``(seed, epoch, index)`` around ``base[index]`` (and restored after,
    so the caller's RNG streams are untouched). A plain int key reads ``base[index]`` unseeded (evaluation).
    A :class:`DatasetError` of a keyed read is returned as a :class:`SampleError`."""

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base, self.seed = base, seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        if isinstance(key, int):
            return self.base[key]
        epoch, index = key
        s = sample_seed(self.seed, epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(s)
                random.seed(s)
                np.random.seed(s & 0xFFFFFFFF)
                return self.base[index]
        except DatasetError as err:
            return SampleError(err.path, err.reason)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class CollateOrError:
    """``collate_fn`` that returns the first :class:`SampleError` of a batch instead of collating it."""

    def __init__(self, collate_fn: Callable[[list], Any]) -> None:
        self.collate_fn = collate_fn

    def __call__(self, samples: list) -> Any:
        bad = next((s for s in samples if isinstance(s, SampleError)), None)
        return bad if bad is not None else self.collate_fn(samples)


def raise_sample_error(batch: Any) -> Any:
    """``batch`` itself, or the one-line :class:`DatasetError` when it is a :class:`SampleError`."""
    if isinstance(batch, SampleError):
        hint = "" if "skip_bad" in batch.reason else "; set data.skip_bad=true to skip such files"
        raise DatasetError(batch.path, batch.reason + hint)
    return batch


def ignore_stop_signals(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: workers ignore SIGINT / SIGTERM (Ctrl-C reaches the whole process group);
    the main process finishes its step, checkpoints, then shuts the workers down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
