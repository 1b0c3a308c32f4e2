# The two commands of the README: `make demo` and `make test`. Both do the whole
# (idempotent) set-up first: system packages where we may install them, the
# virtualenv in .venv/, and the pinned Python dependencies.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-installed
HOST ?= 127.0.0.1
PORT ?= 7860

export GRADIO_ANALYTICS_ENABLED := False
export GRADIO_TEMP_DIR := $(CURDIR)/tmp/gradio
export MPLCONFIGDIR := $(CURDIR)/tmp/matplotlib

.PHONY: demo test setup system-deps lint bench clean

demo: setup
	$(PY) app.py --host $(HOST) --port $(PORT)

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest

setup: system-deps $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is pinned to 2.13.0 in requirements.txt: this machine's pip finds a
# local CPU wheel for exactly that version; anything else pulls CUDA wheels.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) tmp .pytest_cache .ruff_cache
