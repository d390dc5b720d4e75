"""Loading a checkpoint never runs code (issue: a ``.pt`` whose pickle carries ``os.system`` ran it).

Every tool that reads a checkpoint gets a file whose pickle would create a marker file when unpickled with
``weights_only=False``. The tool must refuse it in one line that names the offending type and says that nothing
from the file ran, exit 2, and the marker must not exist. ``--trust-checkpoint`` is the explicit way back to the
unsafe path for old files.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cli_fixtures import tiny_checkpoint_dict


class _Payload:
    """Unpickling this calls ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A valid-looking checkpoint with one booby-trapped entry; returns (file, marker the payload would write)."""
    marker = tmp_path / "pwned"
    ckpt = tiny_checkpoint_dict(["background", "circle", "square"])
    ckpt["metrics"] = {"mAP": _Payload(f"touch {marker}")}
    path = tmp_path / "evil.pt"
    torch.save(ckpt, path)
    return path, marker


def _check_refused(capsys, marker: Path, code: int) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    assert not marker.exists(), "unpickling ran the payload"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "evil.pt" in lines[0] and "system" in lines[0] and "nothing" in lines[0] and "--trust-checkpoint" in lines[0]


def test_read_checkpoint_refuses_code(tmp_path):
    from ssd_torch.errors import CheckpointError
    from ssd_torch.checkpoint import read_checkpoint

    path, marker = _evil_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=r"system.*nothing") as info:
        read_checkpoint(path)
    assert not marker.exists()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("tool", ["detect", "eval", "export", "crosscheck"])
def test_tools_refuse_code(tool, tmp_path, capsys):
    from ssd_torch.data.synthetic import generate_voc

    path, marker = _evil_checkpoint(tmp_path)
    root = generate_voc(tmp_path / "VOC", 4, 2, seed=0)
    argv = {"detect": [str(path), str(root / "JPEGImages"), "--out", str(tmp_path / "drawn")],
            "eval": [str(path), "--data", str(root), "--split", "test", "--out", str(tmp_path / "ev"),
                     "--no-progress"],
            "export": [str(path), "--onnx", str(tmp_path / "m.onnx")],
            "crosscheck": ["--data", str(root), "--checkpoint", str(path), "--batches", "1", "--batch-size", "2"]}
    module = __import__(f"ssd_torch.cli.{tool}", fromlist=["main"])
    _check_refused(capsys, marker, module.main(argv[tool]))


def test_train_resume_refuses_code(tmp_path, capsys):
    from ssd_torch.cli.train import main

    path, marker = _evil_checkpoint(tmp_path)
    code = main(["--preset", "demo", "--data-root", str(tmp_path / "synthetic"), "--set", 'data.dataset="synthetic"',
                 "--output-dir",
                 str(tmp_path / "run"), "--resume", str(path), "--max-steps", "1", "--no-progress",
                 "--set", "data.synthetic_trainval=8", "--set", "data.synthetic_test=4",
                 "--set", "optim.batch_size=4", "--set", "data.num_workers=0"])
    _check_refused(capsys, marker, code)


def test_trust_flag_opens_the_unsafe_path(tmp_path):
    """An old checkpoint (NumPy arrays in its RNG state) loads only when trusted."""
    import numpy as np

    from ssd_torch.errors import CheckpointError
    from ssd_torch.checkpoint import read_checkpoint

    ckpt = tiny_checkpoint_dict(["background", "circle"])
    ckpt["rng"] = {"numpy": np.random.get_state()}
    path = tmp_path / "old.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="numpy"):
        read_checkpoint(path)
    assert read_checkpoint(path, trust=True)["class_names"] == ["background", "circle"]
