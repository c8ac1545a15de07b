# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch, installed before the project so no dependency pulls another build.
TORCH := torch==2.13.0

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-torch: $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	touch $@

$(VENV)/.installed-train: $(VENV)/.installed-torch pyproject.toml
	$(BIN)/pip install --quiet -e '.[train,export,onnx]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-torch pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed-train
	$(BIN)/ponder demo --out ponder-demo

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q

bench: $(VENV)/.installed-dev
	$(BIN)/ponder bench exits --out ponder-bench

clean:
	rm -rf $(VENV) ponder-demo ponder-bench .pytest_cache .ruff_cache *.egg-info
