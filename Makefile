# Two commands do all set-up on a fresh machine:
#   make demo   create the venv, build the base model and the default classifier if missing,
#               then batch-score examples/ (and ../shared/seeds when present)
#   make test   the test suite (installs Debian's headless Chromium for the report's browser tests if missing)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Everything built lives in the checkout (artifacts/, git-ignored), so a clone is self-contained.
export EXPORTSTANCE_HOME ?= $(CURDIR)/artifacts
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test install browser base-model model evaluate bench bench-report bench-ray screenshot clean

# Headless Chromium + chromedriver from Debian for tests/test_report_browser.py (never a browser download).
CHROMIUM     ?= /usr/bin/chromium
CHROMEDRIVER ?= /usr/bin/chromedriver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)

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
	$(BIN)/python bench/bench_segment.py
	$(BIN)/python bench/bench_chunking.py

bench-ray: model
	$(BIN)/python bench/bench_ray.py

browser:
	@if [ -x $(CHROMIUM) ] && [ -x $(CHROMEDRIVER) ]; then :; \
	elif command -v apt-get >/dev/null; then \
		echo "installing chromium + chromium-driver (Debian) for the browser tests"; \
		$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium chromium-driver; \
	else echo "no $(CHROMIUM) / $(CHROMEDRIVER) and no apt-get: the browser tests will fail; install Chromium + chromedriver"; fi

# The browser tests fail (not skip) here when the browser is missing.
test: install browser
	EXPORTSTANCE_BROWSER_TESTS=require $(BIN)/python -m pytest

# Size and time to first render of a 10,000-article report in headless Chromium (README "Report").
bench-report: install browser
	$(BIN)/python bench/bench_report.py --records out/demo_examples.jsonl --articles 10000

# README screenshot: the report of our own examples/ only (never the seed articles), default model.
screenshot: demo browser
	$(BIN)/python bench/bench_report.py --records out/demo_examples.jsonl --screenshot docs/report.png

clean:
	rm -rf $(VENV) artifacts out
