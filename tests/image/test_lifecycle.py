"""Converging again, restarting, a second container, and services killed with -9."""

import time

import pytest

from tests.boxes import PROGRAMS, podman, remove, start_box, wait_ready

SECRET_AND_KEY_FILES = "/etc/red/secrets/* /etc/ssh/ssh_host_*_key"


def fingerprints(box) -> str:
    return box.sh(f"sha256sum {SECRET_AND_KEY_FILES}")


def test_second_converge_changes_nothing(box):
    report = box.converge_json()
    totals = report["results"]["totals"]
    assert totals["success"] == 0, report["results"]
    assert totals["error"] == 0
    assert totals["no_change"] > 20


def test_restart_keeps_generated_secrets_and_host_keys(generated_box):
    before = fingerprints(generated_box)
    assert "jupyter_token" in before and "vnc_password" in before and "ed25519" in before
    podman("restart", "-t", "5", generated_box.name)
    wait_ready(generated_box)
    assert fingerprints(generated_box) == before


def test_two_containers_get_different_host_keys(box):
    other = start_box("red-test-other", {
        "SSH_PORT": "22222", "JUPYTER_PORT": "18777", "NOVNC_PORT": "16280", "VNC_PORT": "16901",
    }, {"ssh": 22222, "jupyter": 18777, "novnc": 16280, "vnc": 16901})
    try:
        wait_ready(other)
        command = "cat /etc/ssh/ssh_host_ed25519_key.pub"
        assert other.sh(command).split()[1] != box.sh(command).split()[1]
    finally:
        remove(other.name)


def wait_respawned(box, program: str, old_pid: int, timeout: float = 60) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        pid = box.program_pids().get(program)
        if pid and pid != old_pid:
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{program} did not come back after kill -9:\n"
                         + box.sh("supervisorctl status; tail -n 20 /logs/supervisord.log",
                                  check=False))


@pytest.mark.parametrize("program", PROGRAMS)
def test_supervisor_brings_back_a_killed_service(box, program):
    old_pid = box.program_pids()[program]
    box.exec("kill", "-9", str(old_pid))
    wait_respawned(box, program, old_pid)
    # Killing Xvnc takes the desktop down with it: both must be back.
    wait_ready(box, box.env["JUPYTER_TOKEN"])
