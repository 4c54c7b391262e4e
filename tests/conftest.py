"""
Shared by every test tier: the repository root on sys.path (deploy code is imported), the
box-side library (files/lib/opt/red/lib) for this process and the tools it runs, and a skipped
test fails the run: a test that did not run tells nothing, and the bar is no skips.
"""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "files" / "lib" / "opt" / "red" / "lib"
for _path in (LIB, ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
# The tools' entry points look in /opt/red/lib, absent here: they find the repository's copy.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(LIB), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])

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
