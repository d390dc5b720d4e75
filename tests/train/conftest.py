"""tests/train: every test runs with 2 torch threads (float sums must not depend on the test order)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _two_threads():
    """Same thread count in every test: float sums must not depend on the test order."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)
