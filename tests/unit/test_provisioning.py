"""
Provisioning without a container: its settings, the login-shell export, the port check, the
download and script runner of red-provision (against a loopback HTTP server on this machine),
the plan on @fake hosts, and the shipped notebooks' JSON.
"""

import fcntl
import json
import os
import subprocess
import time
from types import SimpleNamespace

import pytest

from operations import settings
from operations.facts import PortListeners
from operations.provisioning import _profile
from redbox.provision import status as provision_status
from redbox.provision.download import download
from redbox.provision.script import run_script
from redbox.settings.resolve import box_settings, provisioning_settings
from tests.conftest import ROOT
from tests.fixtures.fake_inventory import DEBIAN_12
from tests.plan import plan as run_plan
from tests.script_server import serve

NOTEBOOKS = ROOT / "files/notebooks/notebooks"
# This machine's loopback: ports of the image tier's range, off any box's.
SERVER_PORT, CLOSED_PORT = 25970, 25979


def resolve(env):
    return settings.provisioning(env, data=settings.DEFAULTS.get)


# -- settings ----------------------------------------------------------------------------------

def test_provisioning_defaults_come_from_group_data():
    prov = resolve({})
    assert prov.script_url == "" and prov.url_problem is None
    assert (prov.script_timeout, prov.download_retries, prov.lock_timeout) == (3600, 3, 900)
    assert prov.state_dir == "/var/lib/red/provisioning"
    assert prov.fallback_scripts == (
        "/vast_ai_provisioning_script.sh",
        "/src/provisioning_script.sh",
        "/VisoMaster/src/provisioning_script.sh",
    )
    assert prov.decisions == []


def test_env_names_override_and_bad_numbers_fall_back_with_one_line_each():
    prov = resolve({
        "PROVISIONING_TIMEOUT": "30", "PROVISIONING_DOWNLOAD_RETRIES": "0",
        "PROVISIONING_LOCK_TIMEOUT": "soon", "PROVISIONING_CONNECT_TIMEOUT": "99999",
        "PROVISIONING_SCRIPT": "https://example.com/prov.sh",
    })
    assert (prov.script_timeout, prov.download_retries) == (30, 0)
    assert prov.lock_timeout == 900 and prov.connect_timeout == 10
    assert prov.script_url == "https://example.com/prov.sh"
    assert len(prov.decisions) == 2
    assert "PROVISIONING_LOCK_TIMEOUT='soon' is not a whole number in 0..86400: using 900" in \
        prov.decisions


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/prov.sh", "is not an http(s) URL"),
        ("file:///etc/passwd", "is not an http(s) URL"),
        ("https://example.com/a b.sh", "has spaces or control characters"),
        ("https://example.com:99999/x", "is not a valid URL"),
        ("example.com/prov.sh", "is not an http(s) URL"),
    ],
)
def test_an_unusable_url_is_refused_with_one_line(url, problem):
    prov = resolve({"PROVISIONING_SCRIPT": url})
    assert prov.script_url == "" and prov.url_problem == problem
    assert len(prov.decisions) == 1 and "nothing is downloaded" in prov.decisions[0]


def test_urls_in_logs_hide_passwords_and_query_strings():
    shown = settings.show_url("https://me:s3cret@example.com:8443/p/prov.sh?token=abc#x")
    assert shown == "https://me:***@example.com:8443/p/prov.sh?<query hidden>"
    assert "s3cret" not in shown and "abc" not in shown


# -- login shells ------------------------------------------------------------------------------

def session(env):
    runtime = settings._resolve(env, data=settings.DEFAULTS.get, cli=set())
    return settings.session_environment(runtime, env, data=settings.DEFAULTS.get)


def test_session_exports_settings_and_vast_values_but_no_secret():
    values = session({
        "SSH_PORT": "2222", "VNC_RESOLUTION": "1280x720", "PROVISIONING_SCRIPT": "https://x/p.sh",
        "VAST_TCP_PORT_22": "40022", "PUBLIC_IPADDR": "203.0.113.7", "CONTAINER_ID": "42",
        "JUPYTER_TOKEN": "tok-secret-1", "VNC_PW": "vncsecret", "OPEN_BUTTON_TOKEN": "obt-secret",
        "CONTAINER_API_KEY": "api-secret", "SSH_PUBLIC_KEY": "ssh-ed25519 AAAA x",
        "VAST_TCP_PORT_bad-name": "1",
    })
    assert values["SSH_PORT"] == "2222" and values["VNC_RESOLUTION"] == "1280x720"
    assert values["WORKSPACE"] == "/workspace" and values["JUPYTER_PORT"] == "8888"
    assert values["PORTAL_PORT"] == "8443"
    assert values["VAST_TCP_PORT_22"] == "40022" and values["PUBLIC_IPADDR"] == "203.0.113.7"
    assert values["PROVISIONING_SCRIPT"] == "https://x/p.sh"
    text = "\n".join(f"{name}={value}" for name, value in values.items())
    for secret in ("tok-secret-1", "vncsecret", "obt-secret", "api-secret", "ssh-ed25519"):
        assert secret not in text
    assert "VAST_TCP_PORT_bad-name" not in values


def test_profile_values_are_data_never_run(tmp_path):
    nasty = "https://x/p.sh?a=$(touch ${HOME}/pwned)`touch ${HOME}/pwned2`';touch ${HOME}/p3;'\n#"
    profile = tmp_path / "red.sh"
    profile.write_text(_profile({"PROVISIONING_SCRIPT": nasty, "SSH_PORT": "22"}))
    result = subprocess.run(
        ["bash", "-c", f'. {profile} && printf %s "$PROVISIONING_SCRIPT"'],
        capture_output=True, text=True, check=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.stdout == nasty
    assert not list(tmp_path.glob("pwned*")) and not (tmp_path / "p3").exists()
    assert subprocess.run(["sh", "-n", str(profile)], check=False).returncode == 0


# -- the port check ----------------------------------------------------------------------------

PS = """---
      1       0 supervisord
     40       1 sshd
      7       0 tini
      9       7 sshd
     12       7 bash
     13      12 jupyter-lab"""


def listeners(ss: str):
    return PortListeners().process([*ss.splitlines(), *PS.splitlines()])


def test_a_port_held_by_our_supervisord_is_ours():
    result = listeners('LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=40,fd=3))')
    assert result == {22: [{"name": "sshd", "pid": 40, "supervised": True}]}


def test_a_child_sshd_gone_before_ps_looked_shares_its_parents_socket():
    # sshd forks a child per connection, which holds the listener too; by the time ps runs
    # it may be gone (no parent to walk): the socket is still ours (the image tier saw our own
    # sshd stopped as "held by sshd (pid 313)").
    result = listeners('LISTEN 0 128 0.0.0.0:22 0.0.0.0:* '
                       'users:(("sshd",pid=313,fd=3),("sshd",pid=40,fd=3))')
    assert result == {22: [{"name": "sshd", "pid": 313, "supervised": True},
                           {"name": "sshd", "pid": 40, "supervised": True}]}


def test_a_port_held_elsewhere_is_foreign_even_when_its_process_is_invisible():
    result = listeners(
        'LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=9,fd=3))\n'
        "LISTEN 0 128 [::]:8080 [::]:*\n"
        'LISTEN 0 128 0.0.0.0:8080 0.0.0.0:* users:(("jupyter-lab",pid=13,fd=5))'
    )
    assert [item["supervised"] for items in result.values() for item in items] == \
        [False, False, False]
    assert result[8080][0] == {"name": "?", "pid": None, "supervised": False}
    assert result[22][0]["name"] == "sshd"
    assert listeners("") == {}


# -- red-provision: download and run -------------------------------------------------------------

ROUTES = {
    "/ok.sh": (200, "text/x-sh", b"#!/bin/bash\necho ok\n"),
    "/plain.sh": (200, "text/plain", b"echo plain\n"),
    "/page": (200, "text/html", b"<!DOCTYPE html><html><body>Sign in</body></html>"),
    "/html-type": (200, "text/html; charset=utf-8", b"echo but served as html\n"),
    "/empty": (200, "text/plain", b""),
    "/binary": (200, "application/octet-stream", b"\x7fELF\x00\x00"),
    "/busy": (503, "text/plain", b"busy"),
}


# Requests per path, counted by the server.
HITS: dict[str, int] = {}


@pytest.fixture(scope="module")
def server():
    with serve(SERVER_PORT, ROUTES, hits=HITS) as url:
        yield url


class Lines(list):
    def __call__(self, message):
        self.append(message)


def prov(**overrides):
    values = dict(connect_timeout=2, download_timeout=2, download_retries=1, download_backoff=0)
    values.update(overrides)
    return SimpleNamespace(**values)


@pytest.mark.parametrize("path", ["/ok.sh", "/plain.sh"])
def test_a_script_is_downloaded_executable(server, tmp_path, path):
    log = Lines()
    dest, reason = download(server + path, prov(), str(tmp_path / "s.sh"), log)
    assert dest == str(tmp_path / "s.sh") and reason == ""
    assert os.stat(dest).st_mode & 0o777 == 0o700
    assert not (tmp_path / "s.sh.part").exists()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/page", "HTML page"),
        ("/html-type", "HTML page"),
        ("/empty", "empty"),
        ("/binary", "binary"),
    ],
)
def test_bodies_that_are_not_scripts_are_refused_without_retrying(server, tmp_path, path, expected):
    log = Lines()
    HITS.clear()
    dest, reason = download(server + path, prov(), str(tmp_path / "s.sh"), log)
    assert dest is None and expected in reason
    assert HITS[path] == 1
    assert not list(tmp_path.iterdir())


def test_404_is_not_retried_but_503_is(server, tmp_path):
    HITS.clear()
    dest, reason = download(server + "/nope", prov(download_retries=3), str(tmp_path / "s.sh"),
                            Lines())
    assert dest is None and reason == "HTTP 404" and HITS["/nope"] == 1
    dest, reason = download(server + "/busy", prov(download_retries=2), str(tmp_path / "s.sh"),
                            Lines())
    assert dest is None and reason.startswith("HTTP 503") and HITS["/busy"] == 3


def test_refused_and_silent_servers_fail_within_their_bounds(server, tmp_path):
    log = Lines()
    start = time.monotonic()
    dest, reason = download(f"http://127.0.0.1:{CLOSED_PORT}/x.sh",
                            prov(download_retries=2, download_backoff=1),
                            str(tmp_path / "s.sh"), log)
    assert dest is None and "curl exit 7" in reason and "after 3 attempts" in reason
    # Backoff 1 s then 2 s.
    assert 2.5 < time.monotonic() - start < 10
    start = time.monotonic()
    dest, reason = download(server + "/never", prov(), str(tmp_path / "s.sh"), log)
    assert dest is None and "curl exit 28" in reason
    assert time.monotonic() - start < 10


def test_a_script_that_never_ends_is_stopped_with_its_children(tmp_path):
    script = tmp_path / "hang.sh"
    marker = tmp_path / "child.pid"
    script.write_text(f"echo started\nsleep 300 &\necho $! > {marker}\nsleep 300\n")
    log = Lines()
    start = time.monotonic()
    outcome, _code = run_script(str(script), 2, str(tmp_path), log)
    assert outcome == "timeout" and time.monotonic() - start < 15
    child = int(marker.read_text())
    time.sleep(0.2)
    assert not os.path.exists(f"/proc/{child}") or \
        open(f"/proc/{child}/stat").read().split()[2] == "Z"
    logged = (tmp_path / "provisioning.log").read_text()
    assert " script: started" in logged


def test_a_failing_script_is_reported_and_its_output_timestamped(tmp_path):
    script = tmp_path / "fail.sh"
    script.write_text("echo to stdout\necho to stderr >&2\nexit 3\n")
    log = Lines()
    outcome, code = run_script(str(script), 30, str(tmp_path), log)
    assert (outcome, code) == ("script-failed", 3)
    assert any("exited with status 3" in line for line in log)
    logged = (tmp_path / "provisioning.log").read_text().splitlines()
    assert any(line.endswith(" script: to stdout") for line in logged)
    assert any(line.endswith(" script: to stderr") for line in logged)
    assert all(line[:4].isdigit() and line[19] == "Z" for line in logged)


def test_a_server_left_running_by_the_script_keeps_logging(tmp_path):
    script = tmp_path / "bg.sh"
    script.write_text("(sleep 1; echo from the background) &\necho done\n")
    outcome, _ = run_script(str(script), 30, str(tmp_path), Lines())
    assert outcome == "ok"
    deadline = time.monotonic() + 10
    log = tmp_path / "provisioning.log"
    while time.monotonic() < deadline and "from the background" not in log.read_text():
        time.sleep(0.2)
    assert "script: from the background" in log.read_text()


def test_status_reads_an_in_progress_marker_without_a_lock_holder_as_interrupted(tmp_path,
                                                                                   monkeypatch):
    state = tmp_path / "state"
    state.mkdir()
    (state / "in-progress").write_text(json.dumps({"pid": 999999, "by": "x", "started": "t"}))
    (state / "lock").write_text("")
    saved = tmp_path / "settings.json"
    saved.write_text(json.dumps({"values": {"provisioning_state_dir": str(state)}, "cli": []}))
    values = box_settings({}, path=str(saved))
    monkeypatch.setattr(provision_status, "settings",
                        lambda: (values, provisioning_settings(values)))
    report = provision_status.status_report()
    assert report["converge"]["state"] == "interrupted"
    with open(state / "lock") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        assert provision_status.status_report()["converge"]["state"] == "running"


def test_status_names_the_flavor_and_what_red_doctor_found(tmp_path, monkeypatch, capsys):
    from redbox.app import flavors
    from redbox.app.gpu import Gpu
    card = Gpu("NVIDIA GeForce RTX 5090", "12.0", "575.57.08", "12.9")
    choice = flavors.choose("auto", card, "upstream")
    report = {"gpu": card.as_json(), "gpu_problem": "", "flavor": choice.as_json(),
              "venv": "/opt/red/venv", "facts": None,
              "app": [{"name": "app venv", "verdict": "fail", "reason": "no app venv"}],
              "problems": [choice.warning, "app venv: no app venv"], "ok": False}
    saved = tmp_path / "settings.json"
    saved.write_text(json.dumps({"values": {"provisioning_state_dir": str(tmp_path / "state"),
                                            "visomaster_flavor": "auto"}, "cli": []}))
    values = box_settings({}, path=str(saved))
    monkeypatch.setattr(provision_status, "settings",
                        lambda: (values, provisioning_settings(values)))
    monkeypatch.setattr(provision_status, "DOCTOR_REPORT", str(tmp_path / "doctor.json"))
    # No report yet: the configured flavor, and how to get one.
    assert provision_status.status_report()["doctor"] is None
    provision_status.cmd_status(SimpleNamespace(json=False))
    assert f"flavor: auto (red-doctor has not reported on this GPU yet: {tmp_path}/doctor.json;" \
        in capsys.readouterr().out
    (tmp_path / "doctor.json").write_text(json.dumps(report))
    provision_status.cmd_status(SimpleNamespace(json=False))
    lines = capsys.readouterr().out.splitlines()
    assert "flavor: auto -> none (nothing installed): no flavor runs on NVIDIA GeForce RTX 5090 " \
           "(compute capability 12.0)" in "\n".join(lines)
    assert (
        "doctor: NVIDIA GeForce RTX 5090 (sm 12.0, driver 575.57.08, CUDA 12.9); no flavor; "
        "the app cannot run: VisoMaster is NOT installed: no flavor runs on ") in "\n".join(lines)
    assert lines[-3:-1] == [f"  problem: {choice.warning}", "  problem: app venv: no app venv"]
    provision_status.cmd_status(SimpleNamespace(json=True))
    written = json.loads(capsys.readouterr().out)
    assert written["doctor"] == report and written["flavor"] == "auto"


def test_the_shell_scripts_are_thin_and_identical_in_effect():
    scripts = [ROOT / "files/provisioning/vast_ai_provisioning_script.sh",
               ROOT / "files/provisioning/src/provisioning_script.sh",
               ROOT / "files/provisioning/opt/red/bin/red-onstart"]
    commands = []
    for path in scripts:
        lines = [line for line in path.read_text().splitlines()
                 if line and not line.startswith("#")]
        assert lines[0] == "set -euo pipefail" and len(lines) == 2, path
        commands.append(lines[1])
    assert commands[0].split(" --by ")[0] == commands[1].split(" --by ")[0] == \
        "exec /opt/red/bin/red-provision run"


# -- the plan on @fake hosts -------------------------------------------------------------------

def plan(tmp_path, *data, ss_22=None):
    responses = {"-release": DEBIAN_12}
    if ss_22 is not None:
        responses["ss -Hltnp '( sport = :22 "] = ss_22
    inventory = tmp_path / "inventory.py"
    inventory.write_text(
        f"box = [('@fake/box', {{'fake_responses': {responses!r}, 'fake_delay': 0, "
        "'fake_delay_jitter': 0, 'python_version': '3.11'})]\n"
    )
    result = run_plan(data=data, inventory=str(inventory))
    return result.code, result.output


def test_plan_ships_the_scripts_and_notebooks_at_build_time(tmp_path):
    code, output = plan(tmp_path, "red_phase=install")
    assert code == 0, output[-3000:]
    for dest in ("/vast_ai_provisioning_script.sh", "/src/provisioning_script.sh",
                 "/opt/red/bin/red-onstart",
                 "/notebooks/find_provisioning_script.ipynb.red-new",
                 "/notebooks/check_visomaster_and_gpu.ipynb.red-new"):
        assert dest in output, dest
    assert "Upload /etc/profile.d/red.sh" not in output
    # The box library goes on the box, its tools linked, before any concern ships a tool.
    started = "--> Starting operation: "
    assert output.index(f"{started}Set up the box-side runtime | Build and install the box "
                        "library (redbox)") \
        < output.index(f"{started}Set up the box-side runtime | Link the box library's tools") \
        < output.index(f"{started}Set up provisioning | Upload /opt/red/bin/red-onstart")
    assert "ln -sfn /opt/red/tool/bin/red-provision /opt/red/bin/red-provision" in output


def test_plan_skips_our_sshd_when_another_holds_its_port(tmp_path):
    held = ('LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=9,fd=3))\n---\n'
            "    9     1 sshd")
    code, output = plan(tmp_path, "red_phase=configure", ss_22=held)
    assert code == 0, output[-3000:]
    assert "sshd: port 22 is held by sshd (pid 9): not starting a second one" in output
    assert "Upload /etc/profile.d/red.sh" in output
    code, output = plan(tmp_path, "red_phase=configure")
    assert code == 0 and "is held by" not in output


# -- the notebooks -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["find_provisioning_script.ipynb",
                                  "check_visomaster_and_gpu.ipynb"])
def test_shipped_notebooks_are_clean_nbformat_4(name):
    notebook = json.loads((NOTEBOOKS / name).read_text())
    assert notebook["nbformat"] == 4 and notebook["metadata"]["kernelspec"]["name"] == "python3"
    ids = [cell["id"] for cell in notebook["cells"]]
    assert len(set(ids)) == len(ids)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
            compile("".join(cell["source"]), name, "exec")
            # Troubleshooting only: nothing is installed from a notebook.
            assert "pip install" not in "".join(cell["source"])


def test_status_prints_the_apps_current_step_and_percent(tmp_path, monkeypatch, capsys):
    from redbox.core import progress
    status = tmp_path / "visomaster-status.json"
    progress.write(str(status), "checkout", "done", 100, "cloned")
    progress.write(str(status), "pip", "running", 42, "collecting torch (12 packages so far)")
    saved = tmp_path / "settings.json"
    saved.write_text(json.dumps({"values": {"provisioning_state_dir": str(tmp_path / "state"),
                                            "visomaster_status_file": str(status)}, "cli": []}))
    values = box_settings({}, path=str(saved))
    monkeypatch.setattr(provision_status, "settings",
                        lambda: (values, provisioning_settings(values)))
    assert provision_status.status_report()["app"]["percent"] == 42
    provision_status.cmd_status(type("Args", (), {"json": False})())
    out = capsys.readouterr().out
    assert "visomaster: pip running 42%: collecting torch (12 packages so far) (at " in out
    assert "  last: checkout done 100%: cloned" in out
