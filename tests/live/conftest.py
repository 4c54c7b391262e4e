"""
The live tier: Red's deploy converging "fresh Vast boxes" over SSH through inventories/vast.py
(see tests/live/freshbox.py). Needs root, podman and the local Debian 12 base (`make base`).
"""

import shutil
import subprocess

import pytest

from tests.live import freshbox


@pytest.fixture(scope="session")
def freshbox_image():
    if not shutil.which("podman"):
        pytest.fail("the live tier needs podman (make deps)")
    exists = subprocess.run(["podman", "image", "exists", freshbox.BASE_IMAGE], check=False)
    if exists.returncode != 0:
        pytest.fail(f"{freshbox.BASE_IMAGE} is missing: run `make base` first")
    freshbox.TIMINGS["fresh-box image build"] = freshbox.build_image()
    return freshbox.IMAGE


@pytest.fixture(scope="session")
def operator(tmp_path_factory):
    operator = freshbox.Operator(tmp_path_factory.mktemp("operator"))
    yield operator
    operator.close()


def pytest_terminal_summary(terminalreporter):
    if not freshbox.TIMINGS:
        return
    terminalreporter.section("live boxes: seconds")
    for name, seconds in freshbox.TIMINGS.items():
        terminalreporter.write_line(f"{name:<48} {seconds:7.1f}")
