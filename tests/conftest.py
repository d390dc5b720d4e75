"""Shared test settings: hypothesis profiles sized for a 2-core CI machine, and numba's disk cache in a tmp dir."""
import os
import tempfile

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# The CPU twins' compiled code (kernels/_cache.py) goes to the system tmp dir rather than kernels/__pycache__, so
# that tests write nothing into the tree; the folder outlives the run, so the next run and the test subprocesses
# skip the compile. Set before anything imports numba, which reads it once.
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"ssd300-numba-cache-{os.getuid()}"))
