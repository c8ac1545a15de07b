# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# pip installs requirements/bootstrap.txt first (the CPU build of torch, so no dependency pulls
# another build, and uv); uv then installs ponder and its extras at the versions in
# requirements/lock.txt. `make lock` refreshes the lock on purpose (keeping the pins that still
# fit; `make lock LOCK_FLAGS=--upgrade` moves every package to its newest release).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BOOTSTRAP := requirements/bootstrap.txt
# Extra pip options for the bootstrap, e.g. where PyPI's torch is a CUDA build:
#   make test BOOTSTRAP_FLAGS='--extra-index-url https://download.pytorch.org/whl/cpu'
BOOTSTRAP_FLAGS ?=
LOCK := requirements/lock.txt
INSTALL := $(BIN)/uv pip install --quiet --python $(BIN)/python --constraint $(LOCK)
# The lock covers every extra on every Python ponder supports; torch is pinned by bootstrap.txt.
COMPILE := $(BIN)/uv pip compile pyproject.toml --all-extras --universal --python-version 3.10 \
	--constraint $(BOOTSTRAP) --quiet $(LOCK_FLAGS)

.PHONY: demo test bench lint lock check-lock java-deps clean

$(VENV)/.installed-bootstrap: $(BOOTSTRAP)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(BOOTSTRAP_FLAGS) -r $(BOOTSTRAP)
	touch $@

$(VENV)/.installed-train: $(VENV)/.installed-bootstrap pyproject.toml $(LOCK)
	$(INSTALL) -e '.[train,export,onnx,serve]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-bootstrap pyproject.toml $(LOCK)
	$(INSTALL) -e '.[dev]'
	touch $@

demo: $(VENV)/.installed-train
	$(BIN)/ponder demo --out ponder-demo

check-lock: $(VENV)/.installed-dev
	$(BIN)/python requirements/check_lock.py pyproject.toml $(LOCK) $(BOOTSTRAP)

# the Android demo's JVM core is built and tested by pytest (tests/android): Debian's JDK and JUnit 5
java-deps:
	android_demo/core/deps.sh

test: check-lock java-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q

bench: $(VENV)/.installed-dev
	$(BIN)/ponder bench exits --out ponder-bench

lock: $(VENV)/.installed-bootstrap
	$(COMPILE) --output-file $(LOCK)

clean:
	rm -rf $(VENV) ponder-demo ponder-bench .pytest_cache .ruff_cache *.egg-info android_demo/core/build
