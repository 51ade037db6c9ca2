# Everyday commands. `make demo` and `make test` work on a fresh Debian machine with Python 3.11.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PROMETHEUS ?= $(shell command -v prometheus 2>/dev/null || echo /usr/bin/prometheus)
VICTORIA_METRICS ?= $(shell command -v victoria-metrics 2>/dev/null || echo /usr/bin/victoria-metrics)

.PHONY: help venv prometheus victoria-metrics browser demo run test lint bench bench-micro soak clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed  ## create the virtualenv with pinned dependencies

prometheus:  ## make sure a Prometheus server binary is installed (Debian package)
	@if [ -x "$(PROMETHEUS)" ]; then \
		echo "prometheus: $$($(PROMETHEUS) --version 2>&1 | head -n1)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; \
	else \
		echo "Prometheus is not installed. Install the Debian package: sudo apt-get install prometheus" >&2; \
		echo "(or put a prometheus binary on PATH, or set PROMETHEUS=/path/to/prometheus)" >&2; \
		exit 1; \
	fi

victoria-metrics:  ## make sure a VictoriaMetrics binary is installed (Debian package)
	@if [ -x "$(VICTORIA_METRICS)" ]; then \
		echo "victoria-metrics: $(VICTORIA_METRICS)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq victoria-metrics; \
	else \
		echo "VictoriaMetrics is not installed. Install the Debian package: sudo apt-get install victoria-metrics" >&2; \
		echo "(or set VICTORIA_METRICS_BINARY=/path/to/victoria-metrics)" >&2; \
		exit 1; \
	fi

browser:  ## make sure headless Chromium and its driver are installed (Debian packages)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "browser: $$(chromium --version 2>/dev/null | head -n1)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else \
		echo "Chromium is not installed. Install the Debian packages: sudo apt-get install chromium chromium-driver" >&2; \
		exit 1; \
	fi

demo: venv prometheus  ## run the API on a simulated GPU cluster scraped by a real Prometheus
	$(BIN)/python -m demo

run: venv  ## run the API under gunicorn against $$PROMETHEUS_URL
	$(BIN)/gunicorn --config gunicorn.conf.py wsgi:app

test: venv prometheus victoria-metrics browser  ## run every test, the real-Prometheus (and VictoriaMetrics) and browser ones included
	$(BIN)/pytest

lint: venv  ## static checks: ruff, and mypy over the files setup.cfg names
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: venv prometheus  ## cluster-scale benchmark (see bench/README.md)
	$(BIN)/python -m bench

soak: venv prometheus  ## many clients for a minute, with a Prometheus outage in the middle
	$(BIN)/python -m bench.soak --clients 48 --duration 60 --outage 25:10 --out bench/results/soak.json

bench-micro: venv  ## time parse, join, dump and serialize for 8,000 GPUs (pytest-benchmark)
	$(BIN)/pytest tests/benchmarks --benchmark-enable --benchmark-columns=min,median,max

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .benchmarks
