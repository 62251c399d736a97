# make run   set up, then serve the standalone host on embedded defaults at http://127.0.0.1:$(PORT)
# make test  set up, then run every check: lint and the whole test suite
# make bench the benchmark suite (BENCHMARKS.md);  make chaos  the large chaos run

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 7071

.PHONY: setup worker-env run test lint bench chaos clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-standalone.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# The Python 3.13 venv the tests run the Functions app's real worker in (cached in .cache/; see README).
worker-env: setup
	$(PY) -m testing.functions_worker

run: setup
	PORT=$(PORT) $(PY) -m travelplanner

lint: setup
	$(PY) -m ruff check .

test: lint worker-env
	$(PY) -m pytest

bench: setup
	$(PY) -m bench

chaos: setup
	$(PY) -m chaos --sessions 5000

clean:
	rm -rf $(VENV) .data .pytest_cache .ruff_cache .cache
