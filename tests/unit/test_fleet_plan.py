"""
A fleet in one run: pyinfra runs the deploy code once per host in one process, so per-run
state in the deploy must be per host. Plan-level (tests/plan.py).
"""

from tests.plan import plan


def test_every_host_of_a_fleet_refreshes_its_own_apt_lists():
    # Found converging three fresh boxes at once: only the first host got `apt-get update`,
    # and the others failed on empty package lists.
    result = plan("debian_12", "ubuntu_2204", data=["red_phase=install"])
    assert result.code == 0, result.output[-3000:]
    assert result.hosts_running("apt-get update") == {"@fake/debian-12", "@fake/ubuntu-2204"}
