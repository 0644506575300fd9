# Two commands do everything on a fresh machine (see README):
#   make pipeline   set up what is missing, then run notebooks 01-05 into reports/runs/<timestamp>/
#   make test       set up what is missing, check the layer contract (lint-imports), run the test suite
# Extra arguments: make pipeline ARGS="--quick"  |  make test PYTEST_ARGS="-k gradcam"

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.catdog-installed

.PHONY: setup pipeline test

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --user --name catdog --display-name "Python (catdog)"
	touch $@

pipeline: setup
	$(VENV)/bin/catdog pipeline $(ARGS)

# --no-cache: the check takes about a second and leaves no .import_linter_cache/ behind
test: setup
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest $(PYTEST_ARGS)
