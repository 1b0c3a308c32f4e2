# The two commands of the README: `make demo` and `make test`. Both do their
# (idempotent) set-up first: system packages where we may install them, the
# virtualenv in .venv/, and the pinned Python dependencies: `make demo` only
# what the app needs (requirements.txt, no torch), `make test` everything.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APP_STAMP := $(VENV)/.app-deps-installed
ALL_STAMP := $(VENV)/.all-deps-installed
HOST ?= 127.0.0.1
PORT ?= 7860

export GRADIO_ANALYTICS_ENABLED := False
export GRADIO_TEMP_DIR := $(CURDIR)/tmp/gradio
export MPLCONFIGDIR := $(CURDIR)/tmp/matplotlib

.PHONY: demo test setup app-setup system-deps lint bench clean

demo: app-setup
	$(PY) app.py --host $(HOST) --port $(PORT)

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest

app-setup: system-deps $(APP_STAMP)

setup: system-deps $(ALL_STAMP)

system-deps:
	@bash scripts/system-deps.sh

$(PY):
	$(PYTHON) -m venv $(VENV)

$(APP_STAMP): requirements.txt pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# torch is pinned to 2.13.0 in requirements-train.txt: this machine's pip finds a
# local CPU wheel for exactly that version; anything else pulls CUDA wheels.
$(ALL_STAMP): $(APP_STAMP) requirements-train.txt requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-train.txt \
		-r requirements-dev.txt
	touch $@

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) tmp .pytest_cache .ruff_cache
