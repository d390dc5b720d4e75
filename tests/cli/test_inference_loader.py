"""ssd_torch.inference.load_model_for_inference: round trip and every documented failure, each naming the file."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cli_fixtures import save_checkpoint, tiny_checkpoint_dict
from ssd_torch.modeling.model_config import ModelConfig
from ssd_torch.errors import CheckpointError
from ssd_torch.modeling.predictor import load_predictor
from ssd_torch.modeling.model import model_from_config

NAMES = ["background", "cat", "dog"]


@pytest.fixture(scope="module")
def ckpt() -> dict:
    return tiny_checkpoint_dict(NAMES, seed=3)


def test_round_trip_gives_the_saved_network(tmp_path: Path, ckpt: dict) -> None:
    path = save_checkpoint(ckpt, tmp_path / "c.pt")
    _p = load_predictor(path)
    model, cfg, names = _p.model, _p.config, list(_p.categories)
    assert names == NAMES and cfg == ModelConfig.from_dict(ckpt["model_config"]) and not model.training
    reference = model_from_config(cfg)
    reference.load_state_dict(ckpt["model"])
    x = torch.randn(1, 3, 300, 300, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = model(x), reference.eval()(x)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def _expect(path: Path, *fragments: str) -> None:
    with pytest.raises(CheckpointError) as info:
        load_predictor(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_file(tmp_path: Path) -> None:
    _expect(tmp_path / "absent.pt", "file not found")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    _expect(tmp_path / "notes.txt", "not a PyTorch checkpoint")
    torch.save([1, 2], tmp_path / "list.pt")
    _expect(tmp_path / "list.pt", "expected a dict")


def test_wrong_format_tag(tmp_path: Path, ckpt: dict) -> None:
    _expect(save_checkpoint({**ckpt, "format": "other/2"}, tmp_path / "c.pt"), "format tag 'other/2'")


def test_missing_keys(tmp_path: Path, ckpt: dict) -> None:
    partial = {k: v for k, v in ckpt.items() if k != "class_names"}
    _expect(save_checkpoint(partial, tmp_path / "c.pt"), "missing keys ['class_names']")


def test_class_count_mismatch(tmp_path: Path, ckpt: dict) -> None:
    _expect(save_checkpoint({**ckpt, "class_names": NAMES + ["bird"]}, tmp_path / "c.pt"),
            "4 class names", "num_classes = 3")


def test_state_dict_of_another_class_count_names_the_heads(tmp_path: Path, ckpt: dict) -> None:
    other = tiny_checkpoint_dict(NAMES + ["bird"])
    _expect(save_checkpoint({**ckpt, "model": other["model"]}, tmp_path / "c.pt"),
            "does not match", "conf_heads.0.weight")


def test_state_dict_of_another_preset_names_missing_and_unexpected_keys(tmp_path: Path, ckpt: dict) -> None:
    no_bn = tiny_checkpoint_dict(NAMES, batch_norm=False)  # same widths, no BatchNorm layers
    _expect(save_checkpoint({**ckpt, "model": no_bn["model"]}, tmp_path / "c.pt"), "missing keys", "running_mean")
    state = dict(ckpt["model"])
    state["extra.weight"] = torch.zeros(1)
    _expect(save_checkpoint({**ckpt, "model": state}, tmp_path / "d.pt"), "unexpected keys: ['extra.weight']")
