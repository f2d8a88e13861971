# ReviewOps: `make demo` and `make test` each do all their set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Airflow lives in the project (git-ignored): SQLite, these DAGs, no examples
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER ?= $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False
export PYTHONUNBUFFERED := 1
# make demo DEMO_PROFILE=tiny: 96 photos and the tiny training profile, in $TMPDIR/reviewops-demo-tiny (DEMO_DIR)
DEMO_PROFILE ?= demo
DEMO_DIR ?=
DEMO_PORT ?=
# dvc.yaml's stage commands call `reviewops`: the venv's executables come first
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install browser photos services test test-scaleout demo repro clean airflow-init airflow-ui

install: $(STAMP)

# Re-runs only when the dependency set changes; a warm `make install` is a no-op. --compile-bytecode stays: where
# PYTHONDONTWRITEBYTECODE=1 is set (as on these machines) Python caches nothing it compiles: without the .pyc every
# process recompiles what it imports (airflow, torch, bentoml, pandas: 26 s against 15 s), and make test had run 10
# tests after 20 minutes (benchmarks/results/ci_runs.json)
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/pip install --quiet uv==0.13.9
	@echo ">> installing the pinned set into $(VENV) (first time: several minutes, ~5 GB with torch)"
	@start=$$(date +%s); \
	$(BIN)/uv pip install --compile-bytecode --python $(BIN)/python --constraints constraints.txt -e '.[dev,scale]' && \
	echo ">> install took $$(( $$(date +%s) - start )) s"
	@touch $(STAMP)

# Debian's chromium, which the report tests open the HTML reports in: installed with apt-get when missing
# (as root, or with passwordless sudo). Without it those tests skip, except under CI=true (set by .ci/run):
# there a browser that cannot be installed fails this target, and the tests fail rather than skip.
browser:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then exit 0; fi; \
	sudo=; [ "$$(id -u)" = 0 ] || { sudo -n true 2>/dev/null && sudo="sudo -n"; }; \
	if ! command -v apt-get >/dev/null; then why="no apt-get: install chromium yourself"; \
	elif [ "$$(id -u)" != 0 ] && [ -z "$$sudo" ]; then why="not root: apt-get install chromium"; \
	else echo ">> installing Debian's chromium (headless report tests)"; \
	  { $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; \
	  if command -v chromium >/dev/null; then exit 0; fi; why="apt-get could not install chromium"; fi; \
	if [ "$${CI:-}" = true ]; then echo ">> error: $$why (CI=true: the browser tests must run)"; exit 1; fi; \
	echo ">> warning: $$why, or the browser tests skip"

# Debian's mate-backgrounds and plasma-workspace-wallpapers: real camera photos (shared/DATA.md) that the blur and
# manipulation families learn from and the real-photo checks use (params.yaml real_photos): installed with apt-get
# when missing (as root, or with passwordless sudo); a failure fails this target.
photos:
	@missing=; for p in /usr/share/backgrounds/mate/nature:mate-backgrounds /usr/share/wallpapers/Path:plasma-workspace-wallpapers; do \
	  test -d $${p%%:*} || missing="$$missing $${p##*:}"; done; \
	[ -z "$$missing" ] && exit 0; \
	sudo=; [ "$$(id -u)" = 0 ] || { sudo -n true 2>/dev/null && sudo="sudo -n"; } || { echo ">> error: not root: apt-get install$$missing"; exit 1; }; \
	echo ">> installing Debian's$$missing (real photos: training material and checks)"; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null

# Debian's PostgreSQL 15, Redis 7 and haproxy, which the scale-out tests start on loopback themselves (tests/scaleout):
# installed with apt-get when missing (as root, or with passwordless sudo); a failure fails this target.
services:
	@missing=; for p in /usr/lib/postgresql/15/bin/initdb:postgresql redis-server:redis-server haproxy:haproxy; do \
	  exe=$${p%%:*}; command -v $$exe >/dev/null || test -x $$exe || missing="$$missing $${p##*:}"; done; \
	[ -z "$$missing" ] && exit 0; \
	sudo=; [ "$$(id -u)" = 0 ] || { sudo -n true 2>/dev/null && sudo="sudo -n"; } || { echo ">> error: not root: apt-get install$$missing"; exit 1; }; \
	echo ">> installing Debian's$$missing (scale-out tests)"; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null

test: install browser photos
	$(BIN)/pytest -q --ignore=tests/scaleout --durations=25

# More than one machine, really run (docs/scale_out.md): Airflow on CeleryExecutor with PostgreSQL and Redis, the
# prediction log on PostgreSQL from two replicas, replicas behind haproxy, DVC's S3 remote. .ci/run runs it after `make test`.
test-scaleout: install services photos
	$(BIN)/pytest -q tests/scaleout --durations=10

# Ingest, retrain and deploy through Airflow, live traffic, drift and false-positive reports (pipelines/app/demo.py).
demo: install photos
	$(BIN)/python -m pipelines.app.demo --profile $(DEMO_PROFILE) $(if $(DEMO_DIR),--workdir $(DEMO_DIR)) $(if $(DEMO_PORT),--port $(DEMO_PORT))

# Airflow's metadata database (SQLite in $(AIRFLOW_HOME)); `make demo` migrates its own as well.
airflow-init: install
	$(BIN)/airflow db migrate

# The Airflow UI, scheduler, dag-processor and triggerer on this machine: http://localhost:8080
airflow-ui: airflow-init
	REVIEWOPS_ROOT=$(CURDIR) $(BIN)/airflow standalone

# Train and evaluate every model family from the versioned data; unchanged families are skipped.
repro: install photos
	$(BIN)/dvc repro

clean:
	rm -rf $(VENV) .airflow .pytest_cache
