"""
A fleet in one run: pyinfra runs the deploy code once per host in one process, so per-run
state in the deploy must be per host. Plan-level, against pyinfra's @fake connector.
"""

import subprocess
import sys

from tests.conftest import ROOT

INVENTORY = "tests/fixtures/fake_inventory.py"
MARKER = "simulating command on "


def test_every_host_of_a_fleet_refreshes_its_own_apt_lists():
    # Found converging three fresh boxes at once: only the first host got `apt-get update`,
    # and the others failed on empty package lists.
    result = subprocess.run(
        [sys.executable, "-m", "pyinfra", INVENTORY, "deploy.py", "-y", "--debug",
         "--limit", "debian_12", "--limit", "ubuntu_2204", "--data", "red_phase=install"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    updated = {line.split(MARKER, 1)[1].split(": ", 1)[0]
               for line in output.splitlines()
               if MARKER in line and line.endswith(": apt-get update")}
    assert updated == {"@fake/debian-12", "@fake/ubuntu-2204"}
