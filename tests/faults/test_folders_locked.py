"""One run per output folder (issue #19 s2): ``ssd-train --output-dir``, ``ssd-detect --out`` and ``ssd-eval
--out`` lock their folder (``ssd_torch.files.lock_folder``, an OS ``flock``) for the life of the run; a second
run is refused in one line naming the PID that holds the folder, and a dead holder holds nothing.

Reproduced defect: two ssd-train processes started at once into the same --output-dir both ran and both
printed success (metrics.csv had every step twice; best.pt did not hold the best eval.csv row).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_fixtures import write_tiny_checkpoint
from ssd_torch.cli import detect, train
from ssd_torch.cli import eval as eval_cli
from ssd_torch.data.synthetic import SYNTHETIC_CLASSES, generate_voc
from ssd_torch.errors import UserError
from ssd_torch.files import LOCK_NAME, lock_folder
from train_fixtures import csv_steps, one_line, tiny_run_args

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["background", *SYNTHETIC_CLASSES]
_HOLDER = ("import sys, time\nfrom ssd_torch.files import lock_folder\n"
           "lock = lock_folder(sys.argv[1], 'holder-tool', '--out')\nprint('locked', flush=True)\ntime.sleep(120)\n")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture
def holder(tmp_path: Path):
    """Another process holding ``tmp_path / "held"``: ``(folder, process)``."""
    folder = tmp_path / "held"
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdout=subprocess.PIPE, env=_env())
    try:
        assert proc.stdout.readline() == b"locked\n"
        yield folder, proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_lock_is_exclusive_and_leaves_nothing_behind(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "out"
    with lock_folder(folder, "ssd-detect", "--out"):
        assert (folder / LOCK_NAME).read_text().split() == [str(os.getpid()), "ssd-detect"]
        with pytest.raises(UserError, match=f"in use by ssd-detect \\(PID {os.getpid()}\\).*another --out"):
            lock_folder(folder, "ssd-eval", "--out")  # flock: a second open file is refused, same process or not
    assert not folder.exists()  # created by the lock and left empty: removed with it
    folder.mkdir(parents=True)
    (folder / "kept.txt").write_text("x")
    lock_folder(folder, "ssd-eval", "--out").release()
    assert sorted(p.name for p in folder.iterdir()) == ["kept.txt"]


def test_ssd_train_refuses_a_folder_another_run_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, run = tmp_path / "syn", tmp_path / "run"
    with lock_folder(run, "ssd-train", "--output-dir"):
        assert train.main(tiny_run_args(data, run)) == 2
    line = one_line(capsys.readouterr().err)
    assert f"PID {os.getpid()}" in line and str(run) in line and "--output-dir" in line
    assert not data.exists() and not run.exists()  # refused before the data was generated; nothing written


def test_detect_and_eval_refuse_a_folder_another_process_holds(holder, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    folder, proc = holder
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt", NAMES)
    tree = generate_voc(tmp_path / "VOC2007", 2, 2, seed=3, image_size=(96, 80))
    image = next((tree / "JPEGImages").iterdir())
    argv = [str(checkpoint), str(image), "--out", str(folder), "--device", "cpu"]
    assert detect.main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert f"PID {proc.pid}" in line and "holder-tool" in line and str(folder) in line
    assert eval_cli.main([str(checkpoint), "--data", str(tree), "--device", "cpu", "--out", str(folder),
                          "--no-progress"]) == 2
    assert f"PID {proc.pid}" in one_line(capsys.readouterr().err)
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # neither wrote anything
    proc.kill()
    proc.wait()  # a killed holder holds nothing: the OS dropped its lock (its lock file stays behind)
    with lock_folder(folder, "ssd-detect", "--out"):
        assert (folder / LOCK_NAME).read_text().split() == [str(os.getpid()), "ssd-detect"]
    assert not (folder / LOCK_NAME).exists()


@pytest.mark.slow
def test_two_ssd_train_processes_started_at_once(tmp_path: Path) -> None:
    """The reproduction: both start together; one trains, the other is refused naming the first's PID."""
    data, run = tmp_path / "syn", tmp_path / "run"
    assert train.main(tiny_run_args(data, tmp_path / "warm")) == 0  # the data exists before the two start
    argv = [sys.executable, "-m", "ssd_torch.cli.train", *tiny_run_args(data, run)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), cwd=tmp_path,
                              text=True) for _ in range(2)]
    results = sorted((p.wait(timeout=300), p.pid, p.communicate()) for p in procs)
    (ok, _, (out, _)), (refused, _, (_, err)) = results
    assert (ok, refused) == (0, 2), results
    assert "done:" in out and "PID" in one_line(err) and "done:" not in results[1][2][0]
    winner = results[0][1]
    assert f"PID {winner}" in err
    assert csv_steps(run / "metrics.csv") == [1] and csv_steps(run / "eval.csv") == [1]
