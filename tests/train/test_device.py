"""ssd_torch.device: the one device resolver (training and every tool)."""
from __future__ import annotations

import pytest
import torch

from ssd_torch.cli import resolve_device as cli_resolve_device
from ssd_torch.device import check_device_name, resolve_device
from ssd_torch.errors import ConfigError


def test_names():
    for name in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        check_device_name(name)
    for name in ("gpu", "cuda:", "cuda:x", "CPU", "", None, "mps"):
        with pytest.raises(ConfigError, match="auto, cpu, cuda or cuda:N"):
            check_device_name(name)


def test_cpu_and_auto():
    assert cli_resolve_device is resolve_device
    assert resolve_device("cpu") == torch.device("cpu")
    want = torch.device("cuda", 1) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto", local_rank=1 if torch.cuda.device_count() > 1 else 0).type == want.type


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_missing_cuda_is_one_line():
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match="CUDA is not available.*--device cpu") as err:
            resolve_device(name)
        assert "\n" not in str(err.value)
