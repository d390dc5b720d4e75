"""tests/train: every test runs with 2 torch threads (float sums must not depend on the test order)."""
import pytest

from train_fixtures import two_threads

_two_threads = pytest.fixture(autouse=True)(two_threads)
