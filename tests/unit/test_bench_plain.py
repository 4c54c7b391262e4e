"""The bench's plain baseline stays in step with the deploy (bench/plain.py)."""

import subprocess
import sys

import pytest

from operations.base import BASE_PACKAGES
from operations.desktop import DESKTOP_PACKAGES
from operations.portal import PACKAGES as PORTAL_PACKAGES
from operations.visomaster import APP_PACKAGES
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import plain  # bench/plain.py, found by the path above


@pytest.fixture(scope="module")
def packages():
    return plain.packages()


def test_the_plain_build_installs_what_the_deploys_install_plan_installs(packages):
    for declared in (BASE_PACKAGES, DESKTOP_PACKAGES, PORTAL_PACKAGES, APP_PACKAGES,
                     ["openssh-server", "supervisor", "python3.11", "python3.11-venv"]):
        assert set(declared) <= set(packages)
    assert len(packages) == len(set(packages))


def test_the_plain_dockerfile_uses_the_same_locks_and_venvs(packages):
    text = plain.dockerfile("localhost/red-base:bookworm", "3.11", packages)
    assert "apt-get install -y --no-install-recommends " + " ".join(packages) in text
    assert "/opt/red/jupyter/bin/pip install --no-cache-dir -r /tmp/jupyter.lock" in text
    assert "python3.11 -m venv /opt/red/venv" in text
    assert "pyinfra" not in text  # no configuration tool
    # Per-container host keys, as Red's: the package's own are not kept in the image.
    assert "rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub" in text


def test_the_plain_entrypoint_is_short_and_clean_shell():
    lines = [line for line in plain.ENTRYPOINT.splitlines() if line.strip()]
    assert len(lines) <= 16
    result = subprocess.run(["shellcheck", "-s", "bash", "-"], input=plain.ENTRYPOINT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
