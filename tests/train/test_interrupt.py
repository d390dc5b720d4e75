"""Issue #10.3: SIGINT / SIGTERM finish the current step, write a checkpoint that ``--resume auto`` continues
exactly, print one line and exit 130 / 143 (a real subprocess and a real signal)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssd_torch.cli import train
from ssd_torch.checkpoint import read_checkpoint
from train_fixtures import csv_steps, tiny_run_args

ROOT = Path(__file__).resolve().parents[2]
STEPS = 6  # 8 images / batch 2: the run crosses an epoch boundary at step 4


def _args(data: Path, run: Path, *extra: str) -> list[str]:
    # one loader worker: Ctrl-C in a terminal reaches it too (the whole process group gets the signal)
    return tiny_run_args(data, run, "--workers", "1", "--set", "data.max_val_images=2", *extra, trainval=8,
                         steps=STEPS, batch=2)


@pytest.fixture(autouse=True)
def _sigint_not_ignored():
    """A test run started in the background by a script (``make test &``, some CI runners) inherits SIGINT
    ignored, and ``stop_on_signals`` keeps an ignored signal ignored, by design (``nohup``-like). These tests
    are about a terminal's Ctrl-C, so they restore Python's own SIGINT handler for their duration."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _sigint_default_in_child() -> None:
    """``preexec_fn`` of the training subprocess: SIGINT back to the default action, so that the child Python
    installs its KeyboardInterrupt handler (an ignored SIGINT would be inherited through exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_step(proc: subprocess.Popen, metrics: Path, step: int, timeout: float = 240.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        if metrics.is_file() and any(s >= step for s in csv_steps(metrics)):
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"the training subprocess did not log step {step} within {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130)])
def test_signal_checkpoints_and_resume_equals_an_uninterrupted_run(tmp_path, capsys, signum, code):
    """Defect: SIGINT at step 207/300 of the demo gave a KeyboardInterrupt traceback and no checkpoint, so
    ``--resume auto`` started from scratch."""
    data, straight, cut = tmp_path / "syn", tmp_path / "straight", tmp_path / "cut"
    assert train.main(_args(data, straight)) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "ssd_torch.cli.train", *_args(data, cut)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_sigint_default_in_child)
    _wait_for_step(proc, cut / "metrics.csv", 2)
    os.killpg(proc.pid, signum)  # like Ctrl-C in a terminal: the process group, loader worker included
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == code, out + err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert len(lines) == 1, err
    m = re.search(r"interrupted at step (\d+); resume with: (.*)$", lines[0])
    assert m, lines[0]
    step = int(m.group(1))
    assert 2 <= step < STEPS and "--resume auto" in m.group(2)
    assert read_checkpoint(cut / "checkpoints" / "last.pt")["step"] == step
    assert csv_steps(cut / "metrics.csv") == list(range(1, step + 1))
    # resume (the same command + --resume auto): identical weights, no duplicate log rows
    assert train.main(_args(data, cut, "--resume", "auto")) == 0
    assert f"resumed from {cut / 'checkpoints' / 'last.pt'} at step {step}" in capsys.readouterr().out
    a = read_checkpoint(straight / "checkpoints" / "last.pt")
    b = read_checkpoint(cut / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == STEPS
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert csv_steps(cut / "metrics.csv") == csv_steps(straight / "metrics.csv") == list(range(1, STEPS + 1))
    assert csv_steps(cut / "epochs.csv") == csv_steps(straight / "epochs.csv") == [4]


def test_first_signal_sets_the_flag_second_aborts_handlers_restored():
    from ssd_torch.training.interrupt import StopFlag, exit_code, stop_on_signals
    before = signal.getsignal(signal.SIGINT)
    flag = StopFlag()
    with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
        with stop_on_signals(flag, announce=False):
            os.kill(os.getpid(), signal.SIGTERM)
            assert flag.signum == signal.SIGTERM
            os.kill(os.getpid(), signal.SIGINT)
            pytest.fail("the second signal must abort at once")
    assert flag.signum == signal.SIGTERM  # the first signal decides the exit status
    assert signal.getsignal(signal.SIGINT) is before
    assert (exit_code(signal.SIGINT), exit_code(signal.SIGTERM)) == (130, 143)
