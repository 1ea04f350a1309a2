# The two commands: `make run` and `make test`.  Everything else is set-up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEPS := $(VENV)/.deps
INSTALLED := $(VENV)/.installed
SOURCES := $(shell find rpc regiond clusterd outpost simulators twisted -name '*.py' 2>/dev/null)
# Tests and `make run` use the source tree; the installed copy backs .venv/bin/outpost.
export PYTHONPATH := $(CURDIR)

.PHONY: run test bench demo clean

$(DEPS): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet '.[test]'
	$(BIN)/pip install --quiet --no-deps waldur-site-agent==0.7.9 waldur-site-agent-cscs-hpc-storage==0.7.9
	touch $@

$(INSTALLED): $(DEPS) $(SOURCES)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --force-reinstall .
	touch $@

run: $(INSTALLED)
	$(BIN)/python -m outpost.devrun

demo: $(INSTALLED)
	$(BIN)/python -m outpost.demo

test: $(INSTALLED)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(INSTALLED)
	$(BIN)/python bench/rpc.py
	$(BIN)/python bench/machines.py
	$(BIN)/python bench/storage.py
	$(BIN)/python bench/volumes.py
	$(BIN)/python bench/infrastructure.py

clean:
	rm -rf $(VENV) .run build *.egg-info
