"""tests/faults: the faults a long run meets: poisoned models, resume and rotation, changed data, interrupts,
bad files, run folders, output paths and disk errors of every tool. The builders of the CLI and training tests
are shared (``cli_fixtures``, ``train_fixtures``)."""
import sys
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent.parent
for _sub in ("cli", "train"):
    if str(_TESTS / _sub) not in sys.path:
        sys.path.insert(0, str(_TESTS / _sub))

from train_fixtures import two_threads  # noqa: E402

_two_threads = pytest.fixture(autouse=True)(two_threads)  # the same 2 torch threads as tests/train
