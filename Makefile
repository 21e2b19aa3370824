# Two commands on a fresh machine with nothing but Python:
#   make run    set up and serve the example plugin on http://127.0.0.1:8000
#   make test   set up and run every test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: run test check venv clean

$(STAMP): pyproject.toml contrib/sklearn_logreg/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' -e contrib/sklearn_logreg
	touch $@

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/stevedore-server run --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest tests contrib/sklearn_logreg/tests

check: $(STAMP)
	$(BIN)/stevedore-server check

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .tox
