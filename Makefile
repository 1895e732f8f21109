# medlb: `make demo` and `make test` bootstrap everything they need on their own.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= examples/local.yaml
PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=
# `make soak`: how long the load and chaos run (10 minutes; shorten while developing).
SOAK_SECONDS ?= 600
SOAK_ARGS ?=
# Run a second time with two worker processes behind each medlb (the product's default
# is one per core; most tests pin one so that schedulers are exact).
WORKER_TESTS := tests/integration/test_operator_states.py tests/integration/test_failover_live.py \
	tests/integration/test_backpressure.py \
	tests/integration/test_reload_live.py tests/integration/test_mllp_mode.py tests/integration/test_stop.py \
	tests/integration/test_dicom_mode.py tests/integration/test_http_mode.py tests/integration/test_tls_layer.py \
	tests/integration/test_http_hardening.py tests/integration/test_http_streaming.py tests/integration/test_http_orthanc.py \
	tests/integration/test_http_checks.py
# These assert an exact split of connections by leastconn counts at one instant, which
# holds in one process only; they run in the first pass. (Round robin rotates over every
# worker together, so its exact splits run in both.)
EXACT_SPLIT_TESTS := \
	tests/integration/test_dicom_mode.py::test_one_association_carries_many_files_under_leastconn

# `make fuzz`: each codec's property tests (tests/unit/test_fuzz_*.py) under atheris,
# FUZZ_SECONDS each (fuzz/README.md). Not part of `make test`.
ATHERIS := atheris==3.0.0
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= dicom mllp hl7 http
FUZZ_DIR := test-artifacts/fuzz

.PHONY: demo test fuzz run check bench soak clean system-deps install uninstall

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
	$(BIN)/ruff check src tests bench fuzz
	$(BIN)/python -m pytest $(PYTEST_ARGS)
ifeq ($(PYTEST_ARGS),)
	MEDLB_TEST_WORKERS=2 $(BIN)/python -m pytest -q $(WORKER_TESTS) $(EXACT_SPLIT_TESTS:%=--deselect %)
endif

fuzz: $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(ATHERIS)
	set -e; for target in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_DIR)/corpus-$$target; \
		$(BIN)/python fuzz/fuzz_$$target.py -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -len_control=0 \
			-artifact_prefix=$(FUZZ_DIR)/$$target- $(FUZZ_DIR)/corpus-$$target; \
	done

run: $(STAMP)
	$(BIN)/medlb run -c $(CONFIG)

check: $(STAMP)
	$(BIN)/medlb check $(CONFIG)

bench: $(STAMP) system-deps
	$(BIN)/python -m pip install -q --disable-pip-version-check matplotlib
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Not part of `make test`: every mode at once, servers killed, halted and reloaded under
# load; writes bench/results/soak.{md,json} and exits non-zero if a must was broken.
soak: $(STAMP) system-deps
	SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/python -m bench.soak $(SOAK_ARGS)

# `make install` (root): medlb as a systemd service in its own environment under
# /opt/medlb, /usr/local/bin/medlb, /etc/medlb, /var/lib/medlb (docs/install.md).
# DESTDIR=DIR stages it under DIR; `make uninstall` keeps /etc/medlb and /var/lib/medlb.
install:
	DESTDIR="$(DESTDIR)" ./scripts/install.sh install

uninstall:
	DESTDIR="$(DESTDIR)" ./scripts/install.sh uninstall

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache test-artifacts
