# Two entry points for a fresh machine: `make run` and `make test`. Both build .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONF ?= conf/default.yaml
ARGS ?=
# Byte-compiled at install: Ray's workers and the tests import torch and Ray in many processes, and an
# environment with PYTHONDONTWRITEBYTECODE set would otherwise compile them again in each one.
UV = UV_LINK_MODE=copy $(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python

.PHONY: run test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# uv installs the same packages as pip in a fraction of the time (parallel downloads, no per-file work in Python).
$(BIN)/uv: | $(BIN)/python
	$(BIN)/pip install -q uv

# The CPU build of torch goes in first, pinned: an unpinned torch pulls a multi-GB CUDA build. pip finds the wheel
# (it reads this machine's pip config: indexes, wheel folders); uv installs it.
$(VENV)/.torch: | $(BIN)/uv
	$(BIN)/pip download -q --no-deps torch==2.13.0 -d $(VENV)/wheels
	$(UV) $(VENV)/wheels/torch-2.13.0*.whl
	rm -rf $(VENV)/wheels
	touch $@

$(VENV)/.run: pyproject.toml $(VENV)/.torch | $(BIN)/uv
	$(UV) -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.run | $(BIN)/uv
	$(UV) -e '.[dev]'
	touch $@

run: $(VENV)/.run
	$(BIN)/fedray run $(CONF) $(ARGS)

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup tests

bench: $(VENV)/.dev
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
