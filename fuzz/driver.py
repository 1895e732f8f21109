"""Runs one codec's property tests under atheris (libFuzzer), coverage-guided.

The properties are the hypothesis tests in tests/unit/test_fuzz_<codec>.py, so `make
test` and `make fuzz` check one contract: atheris supplies bytes, hypothesis turns them
into the same structured inputs (valid PDUs with random items, frames with random
contents, cut at random points), and medlb's code is instrumented so that libFuzzer
keeps the inputs that reach new branches. The first byte of an input picks the test.

A failure stops the run with the test's traceback; libFuzzer writes the input to
test-artifacts/fuzz/ and hypothesis adds the shrunk example to its database, so
`HYPOTHESIS_PROFILE=long pytest tests/unit/test_fuzz_<codec>.py` replays it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import atheris

TESTS = Path(__file__).resolve().parent.parent / "tests"


def main(codec: str) -> None:
    sys.path[:0] = [str(TESTS), str(TESTS / "unit")]
    os.environ.setdefault("HYPOTHESIS_PROFILE", "long")  # the profile with an example database
    importlib.import_module("conftest")  # registers and loads the hypothesis profiles
    with atheris.instrument_imports(include=["medlb"]):
        module = importlib.import_module(f"test_fuzz_{codec}")
    tests: list[Callable[[bytes], object]] = [
        test.hypothesis.fuzz_one_input for name, test in sorted(vars(module).items())
        if name.startswith("test_") and hasattr(test, "hypothesis")]
    print(f"fuzz {codec}: {len(tests)} properties from tests/unit/test_fuzz_{codec}.py", flush=True)

    def one_input(data: bytes) -> None:
        if data:
            tests[data[0] % len(tests)](data[1:])

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
