# Two commands do everything on a fresh machine (see README):
#   make pipeline   set up what is missing, then run notebooks 01-05 into runs/<timestamp>/
#   make test       set up what is missing, check the layer contract (lint-imports), run the test suite
# Extra arguments: make pipeline ARGS="--quick"  |  make test PYTEST_ARGS="-k gradcam"

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.catdog-installed

.PHONY: setup pipeline test demo lab

# The shipped model's float32 TensorFlow Lite file (git-ignored): `catdog predict` runs it when it is current,
# with the same numbers as the Keras graph at about twice the speed; remade when the model or packages change.
EXPORT := models/catdog.float32.tflite

setup: $(STAMP) $(EXPORT)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -c "from catdog.pipeline import ensure_kernel; ensure_kernel()"
	touch $@

$(EXPORT): $(STAMP) models/catdog.keras models/catdog.openset.npz
	$(VENV)/bin/catdog export --variants float32

pipeline: setup
	$(VENV)/bin/catdog pipeline $(ARGS)

# --no-cache: the check takes about a second and leaves no .import_linter_cache/ behind
test: setup
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest $(PYTEST_ARGS)

# a local web page to try your own photos: http://127.0.0.1:7860 (ARGS="--port 8000 --model m.keras")
demo: setup
	$(VENV)/bin/catdog demo $(ARGS)

# Jupyter Lab on the notebooks, with this checkout's own kernel (never another checkout's "catdog" kernel)
lab: setup
	JUPYTER_PATH="$(CURDIR)/$(VENV)/share/jupyter" $(VENV)/bin/jupyter lab notebooks/
