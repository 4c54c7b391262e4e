"""
Shared by every test tier: the repository root on sys.path (deploy code is imported; the box
library is the package installed in the test venv, its tools the venv's console scripts), and a
skipped test fails the run: a test that did not run tells nothing, and the bar is no skips.
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# The box library's console scripts (red-app-pip, red-provision, ...): beside this Python.
TOOLS = Path(sys.executable).parent

_SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    # xfail is a skip too (pytest reports it as skipped, with wasxfail).
    if report.skipped:
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _SKIPPED:
        terminalreporter.write_line(
            f"FAILED: {len(_SKIPPED)} test(s) skipped, and a skipped test fails the run: "
            + ", ".join(_SKIPPED), red=True)
