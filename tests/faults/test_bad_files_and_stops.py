"""Issue #19 s6: refusals of files that are not our checkpoints say what to do in one line of our own; a stop
signal during the final evaluation stops it (and --resume auto evaluates again)."""
from __future__ import annotations

import signal

import numpy as np
import pytest
import torch

from ssd_torch.checkpoint import read_checkpoint
from ssd_torch.errors import CheckpointError
from ssd_torch.training.checkpoint import CheckpointManager
from ssd_torch.training.interrupt import StopFlag
from train_fixtures import ToyDetection, make_trainer, tiny_config


def test_a_legacy_format_pickle_is_refused_with_the_trust_flag_named(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"format": "ssd300-checkpoint/1", "a": np.zeros(3)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    text = str(err.value)
    assert "legacy" in text and "--trust-checkpoint" in text and "not a PyTorch checkpoint" not in text


def test_a_jpeg_is_not_a_checkpoint_in_our_words(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    text = str(err.value)
    assert "not a PyTorch checkpoint" in text and "\n" not in text
    assert "weights_only" not in text and "will likely succeed" not in text


@pytest.mark.slow
def test_a_signal_during_the_final_evaluation_stops_it(tmp_path):
    """Defect: Ctrl-C during the final evaluation printed "stopping..." but the evaluation ran to its end and
    the run exited 0."""
    from ssd_torch.training.hooks import StopAwareData
    stop = StopFlag()
    held_out = StopAwareData(ToyDetection(2), stop)

    def eval_fn(model):
        stop.request(signal.SIGINT)  # the signal arrives while the evaluation reads its images
        held_out[0]
        return {"mAP": 0.5}

    mgr = CheckpointManager(tmp_path)
    t = make_trainer(tiny_config(), ToyDetection(4), batch=2, total_steps=2, checkpoints=mgr, eval_fn=eval_fn,
                     eval_data=held_out, stop=stop)
    # the stop flag is only looked at between steps: request it during the evaluation only
    summary = t.fit()
    assert summary["stopped_by"] == signal.SIGINT and not held_out.armed
    ckpt = read_checkpoint(tmp_path / "last.pt")
    assert ckpt["step"] == 2 and ckpt["metrics"].get("step") != 2  # written, without the final mAP
    assert not (tmp_path / "best.pt").exists()
    again = make_trainer(tiny_config(), ToyDetection(4), batch=2, total_steps=2, eval_fn=lambda m: {"mAP": 0.5})
    again.load_state(ckpt)
    assert not again.finished()  # --resume auto evaluates it
