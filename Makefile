# Two commands for a new user: `make run` and `make test`. Everything else is set up on demand.
SHELL := /bin/bash
.DEFAULT_GOAL := help

DATASET ?= sample
WEIGHTS ?=
ARGS ?=
# uv on PATH, else the pip-installed module (wherever pip put its scripts).
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
VENV_STAMP := .venv/.synced


.PHONY: ensure-uv help setup test test-slow test-all lint run status clean bench xai browser \
	shortcut-compare

help:
	@echo "make run [DATASET=sample] [WEIGHTS=imagenet|random|auto|FILE] [ARGS='...']"
	@echo "make xai ARGS='...'   (the CLI: make xai ARGS=--help, make xai ARGS='weights status')"
	@echo "make test | make test-slow | make lint | make status | make clean | make bench"
	@echo "make shortcut-compare   (xai compare on a case with a known answer: docs/compare.md)"
	@echo "make browser   (Debian's headless Chromium for the report's browser tests; as root)"

# pip puts uv in ~/.local/bin, often not on PATH: every target runs it as `python3 -m uv`
# then, and the user is told how to call `uv` (or the CLI) directly.
ensure-uv:
	@$(UV) --version >/dev/null 2>&1 || { echo "uv not found: installing it with pip"; \
	  python3 -m pip install --user --quiet uv 2>/dev/null \
	  || python3 -m pip install --user --quiet --break-system-packages uv 2>/dev/null \
	  || python3 -m pip install --quiet uv; \
	  command -v uv >/dev/null 2>&1 || echo "uv is installed but not on your PATH; make \
	works without it. To type uv or xai yourself: export PATH=\"$$(python3 -m site \
	--user-base)/bin:$$PATH\" (uv), or source .venv/bin/activate (xai)."; }

$(VENV_STAMP): pyproject.toml uv.lock | ensure-uv
	$(UV) sync --frozen --compile-bytecode
	@touch $@

# EXTRAS=cuda adds dask-cuda (for --scheduler local-cuda).
setup: ensure-uv
	$(UV) sync --frozen --compile-bytecode $(if $(EXTRAS),--extra $(EXTRAS))
	@touch $(VENV_STAMP)

# Parallel test workers: one per core, at most 4 (each holds a torch of its own), one torch
# thread each (tests/conftest.py).
TEST_WORKERS ?= $(shell python3 -c "import os; print(min(4, max(1, len(os.sched_getaffinity(0)))))" 2>/dev/null || echo 2)

test: $(VENV_STAMP)
	$(UV) run --frozen pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile

test-slow: $(VENV_STAMP)
	$(UV) run --frozen pytest -m slow

test-all: $(VENV_STAMP)
	$(UV) run --frozen pytest

lint: $(VENV_STAMP)
	$(UV) run --frozen ruff check pipeline workflows benchmarks tests
	$(UV) run --frozen mypy
	$(UV) run --frozen lint-imports --no-cache

run: $(VENV_STAMP)
	$(UV) run --frozen xai run --dataset $(DATASET) $(if $(WEIGHTS),--weights $(WEIGHTS)) $(ARGS)

status: $(VENV_STAMP)
	$(UV) run --frozen xai status --dataset $(DATASET) $(ARGS)

clean: $(VENV_STAMP)
	$(UV) run --frozen xai clean --dataset $(DATASET) $(ARGS)

xai: $(VENV_STAMP)
	$(UV) run --frozen xai $(ARGS)

bench: $(VENV_STAMP)
	$(UV) run --frozen xai bench $(ARGS)

# The comparison's known answer (docs/compare.md): the shortcut model against the clean one,
# and the null comparisons. ARGS='--out DIR' (default runs/shortcut-compare).
shortcut-compare: $(VENV_STAMP)
	$(UV) run --frozen python -m workflows.commands.shortcut_case $(ARGS)

# The report's browser tests drive Debian's chromium through chromium-driver (Selenium); they
# skip without them. Browser builds from other sources are not used.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
	  echo "chromium and chromedriver are installed"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium chromium-driver >/dev/null && echo "installed chromium and chromium-driver"; \
	else \
	  echo "run as root, or: sudo apt-get install chromium chromium-driver"; exit 1; \
	fi
