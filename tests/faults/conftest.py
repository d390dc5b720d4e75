"""tests/faults: the faults a long run meets: poisoned models, resume and rotation, changed data, interrupts,
bad files, run folders, output paths and disk errors of every tool. The builders of the CLI and training tests
are shared (``cli_fixtures``, ``train_fixtures``)."""
import sys
from pathlib import Path

import pytest
import torch

_TESTS = Path(__file__).resolve().parent.parent
for _sub in ("cli", "train"):
    if str(_TESTS / _sub) not in sys.path:
        sys.path.insert(0, str(_TESTS / _sub))


@pytest.fixture(autouse=True)
def _two_threads():
    """Same thread count in every test (as tests/train): float sums must not depend on the test order."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)
