"""Shared fixtures: real medlb processes, real backend processes, free ports.

In CI (CI=true) a test may not skip: a skipped interop test must never look green, so
any skip is turned into a failure there.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

from helpers import Backends, MedlbFactory  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Property tests (tests/unit/test_fuzz_*.py). "ci", the default, is what `make test`
# runs: the same examples on every machine (derandomize), a few seconds per test, no
# deadline (a 2-core machine shared with other jobs makes per-example timing noise).
# "long" is for hunting: HYPOTHESIS_PROFILE=long, or `make fuzz` (fuzz/README.md).
settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("long", max_examples=20_000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def need_tool(name: str) -> str:
    """The path of a required tool; skip without it on a laptop, fail in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (scripts/system-deps.sh installs it)"
        if IN_CI:
            pytest.fail(f"CI must have it: {message}")
        pytest.skip(message)  # a laptop only: with CI=true the line above fails instead
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):  # type: ignore[no-untyped-def]
    """A module that skips as a whole (pytest.importorskip at its top) is reported at
    collection, where the hook below never sees it: in CI that is a failure too."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {report.longrepr}"


@pytest.fixture
def backends():
    group = Backends()
    yield group
    group.stop_all()


@pytest.fixture
def medlb(tmp_path):
    factory = MedlbFactory(tmp_path)
    yield factory
    factory.stop_all()
