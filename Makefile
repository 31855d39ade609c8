# `make demo`: create .venv if absent, install bids_mdd, run the demo end to end.
# `make test`: the test suite (installs first when needed); `make test-fast`: its unit tests.
# `make docs`: the documentation site in docs/_build/html, warnings as errors (offline).
# `make lint`: ruff (lint and import order, configured in pyproject.toml).
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
SHARED_TEMPLATEFLOW = $(abspath ../shared/templateflow)
# Offline templates: use ../shared/templateflow when present, else the caller's TEMPLATEFLOW_HOME.
ifneq ($(wildcard $(SHARED_TEMPLATEFLOW)),)
export TEMPLATEFLOW_HOME ?= $(SHARED_TEMPLATEFLOW)
endif
export TEMPLATEFLOW_AUTOUPDATE = 0

.PHONY: install demo test test-fast docs lint clean-demo

# torch==2.13.0 first, from the local CPU wheel: with it installed, pyproject's torch range is
# met and pip never resolves a multi-GB CUDA build for bids_mdd or what depends on torch (monai).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,docs]'
	touch $@

install: $(VENV)/.installed

demo: install
	test -d demo/bids || $(VENV)/bin/bids_mdd-synth demo/bids --n-mdd 2 --n-hc 2 --seed 1
	$(VENV)/bin/bids_mdd demo/bids demo/derivatives participant -w demo/work --models demo
	$(VENV)/bin/bids_mdd demo/bids demo/derivatives group -w demo/work
	@echo "demo outputs (from SYNTHETIC data) are in demo/derivatives"

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m unit

lint: install
	$(VENV)/bin/ruff check .

docs: install
	$(PY) -m sphinx -E -W --keep-going -q -b html docs docs/_build/html

clean-demo:
	rm -rf demo
