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

sys.path.insert(0, str(Path(__file__).parent))

from helpers import Backends, MedlbFactory  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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
