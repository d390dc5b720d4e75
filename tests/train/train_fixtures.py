"""Shared builders for the training-engine tests (imported as ``train_fixtures``): a tiny SSD300-topology
model and an in-memory dataset."""
from __future__ import annotations

import torch

from ssd_torch.data.collate import collate_detection
from ssd_torch.modeling.model import model_from_config
from ssd_torch.modeling.model_config import ModelConfig
from ssd_torch.priors import default_boxes
from ssd_torch.training.data_order import SeededDataset, StepSampler
from ssd_torch.training.model_setup import param_groups
from ssd_torch.training.objective import build_objective
from ssd_torch.training.schedule import build_lr_factor, build_scheduler
from ssd_torch.training.step import NonFiniteGuard
from ssd_torch.training.train_config import LossConfig
from ssd_torch.training.trainer import Feed, Outputs, RunMeta, SideJobs, Span, Trainer

NUM_CLASSES = 4
CLASS_NAMES = ("background", "a", "b", "c")


def tiny_config(batch_norm: bool = False) -> ModelConfig:
    """The SSD300 geometry (8732 priors) with 4-8 channels: seconds per step on a shared 2-core CPU."""
    return ModelConfig(name="tiny", num_classes=NUM_CLASSES, base_channels=((4,), (4,), (8,), (8,), (8,)),
                       fc_channels=(8, 8), extra_channels=((8, 8),) * 4, batch_norm=batch_norm)


class ToyDetection(torch.utils.data.Dataset):
    """``n`` images of noise with 1-3 boxes each (fixed per index); ``__getitem__`` draws a random flip and
    brightness from torch's global RNG, like a real augmentation, so per-sample seeding matters."""

    def __init__(self, n: int, size: int = 300) -> None:
        g = torch.Generator().manual_seed(1234)
        self.images = [torch.rand(3, size, size, generator=g) for _ in range(n)]
        self.targets = []
        for _ in range(n):
            k = int(torch.randint(1, 4, (1,), generator=g))
            xy = torch.rand(k, 2, generator=g) * 0.6
            wh = 0.1 + torch.rand(k, 2, generator=g) * 0.3
            self.targets.append((torch.cat([xy, xy + wh], 1), torch.randint(1, NUM_CLASSES, (k,), generator=g)))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img, (boxes, labels) = self.images[i], self.targets[i]
        if float(torch.rand(())) < 0.5:
            img = img.flip(-1)
            boxes = torch.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], 1)
        img = img * (0.8 + 0.4 * torch.rand(()))
        return img, {"boxes": boxes.clone(), "labels": labels.clone()}


def components(cfg: ModelConfig, seed: int = 0):
    """(model, priors, match_fn, loss_fn) with a fixed initialisation; the objective as ssd-train builds it
    (the torch matcher)."""
    torch.manual_seed(seed)
    model = model_from_config(cfg)
    priors = default_boxes(cfg.prior_spec)
    match_fn, loss_fn = build_objective(LossConfig(backend="torch"), priors, cfg.variances)
    return model, priors, match_fn, loss_fn


def make_trainer(cfg: ModelConfig, dataset, *, batch: int, accumulation: int = 1, total_steps: int,
                 stop_at: int | None = None, lr: float = 0.01, seed: int = 0, loss_fn=None, guard=None,
                 world_size: int = 1, rank: int = 0, jobs: SideJobs = SideJobs(), stop=None, **outputs) -> Trainer:
    """A CPU Trainer; with ``world_size > 1`` (a process group must exist) the model is wrapped in DDP.
    ``outputs``: fields of ``trainer.Outputs`` (checkpoints, logger, eval_fn, ...)."""
    model, _, match_fn, default_loss = components(cfg, seed)
    opt = torch.optim.SGD(param_groups(model, 5e-4), lr=lr, momentum=0.9)
    if world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    sched = build_scheduler(opt, build_lr_factor(kind="cosine", total_steps=total_steps, warmup_steps=2,
                                                 warmup_factor=0.5))
    sampler = StepSampler(len(dataset), batch, accumulation, world_size, rank, seed=seed)
    outputs.setdefault("meta", RunMeta(model_config=cfg.to_dict(), class_names=CLASS_NAMES, train_config={},
                                       postprocess={}))
    return Trainer(model=model, optimizer=opt, scheduler=sched, scaler=None, match_fn=match_fn,
                   loss_fn=loss_fn or default_loss, feed=Feed(SeededDataset(dataset, seed), sampler, collate_detection),
                   device=torch.device("cpu"), span=Span(total_steps, stop_at), jobs=jobs,
                   outputs=Outputs(print_fn=lambda s: None, **outputs), guard=guard or NonFiniteGuard(), rank=rank,
                   stop=stop)


def tiny_run_args(data, run, *extra: str, trainval: int = 8, test: int = 4, steps: int = 1,
                  batch: int = 4) -> list[str]:
    """``ssd-train`` flags for a seconds-long CPU run of the demo preset on a tiny synthetic tree at ``data``
    (generated on first use: ``data.dataset=synthetic`` asks for it):
    ``steps`` optimizer steps of ``batch`` images, the final evaluation on ``test``
    images."""
    return ["--preset", "demo", "--data-root", str(data), "--set", 'data.dataset="synthetic"',
            "--output-dir", str(run), "--batch-size", str(batch),
            "--max-steps", str(steps), "--workers", "0", "--no-progress",
            "--set", f"data.synthetic_trainval={trainval}", "--set", f"data.synthetic_test={test}",
            "--set", "schedule.warmup_iterations=0", "--set", "run.log_every=1", "--set", "run.tensorboard=false",
            "--set", "run.eval_batch_size=4", *extra]


def csv_steps(path) -> list[int]:
    """The ``step`` column of a run folder's CSV log."""
    import csv
    with open(path, newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def one_line(err: str) -> str:
    """The single line a user error prints (fails when there is a traceback or more than one line)."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def two_threads():
    """Same torch thread count in every test (the autouse fixture of tests/train and tests/faults): float sums
    must not depend on the test order."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


class NaNLossAt:
    """Wraps a loss function: its conf loss is NaN on the listed calls (1-based), after the forward pass (and
    BatchNorm's running statistics) already ran; the NaN guard's and the poisoned-model tests' fault."""

    def __init__(self, loss_fn, bad_calls):
        self.loss_fn, self.bad, self.calls = loss_fn, set(bad_calls), 0

    def __call__(self, *args):
        self.calls += 1
        parts = self.loss_fn(*args)
        return parts._replace(conf=parts.conf * float("nan")) if self.calls in self.bad else parts
