"""
A live box is a Red box: one fresh box in Vast's ssh mode (/.launch; the box's own sshd, Vast's,
holds SSH_PORT), converged over SSH through inventories/vast.py, then left to itself.

In order: the first converge settles it (no second sshd on the held port, its decisions in the
box's /logs/startup.log) and a second changes nothing; on the box, the seed's two scripts
converge it with 0 changes, `red-provision status` answers and the diagnostic notebook runs
clean; another SSH converge changes nothing; a newer controller changes the deploy copy only;
/root/onstart.sh keeps the user's lines and gains Red's block, which brings every service back
when the container restarts, with no pyinfra run from outside; the block can be removed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time

import pytest

from operations.runtime import DEPLOY_DIR, DEPLOY_TREE, VERSION_FILE, tree_version
from tests.boxes import PROGRAMS, podman, restart
from tests.fixtures.notebook_runner import RUNNER
from tests.live import freshbox
from tests.live.freshbox import DEPLOY_DATA, ROOT, TIMINGS, Operator

INDEX = 4
SCRIPTS = ("/vast_ai_provisioning_script.sh", "/src/provisioning_script.sh")
STATE = "/var/lib/red/provisioning"
COPY_OP = f"Copy the deploy to {DEPLOY_DIR} (stamped with its version)"
# The template's on-start script as the user wrote it (Vast saves it as /root/onstart.sh).
USER_ONSTART = "# my own on-start\necho \"user line ran $(date +%s)\" >> /root/user-onstart.log\n"
# Vast's sshd holds SSH_PORT: ours stays stopped; everything else runs.
OURS = tuple(program for program in PROGRAMS if program != "sshd")


@pytest.fixture(scope="module")
def box(freshbox_image, operator: Operator):
    """The box, with the user's /root/onstart.sh, before any converge."""
    ports = freshbox.box_ports(INDEX)
    started = freshbox.start(INDEX, operator.public_key, freshbox_image, extra_env={
        "SSH_PORT": str(ports["box_ssh"]), "FRESHBOX_LAUNCH": "ssh"})
    started.sh(f"printf %s {shlex.quote(USER_ONSTART)} > /root/onstart.sh")
    operator.list_instances([started.instance()])
    yield started
    freshbox.remove(started)


@pytest.fixture(scope="module")
def first_run(box, operator: Operator):
    TIMINGS["first converge over SSH, Vast ssh-mode box"] = (run := operator.deploy(
        "-y", "--json")).seconds
    return run


def states(box) -> dict[str, str]:
    status = box.sh("supervisorctl status", check=False)
    return {line.split()[0]: line.split()[1] for line in status.splitlines() if line.strip()}


def wait_services(box, timeout: float = 180) -> float:
    """Every program of ours RUNNING, our sshd STOPPED (Vast's holds its port); seconds."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        now = states(box)
        if all(now.get(name) == "RUNNING" for name in OURS) and now.get("sshd") == "STOPPED" \
                and all(freshbox.answers(box, name, box.ports[name])
                        for name in ("jupyter", "novnc", "xvnc")):
            return time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(box.sh("supervisorctl status; tail -n 30 /logs/*.log", check=False))


def ssh_listeners(box) -> list[str]:
    table = box.sh(f"ss -Hltnp 'sport = :{box.ports['box_ssh']}'", check=False)
    return re.findall(r"pid=(\d+)", table)


def test_first_converge_settles_a_bare_ssh_mode_box(box, first_run):
    assert first_run.returncode == 0, first_run.tail()
    assert first_run.totals["error"] == 0
    TIMINGS["services up after the first converge (ssh mode)"] = wait_services(box)
    # Vast's sshd alone holds SSH_PORT: ours never started, so never fought for it.
    assert len(set(ssh_listeners(box))) == 1
    assert "Address already in use" not in box.sh("cat /logs/sshd.log 2>/dev/null", check=False)
    assert "autostart=false" in box.sh("cat /etc/supervisor/conf.d/sshd.conf")
    # The decisions of this SSH converge are on the box, not only the controller's warnings.
    startup = box.sh("cat /logs/startup.log")
    assert f"ports: sshd: port {box.ports['box_ssh']} is held by sshd (pid " in startup
    assert "launch: Vast's ssh mode (/.launch)" in startup
    assert "settings: JUPYTER_TOKEN unset: using the generated secret" in startup


def test_second_converge_leaves_nothing_to_change(box, operator, first_run):
    run = operator.deploy("-y", "--json")
    TIMINGS["no-op converge over SSH (ssh mode)"] = run.seconds
    assert run.returncode == 0, run.tail()
    assert run.totals["success"] == 0, run.changed_ops()


def test_the_box_has_the_runtime_the_image_has(box, first_run):
    assert box.sh(f"cat {DEPLOY_DIR}/{VERSION_FILE}").strip() == tree_version(ROOT)
    assert box.sh(f"ls {DEPLOY_DIR}").split() == sorted(DEPLOY_TREE)
    # Byte-compiled when it was copied, by the tool venv's Python (its imported packages only).
    tag = box.sh("/opt/red/tool/bin/python3 -c 'import sys; print(sys.implementation.cache_tag)'")
    compiled = box.sh(f"ls {DEPLOY_DIR}/operations/__pycache__")
    assert f"_files.{tag.strip()}.pyc" in compiled
    version = box.sh("/opt/red/tool/bin/pyinfra --version")
    assert "3.10" in version, version
    assert box.sh("cd / && /opt/red/tool/bin/python3 -c 'import redbox; print(redbox.__file__)'"
                  ).strip().endswith("/site-packages/redbox/__init__.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_seed_scripts_converge_the_box_with_no_change(box, first_run, script):
    result = podman("exec", box.name, script, check=False, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    completed = json.loads(box.sh(f"cat {STATE}/completed"))
    assert completed["by"] == script and completed["changes"] == 0, completed


def test_a_converge_typed_in_an_ssh_session_agrees_with_the_ssh_converge(box, operator,
                                                                         first_run):
    """
    A session's env is /etc/environment's (the ports and resolution Red exported, none of the
    template's env): a converge typed there still resolves the container's settings, so box
    converge -> SSH converge -> box converge changes nothing after the first.
    """
    settings_file = "/etc/red/settings.json"
    written = box.sh(f"cat {settings_file}")
    session = operator.ssh(box, "env", timeout=60)
    assert session.returncode == 0, session.stderr
    # The gap this test is about: Red's exports are there, the template's env is not.
    assert f"VNC_PORT={box.ports['xvnc']}" in session.stdout.splitlines()
    assert "SSH_PUBLIC_KEY=" not in session.stdout
    assert "VISOMASTER_CHECKOUT=" not in session.stdout
    for by in ("a session", "the SSH converge", "a session again"):
        if by == "the SSH converge":
            run = operator.deploy("-y", "--json")
            assert run.returncode == 0, run.tail()
            assert run.totals["success"] == 0, run.changed_ops()
        else:
            result = operator.ssh(box, SCRIPTS[0], timeout=600)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            completed = json.loads(box.sh(f"cat {STATE}/completed"))
            assert completed["changes"] == 0, (by, completed)
        assert box.sh(f"cat {settings_file}") == written, by


def test_red_provision_status_answers(box, first_run):
    result = podman("exec", box.name, "/opt/red/bin/red-provision", "status", check=False)
    assert result.returncode == 0, result.stderr
    assert "converge (red-provision run): completed" in result.stdout
    assert "exists  /vast_ai_provisioning_script.sh" in result.stdout


def test_the_diagnostic_notebook_runs_clean(box, first_run):
    result = subprocess.run(
        ["podman", "exec", "-i", box.name, "/opt/red/jupyter/bin/python", "-",
         "/notebooks/find_provisioning_script.ipynb", "{}"],
        input=RUNNER, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    text = "\n".join(json.loads(result.stdout.strip().splitlines()[-1]))
    assert "exists   /vast_ai_provisioning_script.sh" in text
    assert "Converge (red-provision run): completed" in text


def test_an_ssh_converge_after_the_boxs_own_changes_nothing(box, operator, first_run):
    run = operator.deploy("-y", "--json")
    assert run.returncode == 0, run.tail()
    assert run.totals["success"] == 0, run.changed_ops()


def test_a_newer_controller_updates_the_deploy_copy_only(box, operator, first_run, tmp_path):
    newer = tmp_path / "newer"
    newer.mkdir()
    for name in (*DEPLOY_TREE, "inventories"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, newer / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, newer / name)
    with (newer / "deploy.py").open("a") as handle:
        handle.write("# a newer controller\n")
    command = [freshbox.PYINFRA, "inventories/vast.py", "deploy.py", "--key", str(operator.key),
               *DEPLOY_DATA, "-y", "--json"]
    try:
        for expected in ({COPY_OP}, set()):
            result = subprocess.run(command, cwd=newer, env=operator.env(), capture_output=True,
                                    text=True, timeout=900, check=False)
            run = freshbox.Run(result.returncode, result.stdout, result.stderr, 0)
            assert run.returncode == 0, run.tail()
            assert set(run.changed_ops()) == expected, run.changed_ops()
        assert box.sh(f"cat {DEPLOY_DIR}/{VERSION_FILE}").strip() == tree_version(newer)
        assert "# a newer controller" in box.sh(f"tail -n 1 {DEPLOY_DIR}/deploy.py")
    finally:
        back = operator.deploy("-y", "--json")
        assert back.returncode == 0 and set(back.changed_ops()) == {COPY_OP}, back.tail()


def test_onstart_keeps_the_users_lines_and_gains_reds_block(box, first_run):
    text = box.sh("cat /root/onstart.sh")
    assert text.startswith(USER_ONSTART), text
    block = text[len(USER_ONSTART):]
    assert block.count("# BEGIN Red on-start block") == 1
    assert block.count("# END Red on-start block") == 1
    assert "/opt/red/bin/red-onstart --once-per-boot" in block


def test_a_restart_brings_every_service_back_without_the_controller(box, first_run):
    box.sh(f"rm -f {STATE}/completed /root/user-onstart.log")
    start = time.monotonic()
    restart(box.name)
    ready = wait_services(box, timeout=300)
    TIMINGS["restart to ready, no controller (ssh mode)"] = time.monotonic() - start
    assert ready
    # The box converged itself, started by Red's block (after the user's own line ran).
    completed = json.loads(box.sh(f"cat {STATE}/completed"))
    assert completed["by"] == "red-onstart", completed
    assert "user line ran" in box.sh("cat /root/user-onstart.log")
    onstart = json.loads(box.sh(f"cat {STATE}/onstart.json"))
    assert onstart["status"] in ("ok", "running"), onstart
    assert len(set(ssh_listeners(box))) == 1


def test_the_block_is_removable(box, operator, first_run):
    run = operator.deploy("-y", "--json", "--data", "provisioning_onstart_block=false")
    assert run.returncode == 0, run.tail()
    assert "Remove Red's on-start block in /root/onstart.sh" in run.changed_ops()
    assert box.sh("cat /root/onstart.sh") == USER_ONSTART
