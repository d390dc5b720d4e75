"""The Python API's errors speak Python: ``ImageDetections.select`` with an unknown class, a device the machine
lacks, and a tensor dtype that needs a cast (each reproduced: ``ValueError: tuple.index(x)``, ``--device cuda``,
``.astype(np.uint8)`` for a tensor)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cli_fixtures import save_checkpoint, tiny_checkpoint_dict
from ssd_torch.errors import ConfigError

NAMES = ["background", "a", "b", "c"]


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory):
    from ssd_torch import Detector

    path = save_checkpoint(tiny_checkpoint_dict(NAMES, seed=3), tmp_path_factory.mktemp("ckpt") / "d.pt")
    return Detector.from_checkpoint(path, device="cpu")


def test_select_an_unknown_class_is_a_config_error_naming_it(detector) -> None:
    result = detector(np.full((48, 64, 3), 127, dtype=np.uint8))
    with pytest.raises(ConfigError, match="unknown class 'nope'; this checkpoint's classes are: a, b, c"):
        result.select(classes=["nope"])
    assert len(result.select(classes=["a", "b", "c"])) == len(result)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_gpu_is_named_as_the_keyword(tmp_path: Path) -> None:
    from ssd_torch import Detector

    path = save_checkpoint(tiny_checkpoint_dict(NAMES, seed=3), tmp_path / "d.pt")
    with pytest.raises(ConfigError) as info:
        Detector.from_checkpoint(path, device="cuda")
    message = str(info.value)
    assert message.startswith("device='cuda': CUDA is not available") and "device='cpu'" in message
    assert "--device" not in message


def test_an_integer_tensor_suggests_a_tensor_cast(detector) -> None:
    with pytest.raises(ValueError, match=r"dtype int64 .* t\.to\(torch\.uint8\)") as info:
        detector(torch.zeros((3, 32, 32), dtype=torch.int64))
    assert "astype" not in str(info.value)
    with pytest.raises(ValueError, match=r"a\.astype\(np\.uint8\)"):
        detector(np.zeros((32, 32, 3), dtype=np.int64))
