"""Converging again, restarting, a second container, and services killed with -9."""

import json
import time

import pytest

from tests.boxes import (
    NO_APP,
    PROGRAMS,
    ports,
    ports_env,
    remove,
    restart,
    start_box,
    wait_onstart,
    wait_ready,
)

SECRET_AND_KEY_FILES = "/etc/red/secrets/* /etc/ssh/ssh_host_*_key"
LONG_VNC_PASSWORD = "longer-than-8ch"
# Longer than nginx's bind retries (5 x 0.5 s) and any program's startsecs.
STAYS_UP_SECONDS = 6


def fingerprints(box) -> str:
    return box.sh(f"sha256sum {SECRET_AND_KEY_FILES}")


@pytest.mark.parametrize("which", ["box", "generated_box"])
def test_second_converge_changes_nothing(request, which):
    report = request.getfixturevalue(which).converge_json()
    totals = report["results"]["totals"]
    assert totals["success"] == 0, report["results"]
    assert totals["error"] == 0
    assert totals["no_change"] > 20


def test_the_boots_configure_run_and_the_full_converge_agree(box):
    # Each boot runs the configure half in the foreground, then the whole deploy behind the
    # services: neither may undo what the other wrote.
    for run in (["--data", "red_phase=configure"], [], ["--data", "red_phase=configure"]):
        report = box.converge_json(*run)["results"]
        assert report["totals"]["success"] == 0, (run, [
            op["name"] for op in report["operations"] if op["success"]])


def test_restart_keeps_generated_secrets_and_host_keys(generated_box):
    before = fingerprints(generated_box)
    assert "jupyter_token" in before and "vnc_password" in before and "ed25519" in before
    restart(generated_box.name)
    wait_ready(generated_box)
    assert fingerprints(generated_box) == before


@pytest.fixture(scope="module")
def other_box():
    """A second container of the image, with a VNC password longer than VNC reads."""
    other_ports = ports(22220)
    other = start_box("red-test-other", {
        **NO_APP, **ports_env(other_ports), "VNC_PASSWORD": LONG_VNC_PASSWORD,
    }, other_ports)
    try:
        wait_ready(other)
        yield other
    finally:
        remove(other.name)


def test_two_containers_get_different_host_keys(box, other_box):
    command = "cat /etc/ssh/ssh_host_ed25519_key.pub"
    assert other_box.sh(command).split()[1] != box.sh(command).split()[1]


def test_long_vnc_password_is_kept_with_a_warning(other_box):
    log = other_box.sh("cat /logs/startup.log")
    assert "VNC_PASSWORD: VNC authentication uses only the first 8 of its 15 characters" in log
    assert LONG_VNC_PASSWORD not in log
    assert other_box.sh("cat /etc/red/secrets/vnc_password") == LONG_VNC_PASSWORD


def test_keys_already_in_authorized_keys_are_kept(box, ssh_key):
    user_lines = "# added by hand\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIUser me@home"
    box.sh(f"printf '{user_lines}' >> /root/.ssh/authorized_keys")
    report = box.converge_json()
    assert report["results"]["totals"]["error"] == 0
    keys = box.sh("cat /root/.ssh/authorized_keys")
    assert "AAAAC3NzaC1lZDI1NTE5AAAAIUser me@home" in keys
    assert "# added by hand" in keys
    # The env's key is there once, not added again on each converge.
    assert keys.count(ssh_key.with_suffix(".pub").read_text().split()[1]) == 1


def wait_respawned(box, program: str, old_pid: int, timeout: float = 60) -> int:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        pid = box.program_pids().get(program)
        if pid and pid != old_pid:
            return pid
        time.sleep(0.1)
    raise AssertionError(f"{program} did not come back after kill -9:\n"
                         + box.sh("supervisorctl status; tail -n 20 /logs/supervisord.log",
                                  check=False))


@pytest.mark.parametrize("program", PROGRAMS)
def test_supervisor_brings_back_a_killed_service(box, program):
    old_pid = box.program_pids()[program]
    box.exec("kill", "-9", str(old_pid))
    new_pid = wait_respawned(box, program, old_pid)
    # Killing Xvnc takes the desktop down with it: both must be back.
    wait_ready(box, box.env["JUPYTER_TOKEN"])
    # And it stays: a respawn that cannot take its port (a killed nginx master's workers hold
    # it) is RUNNING for a moment, then exits, again and again.
    time.sleep(STAYS_UP_SECONDS)
    assert box.program_pids().get(program) == new_pid, box.sh(
        f"supervisorctl status; tail -n 20 /logs/{program}.log", check=False)


# -- drift: the boot applies the settings first, the full converge behind it repairs the rest --

# Shipped by the deploy (files/desktop, files/portal, a program config, a template), and a
# package of its install list that nothing else needs.
DRIFTED_CONTENT = "/opt/red/bin/red-novnc"
DRIFTED_MODE = "/opt/red/portal/www/status.css"
DRIFTED_CONFIG = "/etc/supervisor/conf.d/novnc.conf"
DRIFTED_TEMPLATE = "/etc/default/locale"
REMOVED_PACKAGE = "thunar"
FAST_BOOT = "is in place: applying the runtime settings only"


def tail(box) -> str:
    """What the boot and its converges said, for a failing assertion."""
    return box.sh("tail -n 40 /logs/provisioning.log", check=False)


def package_status(box, package: str) -> str:
    return box.sh(f"dpkg-query -W -f '${{db:Status-Abbrev}}' {package}").strip()


@pytest.fixture(scope="module")
def drift_box():
    drift_ports = ports(22320)
    drift = start_box("red-test-drift", {**NO_APP, **ports_env(drift_ports),
                                          "VNC_PW": "drift-pw"}, drift_ports)
    try:
        wait_ready(drift)
        yield drift
    finally:
        remove(drift.name)


def test_the_first_boot_applies_the_runtime_settings_only_before_the_services(drift_box):
    # The image build recorded its install half; the boot's foreground converge trusted it,
    # and the background flow's full converge followed (and recorded it again).
    version = drift_box.sh("cat /opt/red/deploy/.red-version").strip()
    log = drift_box.sh("cat /logs/provisioning.log")
    assert f"the install half of deploy {version[:12]} {FAST_BOOT}" in log
    assert wait_onstart(drift_box, timeout=300)["status"] == "ok"
    installed = json.loads(drift_box.sh("cat /var/lib/red/provisioning/installed.json"))
    assert installed["version"] == version
    # That converge ran behind the services, at a lower priority than theirs.
    completed = json.loads(drift_box.sh("cat /var/lib/red/provisioning/completed"))
    assert completed["niceness"] == 10, completed


def test_a_drifted_box_is_repaired_by_the_converge_after_the_next_boot(drift_box):
    first_boot = wait_onstart(drift_box, timeout=300)
    paths = (DRIFTED_CONTENT, DRIFTED_CONFIG, DRIFTED_TEMPLATE)
    shipped = drift_box.sh(f"sha256sum {' '.join(paths)}")
    assert drift_box.sh(f"stat -c %a {DRIFTED_MODE}").strip() == "644"
    drift_box.sh(f"echo '# drifted' >> {DRIFTED_CONTENT} && echo '; drifted' >> "
                 f"{DRIFTED_CONFIG} && echo 'LANG=drifted' > {DRIFTED_TEMPLATE} && "
                 f"chmod 600 {DRIFTED_MODE} && dpkg -r {REMOVED_PACKAGE} >/dev/null 2>&1")
    # Removed as apt-get remove leaves it: its config files stay.
    assert package_status(drift_box, REMOVED_PACKAGE) == "rc"
    boots = drift_box.sh("grep -c 'red-entrypoint: converging' /logs/startup.log").strip()
    restart(drift_box.name)
    wait_ready(drift_box)
    assert drift_box.sh("grep -c 'red-entrypoint: converging' /logs/startup.log").strip() \
        == str(int(boots) + 1)
    assert drift_box.sh(f"grep -c '{FAST_BOOT}' /logs/provisioning.log").strip() == "2", \
        tail(drift_box)
    # This boot's flow, not the first boot's record it replaces (a slow start, a busy machine).
    record = wait_onstart(drift_box, timeout=600, replacing=first_boot)
    assert record["status"] == "ok", tail(drift_box)
    assert drift_box.sh(f"sha256sum {' '.join(paths)}") == shipped, tail(drift_box)
    assert drift_box.sh(f"stat -c %a {DRIFTED_MODE}").strip() == "644"
    assert package_status(drift_box, REMOVED_PACKAGE) == "ii", tail(drift_box)
    # The repaired program config was applied: novnc runs, and a converge now changes nothing.
    assert " RUNNING " in drift_box.sh("supervisorctl status novnc")
    report = drift_box.converge_json()["results"]
    assert report["totals"]["success"] == 0, [op["name"] for op in report["operations"]
                                              if op.get("success")]
