# Two commands do all set-up on a fresh machine:
#   make demo   create the venv, build the base model and the default classifier if missing,
#               then batch-score examples/ (and ../shared/seeds when present)
#   make test   the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Everything built lives in the checkout (artifacts/, git-ignored), so a clone is self-contained.
export EXPORTSTANCE_HOME ?= $(CURDIR)/artifacts
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test install base-model model evaluate bench bench-ray clean

install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# Pin torch first: 2.13.0 is a CPU build from local disk; an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	# The ray extra too: the test suite runs the Ray engine's tests (the core install stays without it).
	$(BIN)/pip install -q -e '.[dev,ray]'
	touch $@

base-model: install
	$(BIN)/exportstance base-model

model: base-model
	$(BIN)/exportstance train --if-missing

demo: model
	$(BIN)/exportstance demo

evaluate: model
	$(BIN)/exportstance evaluate

bench: model
	$(BIN)/python bench/bench_serve.py

bench-ray: model
	$(BIN)/python bench/bench_ray.py

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) artifacts out
