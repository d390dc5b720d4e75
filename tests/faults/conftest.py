"""tests/faults: failure modes of a training run (poisoned models, resume and rotation, changed data,
interrupts, bad files). They reuse the tiny builders of ``tests/train/train_fixtures.py``."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))


@pytest.fixture(autouse=True)
def _two_threads():
    """Same thread count in every test: float sums must not depend on the test order."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)
