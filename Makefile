# ReviewOps: `make demo` and `make test` each do all their set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export PYTHONUNBUFFERED := 1
# dvc.yaml's stage commands call `reviewops`: the venv's executables come first
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install test test-fast demo repro clean

install: $(STAMP)

# Re-runs only when the dependency set changes; a warm `make install` is a no-op.
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/pip install --quiet uv==0.13.9
	@echo ">> installing the pinned set into $(VENV) (first time: several minutes, ~5 GB with torch)"
	@start=$$(date +%s); \
	$(BIN)/uv pip install --compile-bytecode --python $(BIN)/python --constraints constraints.txt -e '.[dev]' && \
	echo ">> install took $$(( $$(date +%s) - start )) s"
	@touch $(STAMP)

test: install
	$(BIN)/pytest -q

demo: install
	$(BIN)/reviewops demo

# Train and evaluate every model family from the versioned data; unchanged families are skipped.
repro: install
	$(BIN)/dvc repro

clean:
	rm -rf $(VENV) .airflow .pytest_cache
