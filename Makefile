# The README's two commands. Both set themselves up on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# pytest-xdist workers: the suite takes ~6 min on 2 idle cores with 2 workers, ~10 min in one process
WORKERS ?= 2

.PHONY: setup lint test test-fast demo bench clean

# The venv is rebuilt only when the packaging metadata changes, so a second `make test` starts at once.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test,onnx,coco]'
	touch $(STAMP)

setup: $(STAMP)

# The layer contracts (setup.cfg [importlinter]) and ruff (pyproject.toml) run before the tests.
lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q -n $(WORKERS) tests

test-fast: lint
	$(PY) -m pytest -q -n $(WORKERS) -m "not slow" tests

demo: $(STAMP)
	$(PY) -m ssd_torch.demo

# Results go to runs/bench/ (ignored by git); `make bench RECORD=1` writes the committed benchmarks/results/.
bench: $(STAMP)
	$(PY) -m benchmarks.run_all $(if $(filter 1,$(RECORD)),--record)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
