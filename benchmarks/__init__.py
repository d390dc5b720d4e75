"""Timing harnesses (never assertions about speed): run e.g. `python -m benchmarks.bench_torch`."""
