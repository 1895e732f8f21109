# medlb: `make demo` and `make test` bootstrap everything they need on their own.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= examples/local.yaml
PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=

.PHONY: demo test run check bench clean system-deps

$(STAMP): pyproject.toml scripts/system-deps.sh
	./scripts/system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -U pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

system-deps:
	./scripts/system-deps.sh

demo: $(STAMP)
	$(BIN)/medlb demo $(DEMO_ARGS)

test: $(STAMP) system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP) system-deps
	$(BIN)/python bench/dicom_store.py

run: $(STAMP)
	$(BIN)/medlb run -c $(CONFIG)

check: $(STAMP)
	$(BIN)/medlb check $(CONFIG)

bench: $(STAMP) system-deps
	$(BIN)/python -m pip install -q --disable-pip-version-check matplotlib
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache test-artifacts
