"""backend="auto" resolution: numba where its kernels run on the device and dtype, torch otherwise."""
import pytest
import torch

from ssd_torch import backend as bk


def test_explicit_backends_pass_through_and_unknown_names_fail() -> None:
    assert bk.resolve_backend("torch", torch.device("cpu")) == "torch"
    assert bk.resolve_backend("numba", torch.device("cpu")) == "numba"
    with pytest.raises(ValueError, match="unknown NMS backend 'cuda'"):
        bk.resolve_backend("cuda", torch.device("cpu"), what="NMS backend")


def test_auto_picks_numba_on_cpu_float32() -> None:
    # numba is a required dependency, so its CPU twins are usable everywhere and "auto" must pick them
    assert bk.numba_usable("cpu") is True
    assert bk.resolve_backend("auto", torch.device("cpu")) == "numba"
    assert bk.resolve_backend("auto", torch.device("cpu"), torch.float16) == "torch"  # the kernels are float32


def test_numba_usable_is_false_when_the_kernels_do_not_import(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_kernels(name, *args, **kwargs):
        if name == "kernels" or name.startswith("kernels."):
            raise ImportError("No module named 'numba'")
        return real_import(name, *args, **kwargs)

    bk.numba_usable.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_kernels)
    try:
        assert bk.numba_usable("cpu") is False
        assert bk.resolve_backend("auto", torch.device("cpu")) == "torch"
    finally:
        bk.numba_usable.cache_clear()  # the next caller sees the real answer again


def test_auto_falls_back_to_torch_for_float64_and_when_numba_is_unusable(monkeypatch) -> None:
    assert bk.resolve_backend("auto", torch.device("cpu"), torch.float64) == "torch"
    monkeypatch.setattr(bk, "numba_usable", lambda device_type: False)
    assert bk.resolve_backend("auto", torch.device("cpu")) == "torch"


def test_cuda_is_usable_only_with_a_device() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert bk.numba_usable("cuda") is False
