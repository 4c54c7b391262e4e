"""
Boot-time provisioning in real containers: the provisioning scripts, PROVISIONING_SCRIPT
served by a loopback HTTP server on this machine (host networking: the box's 127.0.0.1 is
ours), the seed's fallbacks, the lock and the markers, both Vast launch modes, and the faults.
In every case the services still come up.

Boxes (names red-prov-*, ports 25000-25999):
- ``prov_box``: entrypoint mode with PROVISIONING_SCRIPT set; most tests run the on-start flow
  or the scripts in it again with ``podman exec``;
- boot-time faults, /logs removed or read-only: a box each, booted by the test;
- ssh and jupyter mode: another entrypoint holds the ports first (as Vast's sshd and Jupyter
  do), then the template's on-start script runs through ``podman exec``.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from tests.boxes import (
    PROGRAMS,
    STATE,
    TOKEN,
    Box,
    jupyter_status,
    onstart_record,
    podman,
    remove,
    restart,
    service_env,
    wait_onstart,
    wait_ready,
)
from tests.boxes import ports as ports_of
from tests.boxes import start_box as start
from tests.script_server import serve

SERVER_PORT, CLOSED_PORT = 25080, 25099
SERVER = f"http://127.0.0.1:{SERVER_PORT}"
PROV_PORTS = ports_of(25020)
SCRIPTS = ("/vast_ai_provisioning_script.sh", "/src/provisioning_script.sh")
STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")

ROUTES = {
    "/ok.sh": (200, "text/x-sh",
               b"#!/bin/bash\necho 'hello from the provisioning script'\n"
               b"echo \"it sees SSH_PORT=$SSH_PORT\"\necho \"it runs at niceness $(nice)\"\n"
               b"touch /tmp/prov-ran\n"),
    "/fail.sh": (200, "text/plain", b"echo 'about to fail'\nexit 3\n"),
    "/hang.sh": (200, "text/plain", b"#!/bin/bash\necho 'hanging now'\nsleep 600\n"),
    "/page.html": (200, "text/html",
                   b"<!DOCTYPE html><html><head><title>Sign in</title></head></html>\n"),
    "/empty.sh": (200, "text/plain", b""),
    "/py.sh": (200, "text/plain", b"#!/usr/bin/env python3\nimport sys\n"
               b"print('hello from python', sys.version_info[0])\n"),
    "/crlf.sh": (200, "text/plain",
                 b"#!/bin/bash\r\nset -eu\r\nword=ok\r\necho \"crlf $word\"\r\n"),
}


@pytest.fixture(scope="module")
def script_server():
    with serve(SERVER_PORT, ROUTES, never_seconds=120) as url:
        yield url


def onstart(box: Box, *env: str, timeout: float = 300):
    """Run the on-start script in the box as Vast's on-start command would; (rc, output)."""
    args = ["exec"]
    for item in env:
        args += ["-e", item]
    result = podman(*args, box.name, "/opt/red/bin/red-onstart", check=False, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


def run_script(box: Box, script: str, *env: str, timeout: float = 300):
    args = ["exec"]
    for item in env:
        args += ["-e", item]
    result = podman(*args, box.name, script, check=False, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


def marker(box: Box, name: str) -> dict | None:
    text = box.sh(f"cat {STATE}/{name} 2>/dev/null", check=False)
    return json.loads(text) if text.strip() else None


def healthy(box: Box) -> bool:
    return box.sh("/opt/red/bin/red-healthcheck", check=False).strip() == "healthy"


@pytest.fixture(scope="module")
def prov_box(script_server):
    env = {**service_env(PROV_PORTS), "PROVISIONING_SCRIPT": f"{script_server}/ok.sh"}
    started = start("red-prov-main", env, PROV_PORTS)
    try:
        started.ready_after = wait_ready(started, TOKEN)
        started.onstart_after = wait_onstart(started)
        yield started
    finally:
        remove(started.name)


# -- entrypoint mode: the URL at boot, the scripts, idempotence ------------------------------

def test_boot_downloads_and_runs_the_provisioning_script(prov_box):
    record = prov_box.onstart_after
    assert record["status"] == "ok" and record["mode"] == "entrypoint", record
    assert record["source"] == f"{SERVER}/ok.sh" and record["exit_code"] == 0
    log = prov_box.sh("cat /logs/provisioning.log").splitlines()
    assert all(STAMPED.match(line) for line in log), log
    text = "\n".join(log)
    for expected in ("red-onstart: supervisord is running: the services are up",
                     f"red-onstart: Using PROVISIONING_SCRIPT: {SERVER}/ok.sh",
                     "script: hello from the provisioning script",
                     f"script: it sees SSH_PORT={PROV_PORTS['sshd']}",
                     # The user's script keeps the normal priority; Red's converge yields.
                     "script: it runs at niceness 0",
                     "red-onstart: on-start flow finished: ok"):
        assert expected in text, text
    assert prov_box.sh("test -e /tmp/prov-ran && echo yes").strip() == "yes"
    # The boot's converges went through the same engine, lock and markers: the entrypoint's
    # (without the app's slow steps), then the background one for the app.
    converges = prov_box.sh("grep -o 'converging this box' /logs/provisioning.log | wc -l")
    assert int(converges) >= 2
    completed = marker(prov_box, "completed")
    assert completed["by"] == "red-onstart (app)" and marker(prov_box, "in-progress") is None
    assert completed["niceness"] == 10


@pytest.mark.parametrize("script", SCRIPTS)
def test_provisioning_scripts_converge_without_restarting_anything(prov_box, script):
    mode = prov_box.sh(f"stat -c %a {script}").strip()
    assert mode == "755"
    before = prov_box.program_pids()
    code, output = run_script(prov_box, script)
    assert code == 0, output
    assert "converged in" in output and ": 0 changes" in output, output
    assert prov_box.program_pids() == before
    completed = marker(prov_box, "completed")
    assert completed["by"] == script and completed["changes"] == 0
    assert marker(prov_box, "failed") is None and marker(prov_box, "in-progress") is None


def test_a_changed_program_is_applied_and_the_rest_left_running(prov_box):
    before = prov_box.program_pids()
    code, output = run_script(prov_box, SCRIPTS[1], "VNC_RESOLUTION=1024x768")
    assert code == 0, output
    changed = marker(prov_box, "completed")["changed"]
    assert any("xvnc.conf" in name for name in changed), changed
    wait_ready(prov_box, TOKEN)
    after = prov_box.program_pids()
    assert after["xvnc"] != before["xvnc"]
    for program in ("sshd", "novnc", "jupyter"):
        assert after[program] == before[program], program
    code, output = run_script(prov_box, SCRIPTS[1])
    assert code == 0, output
    wait_ready(prov_box, TOKEN)


def test_login_shells_get_the_settings_as_data_and_no_secret(prov_box):
    nasty = f"{SERVER}/ok.sh?x=$(touch${{IFS}}/tmp/pwned)`touch${{IFS}}/tmp/pwned2`';x"
    code, output = run_script(prov_box, SCRIPTS[0], f"PROVISIONING_SCRIPT={nasty}",
                              "VAST_TCP_PORT_22=40022", "CONTAINER_API_KEY=api-secret-key")
    assert code == 0, output
    try:
        # A login shell with nothing inherited, as an SSH session or a Jupyter terminal.
        shown = prov_box.sh(
            "env -i bash -lc 'printf \"%s|%s|%s|%s|%s\" \"$PROVISIONING_SCRIPT\" "
            "\"$SSH_PORT\" \"$VAST_TCP_PORT_22\" \"${CONTAINER_API_KEY-unset}\" "
            "\"${JUPYTER_TOKEN-unset}\"'"
        )
        assert shown == f"{nasty}|{PROV_PORTS['sshd']}|40022|unset|unset"
        assert prov_box.sh("ls /tmp/pwned /tmp/pwned2 2>/dev/null | wc -l").strip() == "0"
        assert TOKEN not in prov_box.sh("cat /etc/profile.d/red.sh")
    finally:
        assert run_script(prov_box, SCRIPTS[0])[0] == 0


# -- the on-start flow: faults, each with the services still up ---------------------------------

FAST = ("PROVISIONING_DOWNLOAD_RETRIES=1", "PROVISIONING_DOWNLOAD_BACKOFF=1",
        "PROVISIONING_DOWNLOAD_TIMEOUT=3", "PROVISIONING_CONNECT_TIMEOUT=2")


@pytest.mark.parametrize(
    ("url", "extra", "outcome"),
    [
        (f"{SERVER}/missing.sh", (), ("download-failed", "download failed: HTTP 404", 15)),
        (f"http://127.0.0.1:{CLOSED_PORT}/x.sh", (),
         ("download-failed", "download failed: curl exit 7", 15)),
        (f"{SERVER}/never", (), ("download-failed", "curl: (28) Operation timed out", 20)),
        (f"{SERVER}/page.html", (), ("download-failed", "an HTML page, not a script", 15)),
        (f"{SERVER}/empty.sh", (), ("download-failed", "the body is empty", 15)),
        (f"{SERVER}/fail.sh", (), ("script-failed", "exited with status 3", 15)),
        (f"{SERVER}/hang.sh", ("PROVISIONING_TIMEOUT=3",),
         ("timeout", "timed out after 3 s", 25)),
        ("ftp://127.0.0.1/x.sh", (), ("bad-url", "is not an http(s) URL", 15)),
    ],
    ids=["404", "refused", "never-answers", "html", "empty", "exit-3", "never-ends", "bad-url"],
)
def test_a_bad_provisioning_script_is_reported_and_services_stay_up(prov_box, url, extra,
                                                                     outcome):
    status, expected, bound = outcome
    start_time = time.monotonic()
    code, output = onstart(prov_box, f"PROVISIONING_SCRIPT={url}", *FAST, *extra)
    assert code == 1, output
    assert time.monotonic() - start_time < bound
    assert expected in output and f"on-start flow finished: {status}" in output, output
    assert onstart_record(prov_box)["status"] == status
    assert expected in prov_box.sh("tail -n 20 /logs/provisioning.log")
    # A script that ran out of time leaves nothing behind; the services never noticed.
    assert prov_box.sh("ps -eo args= | grep -cx 'sleep 600'", check=False).strip() == "0"
    assert healthy(prov_box)


def test_without_a_url_the_seed_fallbacks_run_in_order(prov_box):
    aside = "mv {0} {0}.test-aside"
    back = "[ ! -e {0}.test-aside ] || mv -f {0}.test-aside {0}"
    try:
        code, output = onstart(prov_box, "PROVISIONING_SCRIPT=")
        assert code == 0 and "Found script: /vast_ai_provisioning_script.sh" in output, output
        prov_box.sh(aside.format(SCRIPTS[0]))
        code, output = onstart(prov_box, "PROVISIONING_SCRIPT=")
        assert code == 0 and "Found script: /src/provisioning_script.sh" in output, output
        # That converge shipped /vast_ai_provisioning_script.sh again: out of the way too.
        prov_box.sh(f"rm {SCRIPTS[0]} && {aside.format(SCRIPTS[1])}")
        prov_box.sh("mkdir -p /VisoMaster/src && printf 'echo from the VisoMaster fallback\\n' "
                    "> /VisoMaster/src/provisioning_script.sh")
        code, output = onstart(prov_box, "PROVISIONING_SCRIPT=")
        assert code == 0, output
        assert "Found script: /VisoMaster/src/provisioning_script.sh" in output
        assert "script: from the VisoMaster fallback" in prov_box.sh("cat /logs/provisioning.log")
        prov_box.sh("rm -rf /VisoMaster")
        code, output = onstart(prov_box, "PROVISIONING_SCRIPT=")
        assert code == 1 and "ERROR: No provisioning script found" in output, output
        assert onstart_record(prov_box)["status"] == "no-script"
        assert healthy(prov_box)
    finally:
        prov_box.sh(f"rm -rf /VisoMaster; {back.format(SCRIPTS[0])}; {back.format(SCRIPTS[1])}")


def _start_background_run(box: Box, *env: str) -> None:
    """A converge in its own process group, in the background, once it holds the lock."""
    exports = " ".join(f"{item}" for item in env)
    box.sh(f"rm -f /tmp/bg.out; {exports} setsid {SCRIPTS[0]} >/tmp/bg.out 2>&1 </dev/null &")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        # "[p]yinfra": the pattern must not match this very command line.
        if box.sh(f"test -e {STATE}/in-progress && pgrep -f '[p]yinfra @local' >/dev/null "
                  "&& echo yes", check=False).strip() == "yes":
            return
        time.sleep(0.1)
    raise AssertionError(box.sh("cat /tmp/bg.out", check=False))


def _wait_background_run(box: Box, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if box.sh("pgrep -f '[r]ed-provision run' >/dev/null || echo done",
                  check=False).strip():
            return
        time.sleep(0.2)
    raise AssertionError("the background converge never finished")


def test_concurrent_runs_wait_for_each_other_or_give_up_cleanly(prov_box):
    _start_background_run(prov_box)
    holder = marker(prov_box, "in-progress")
    # A no-op converge is over in about a second: the holder's converge is paused while the
    # others try, and goes on 2 s after the waiting one has started.
    paused = "pkill -{} -f '[p]yinfra @local'"
    prov_box.sh(paused.format("STOP"))
    try:
        code, output = run_script(prov_box, SCRIPTS[1], "PROVISIONING_LOCK_TIMEOUT=1")
    finally:
        prov_box.sh(f"setsid sh -c \"sleep 2; {paused.format('CONT')}\" >/dev/null 2>&1 "
                    "</dev/null &")
    assert code == 75, output
    assert f"another run holds the lock (pid {holder['pid']}" in output
    assert "this run changed nothing" in output
    code, output = run_script(prov_box, SCRIPTS[1])
    assert code == 0, output
    assert "waiting up to 900 s" in output and "converging now" in output
    _wait_background_run(prov_box)
    assert "converged in" in prov_box.sh("cat /tmp/bg.out")
    assert marker(prov_box, "in-progress") is None and marker(prov_box, "failed") is None
    assert healthy(prov_box)


def test_a_run_killed_midway_is_reported_and_the_next_one_converges(prov_box):
    _start_background_run(prov_box, "VNC_RESOLUTION=1152x864")
    killed = marker(prov_box, "in-progress")["pid"]
    # At once: a converge that changes one file is over in about a second.
    prov_box.sh(f"kill -KILL -- -$(ps -o pgid= -p {killed} | tr -d ' ')")
    status = json.loads(prov_box.sh("/opt/red/bin/red-provision status --json"))
    assert status["converge"]["state"] == "interrupted"
    assert status["converge"]["marker"]["pid"] == killed
    code, output = run_script(prov_box, SCRIPTS[1], "VNC_RESOLUTION=1152x864")
    assert code == 0, output
    assert f"the previous run (pid {killed}" in output and "was interrupted" in output
    completed = marker(prov_box, "completed")
    assert completed["interrupted_run"]["pid"] == killed
    assert marker(prov_box, "in-progress") is None and marker(prov_box, "failed") is None
    assert "1152x864" in prov_box.sh("cat /etc/supervisor/conf.d/xvnc.conf")
    assert run_script(prov_box, SCRIPTS[1])[0] == 0
    wait_ready(prov_box, TOKEN)


def test_a_run_killed_inside_supervisorctl_update_is_applied_by_the_next(prov_box):
    # What a run killed inside `supervisorctl update xvnc` leaves: its new config on disk, the
    # program stopped and removed from supervisord; and its in-progress marker.
    prov_box.sh("supervisorctl stop xvnc && supervisorctl remove xvnc")
    prov_box.sh(f"echo '{{\"pid\": 999999, \"by\": \"a killed run\", "
                f"\"started\": \"earlier\"}}' > {STATE}/in-progress")
    code, output = run_script(prov_box, SCRIPTS[1])
    assert code == 0, output
    # The config on disk is unchanged for this run: only the interrupted run's repair applies it.
    assert "after the interrupted run: supervisorctl update: xvnc: added process group" in output
    wait_ready(prov_box, TOKEN)
    # A service the killed run had stopped (inside `supervisorctl restart`) is started again.
    prov_box.sh("supervisorctl stop novnc")
    prov_box.sh(f"echo '{{\"pid\": 999999, \"by\": \"a killed run\"}}' > {STATE}/in-progress")
    code, output = run_script(prov_box, SCRIPTS[1])
    assert code == 0 and "started novnc (it was stopped)" in output, output
    wait_ready(prov_box, TOKEN)


def test_the_tools_and_the_tool_venv_find_the_one_box_side_library(prov_box):
    found = prov_box.sh("cd / && /opt/red/tool/bin/python3 -c "
                        "'import redbox.provision, redbox.app.checkout, redbox.app.models, redbox; "
                        "print(redbox.__file__)'")
    assert found.strip().startswith("/opt/red/tool/lib/python3.")
    assert found.strip().endswith("/site-packages/redbox/__init__.py")
    assert prov_box.sh("ls -d /opt/red/lib 2>/dev/null || true").strip() == ""
    # The tools are the package's console scripts, linked where the seed and supervisor look.
    for tool in ("red-app-checkout", "red-app-models", "red-provision"):
        assert prov_box.sh(f"readlink /opt/red/bin/{tool}").strip() == f"/opt/red/tool/bin/{tool}"
        usage = prov_box.sh(f"cd / && /opt/red/bin/{tool} --help")
        assert usage.startswith(f"usage: {tool}"), usage


def test_a_second_converge_changes_nothing(prov_box):
    totals = prov_box.converge_json()["results"]["totals"]
    assert totals["success"] == 0 and totals["error"] == 0, totals


def test_ssh_sessions_see_the_settings_but_no_secret(prov_box, ssh_key):
    # PAM reads /etc/environment for every SSH session, `ssh box cmd` included (Vast's way).
    public = ssh_key.with_suffix(".pub").read_text().strip()
    prov_box.sh(f"echo '{public}' >> /root/.ssh/authorized_keys")
    result = subprocess.run(
        ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-i", str(ssh_key),
         "-p", str(PROV_PORTS["sshd"]), "root@127.0.0.1",
         'echo "$PROVISIONING_SCRIPT|$SSH_PORT|${JUPYTER_TOKEN-unset}"'],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{SERVER}/ok.sh|{PROV_PORTS['sshd']}|unset"
    environment = prov_box.sh("cat /etc/environment")
    assert f'PROVISIONING_SCRIPT="{SERVER}/ok.sh"' in environment
    for secret in (TOKEN, "prov-vnc"):
        assert secret not in environment


def onstart_with(box: Box, url: str, *args: str) -> tuple[int, str]:
    result = podman("exec", "-e", f"PROVISIONING_SCRIPT={url}", box.name,
                    "/opt/red/bin/red-onstart", *args, check=False, timeout=300)
    return result.returncode, result.stdout + result.stderr


def test_the_users_script_runs_once_by_its_shebang_a_new_url_or_force_runs_again(prov_box):
    # The boot ran /ok.sh: the same URL is skipped with one line.
    prov_box.sh("rm -f /tmp/prov-ran")
    code, output = onstart_with(prov_box, f"{SERVER}/ok.sh")
    assert code == 0, output
    [skipped] = [line for line in output.splitlines() if "not run again" in line]
    assert f"PROVISIONING_SCRIPT {SERVER}/ok.sh already ran OK on " in skipped
    assert "red-onstart --force" in skipped and "provisioning-script.json" in skipped
    assert onstart_record(prov_box)["status"] == "already-done"
    assert prov_box.sh("test -e /tmp/prov-ran && echo ran || echo not").strip() == "not"
    # Another URL runs: by its shebang (python3 here), CRLF line endings converted.
    code, output = onstart_with(prov_box, f"{SERVER}/py.sh")
    assert code == 0, output
    assert "by its shebang (#!/usr/bin/env python3)" in output
    assert "script: hello from python 3" in output
    code, output = onstart_with(prov_box, f"{SERVER}/crlf.sh")
    assert code == 0, output
    assert "CRLF (Windows) line endings: converted to LF" in output
    assert "script: crlf ok" in output
    # Back to /ok.sh: a URL other than the last success runs; then --force runs it again.
    code, output = onstart_with(prov_box, f"{SERVER}/ok.sh")
    assert code == 0 and "script: hello from the provisioning script" in output, output
    prov_box.sh("rm -f /tmp/prov-ran")
    code, output = onstart_with(prov_box, f"{SERVER}/ok.sh", "--force")
    assert code == 0 and "(--force: run again" in output, output
    assert prov_box.sh("test -e /tmp/prov-ran && echo ran").strip() == "ran"
    done = marker(prov_box, "provisioning-script.json")
    assert done["url"] == f"{SERVER}/ok.sh" and len(done["script_sha256"]) == 64


def test_a_restart_skips_the_users_script_but_converges(prov_box):
    before = onstart_record(prov_box)
    converged_before = marker(prov_box, "completed")["finished"]
    prov_box.sh("rm -f /tmp/prov-ran")
    restart(prov_box.name)
    wait_ready(prov_box, TOKEN)
    record = wait_onstart(prov_box, timeout=180, replacing=before)
    assert record["status"] == "already-done", record
    assert prov_box.sh("test -e /tmp/prov-ran && echo ran || echo not").strip() == "not"
    # Red's own converge ran at this boot all the same.
    assert marker(prov_box, "completed")["finished"] > converged_before


def test_the_container_log_tells_the_boot_and_not_the_programs_logs(prov_box):
    said = podman("logs", prov_box.name).stdout + podman("logs", prov_box.name).stderr
    for expected in (
        "red-entrypoint: converging with the runtime environment",
        # a startup decision, the converge's result
        "launch: entrypoint mode (no /.launch)",
        "red-provision: converged in ",
        # provisioning's progress and outcome
        f"red-onstart: Using PROVISIONING_SCRIPT: {SERVER}/ok.sh",
        "script: hello from the provisioning script",
        "red-onstart: on-start flow finished: ok",
        "red-onstart: on-start flow finished: already-done",
        # each program's start and exit (supervisord's own lines)
        "spawned: 'sshd'", "success: jupyter entered RUNNING state",
    ):
        assert expected in said, expected
    # The restart: supervisord says it stops the programs.
    assert re.search(r"waiting for .* to die|stopped: \w+|exited: \w+", said), said[-3000:]
    # The programs' own output stays in /logs/<program>.log.
    for program_line in ("ServerApp", "noVNC", "Xvnc TigerVNC"):
        assert program_line not in said, program_line


# -- boot-time faults: the services come up first ---------------------------------------------

@pytest.mark.parametrize(
    ("name", "extra_env", "status", "expected"),
    [
        ("hang", {"PROVISIONING_SCRIPT": f"{SERVER}/hang.sh", "PROVISIONING_TIMEOUT": "20"},
         "timeout", "timed out after 20 s"),
        ("never", {"PROVISIONING_SCRIPT": f"{SERVER}/never", "PROVISIONING_DOWNLOAD_TIMEOUT": "8",
                   "PROVISIONING_DOWNLOAD_RETRIES": "1", "PROVISIONING_DOWNLOAD_BACKOFF": "1"},
         "download-failed", "Operation timed out"),
    ],
)
def test_a_hanging_script_or_server_at_boot_does_not_delay_the_services(
    script_server, name, extra_env, status, expected
):
    ports = ports_of(25120)
    box = start(f"red-prov-boot-{name}", {**service_env(ports), **extra_env}, ports)
    try:
        ready = wait_ready(box, TOKEN, timeout=120)
        # Ready while the provisioning script still hangs (or its server stays silent).
        assert onstart_record(box).get("status") == "running", box.sh("cat /logs/provisioning.log")
        record = wait_onstart(box, timeout=120)
        assert record["status"] == status
        assert expected in box.sh("cat /logs/provisioning.log")
        assert healthy(box)
        print(f"\n{name}: ready {ready:.1f} s after start; provisioning finished "
              f"({status}) after {record['seconds']} s")
    finally:
        remove(box.name)


def test_logs_removed_at_boot_are_recreated():
    ports = ports_of(25220)
    box = start("red-prov-nologs", service_env(ports), ports,
                "--entrypoint", "bash",
                command=["-c", "rm -rf /logs && exec /opt/red/bin/red-entrypoint"])
    try:
        wait_ready(box, TOKEN)
        assert wait_onstart(box)["status"] == "ok"
        listing = box.sh("ls /logs").split()
        for name in ("startup.log", "provisioning.log", "converge.log", *(
                f"{program}.log" for program in PROGRAMS)):
            assert name in listing, listing
    finally:
        remove(box.name)


def test_unwritable_logs_at_boot_are_said_on_stderr_and_services_come_up(tmp_path):
    ports = ports_of(25320)
    box = start("red-prov-rologs", service_env(ports), ports, "-v", f"{tmp_path}:/logs:ro")
    try:
        wait_ready(box, TOKEN)
        assert wait_onstart(box)["status"] == "ok"
        said = podman("logs", box.name).stderr
        assert "red-provision: /logs is not writable (Read-only file system): logs go to " \
               "/var/log/red" in said
        assert "supervisord.log" in box.sh("ls /var/log/red")
        assert "on-start flow finished: ok" in box.sh("cat /var/log/red/provisioning.log")
        assert healthy(box)
    finally:
        remove(box.name)


# -- Vast's ssh and jupyter launch modes -------------------------------------------------------

# Vast's init: /.launch (naming jupyter in jupyter mode), its own sshd on the SSH port (and its
# Jupyter on JUPYTER_PORT in jupyter mode), then it stays PID 1 and reaps.
VAST_INIT = ("echo {launch} > /.launch && "
             "mkdir -p /run/sshd && ssh-keygen -A && /usr/sbin/sshd -p {ssh} && {jupyter}"
             "trap 'exit 0' TERM; while :; do sleep 1000 & wait $!; done")
FAKE_JUPYTER = "(python3 -m http.server --bind 0.0.0.0 {port} >/dev/null 2>&1 &) && "
# The template's on-start command (the README's): Vast saves it as /root/onstart.sh.
ONSTART_COMMAND = "/opt/red/bin/red-onstart"


def listeners(box: Box, port: int) -> set[int]:
    out = box.sh(f"ss -Hltnp 'sport = :{port}'", check=False)
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}


@pytest.mark.parametrize("mode", ["ssh", "jupyter"])
def test_vast_mode_brings_up_our_supervisor_without_a_second_sshd_or_jupyter(mode):
    ports = ports_of(25420)
    jupyter = FAKE_JUPYTER.format(port=ports["jupyter"]) if mode == "jupyter" else ""
    box = start(f"red-prov-vast-{mode}", service_env(ports), ports, "--entrypoint", "bash",
                command=["-c", VAST_INIT.format(ssh=ports["sshd"], jupyter=jupyter,
                                                launch="jupyter" if mode == "jupyter" else "ssh")])
    try:
        deadline = time.monotonic() + 30
        while not listeners(box, ports["sshd"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        vast_sshd = listeners(box, ports["sshd"])
        vast_jupyter = listeners(box, ports["jupyter"])
        assert vast_sshd and (bool(vast_jupyter) == (mode == "jupyter"))
        box.sh(f"echo {ONSTART_COMMAND} > /root/onstart.sh")
        start_time = time.monotonic()
        result = box.exec("bash", "/root/onstart.sh", check=False, timeout=300)
        took = time.monotonic() - start_time
        assert result.returncode == 0, result.stdout + result.stderr
        assert "supervisord is not running (Vast's ssh/jupyter mode" in result.stdout

        skipped = {"sshd", "jupyter"} if mode == "jupyter" else {"sshd"}
        expected = {program: "STOPPED" if program in skipped else "RUNNING"
                    for program in PROGRAMS}
        # Started is not yet RUNNING: Jupyter needs its startsecs.
        deadline = time.monotonic() + 60
        while True:
            status = box.sh("supervisorctl status", check=False)
            states = {program: re.search(rf"^{program} +(\S+)", status, re.M)
                      for program in PROGRAMS}
            if all(match and match[1] == expected[program] for program, match in states.items()):
                break
            assert time.monotonic() < deadline, status
        for program in skipped:
            assert "autostart=false" in box.sh(f"cat /etc/supervisor/conf.d/{program}.conf")
        assert healthy(box)
        # No second sshd (or Jupyter): the ports are still held by Vast's processes alone.
        assert listeners(box, ports["sshd"]) == vast_sshd
        assert box.sh("pgrep -cx sshd", check=False).strip() == "1"
        if mode == "jupyter":
            assert listeners(box, ports["jupyter"]) == vast_jupyter
        else:
            token = box.sh("cat /etc/red/secrets/jupyter_token").strip()
            # RUNNING after its startsecs; on a busy machine its HTTP answer may take longer.
            deadline = time.monotonic() + 60
            while jupyter_status(ports["jupyter"], token) != 200:
                assert time.monotonic() < deadline, box.sh("tail -n 20 /logs/jupyter.log")
                time.sleep(1)
        startup = box.sh("cat /logs/startup.log")
        assert f"ports: sshd: port {ports['sshd']} is held by sshd (pid " in startup
        assert ("ports: jupyter: port" in startup) == (mode == "jupyter")
        assert f"launch: Vast's {mode} mode (/.launch): Vast owns PID 1" in startup
        # Red's block joined the user's on-start line, which stays as it was.
        onstart_text = box.sh("cat /root/onstart.sh")
        assert onstart_text.startswith(f"{ONSTART_COMMAND}\n# BEGIN Red on-start block"), \
            onstart_text
        assert "red-onstart --once-per-boot" in onstart_text

        # The on-start command again (a restart of the instance): nothing restarts.
        before = box.program_pids()
        result = box.exec("bash", "/root/onstart.sh", check=False, timeout=300)
        assert result.returncode == 0 and "supervisord is running" in result.stdout
        assert box.program_pids() == before
        print(f"\n{mode} mode: the on-start command took {took:.1f} s")
    finally:
        remove(box.name)
