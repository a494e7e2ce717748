# The two commands: `make demo` (the main job) and `make test` (the whole suite, lint and types included).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SRC := monitor integrations
LINT := monitor integrations tests benchmarks dashboards

.PHONY: install demo test lint typecheck unit dashboards clean

install: $(VENV)/.installed

# torch==2.13.0 first: it is the CPU wheel this machine serves from disk; pyproject states the real range (torch>=2.1).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test]"
	touch $@

demo: install
	$(VENV)/bin/mfu demo

lint: install
	$(VENV)/bin/ruff check $(LINT)
	$(VENV)/bin/ruff format --check $(LINT)

typecheck: install
	$(VENV)/bin/mypy $(SRC)

unit: install
	$(VENV)/bin/mfu validate
	$(PY) -m pytest -q

test: lint typecheck unit

# Regenerate dashboards/grafana/*.json from dashboards/build.py (a test checks they are in sync).
dashboards: install
	$(PY) dashboards/build.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
