"""
Live boxes: the deploy converging fresh boxes over SSH through inventories/vast.py.

In order, on one fresh box: the inventory lists it; the first run converges it and starts the
services; a second run changes nothing; the image tier's testinfra suite passes against it
over SSH; a dry run with a changed setting shows exactly that change and changes nothing; the
real run applies it, restarting only Xvnc (and the desktop, whose X server that is). The same
instance moved to another route keeps its pinned host key. Then a re-rented box on the same
ip:port: refused under its old instance id, trusted under its new one. Then a fleet of three
fresh boxes in one run, and a run where one box is unreachable. The inventory lists the boxes
from the loopback v1 API stand-in, two instances a page.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from operations.provisioning import PAM_STEP
from tests.boxes import PROGRAMS
from tests.live import freshbox
from tests.live.freshbox import ROOT, TIMINGS, Operator

XVNC_CONF = "/etc/supervisor/conf.d/xvnc.conf"
XVNC_UPLOAD = f"Upload {XVNC_CONF}"
XVNC_APPLY = "Apply the changed supervisor program xvnc"
# The VNC resolution: the default, and the one the dry run and the apply ask for.
OLD, NEW = "1920x1080", "1600x900"


@pytest.fixture(scope="module")
def box(freshbox_image, operator: Operator):
    started = freshbox.start(0, operator.public_key, freshbox_image)
    operator.list_instances([started.instance()])
    try:
        yield started
    finally:
        freshbox.remove(started)


@pytest.fixture(scope="module")
def first_run(box, operator: Operator):
    run = operator.deploy("-y", "--json")
    TIMINGS["first converge over SSH, 1 fresh box"] = run.seconds
    return run


def program_pids_when_running(box, timeout: float = 60) -> dict[str, int]:
    freshbox.wait_running(box, timeout)
    return box.program_pids()


def test_inventory_lists_the_running_box(box, operator):
    run = operator.pyinfra("debug-inventory")
    assert run.returncode == 0, run.tail()
    output = run.stdout + run.stderr
    assert box.host_name in output
    assert f'"ssh_port": {box.ports["box_ssh"]}' in output
    assert '"ssh_hostname": "127.0.0.1"' in output
    assert f'"vast_label": "{box.label}"' in output


def test_first_converge_over_ssh_starts_the_services(box, operator, first_run):
    assert first_run.returncode == 0, first_run.tail()
    totals = first_run.totals
    assert totals["error"] == 0 and totals["success"] > 20, totals
    # The deploy started supervisord itself: the box's PID 1 is its own init, not ours.
    TIMINGS["services up after the first converge"] = freshbox.wait_running(box)
    assert set(box.program_pids()) >= set(PROGRAMS)
    assert box.sh("tr '\\0' ' ' < /proc/1/cmdline").startswith("/bin/sh /usr/local/sbin/")
    # Red's sshd answers on SSH_PORT with the key, presenting this box's pinned host key.
    login = operator.ssh(box, "id -u", port=box.ports["sshd"])
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == "0"


def test_second_converge_changes_nothing(box, operator, first_run):
    run = operator.deploy("-y", "--json")
    TIMINGS["no-op converge over SSH, 1 box"] = run.seconds
    assert run.returncode == 0, run.tail()
    assert run.totals["success"] == 0, run.changed_ops()
    assert run.totals["error"] == 0
    assert run.totals["no_change"] > 20


def test_image_tier_testinfra_suite_passes_over_ssh(box, operator, first_run):
    # What the README tells users to run against a rented box, here against the loopback one.
    command = [
        sys.executable, "-m", "pytest", "tests/image/test_services.py", "-q",
        "-p", "no:cacheprovider",
        f"--hosts=ssh://root@127.0.0.1:{box.ports['box_ssh']}",
        f"--ssh-config={operator.ssh_config(box)}",
    ]
    start = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=operator.env(), capture_output=True,
                            text=True, timeout=600, check=False)
    TIMINGS["testinfra suite over SSH"] = time.monotonic() - start
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\b\d+ passed\b", summary), summary
    assert "skipped" not in summary, result.stdout[-3000:]


def diff_lines(stderr: str) -> list[str]:
    """The removed and added lines of pyinfra's --diff output."""
    return [line.strip() for line in stderr.splitlines() if re.match(r"^\s+[-+] \S", line)]


@pytest.fixture(scope="module")
def resolution_dry_run(box, operator, first_run):
    """A dry run with one setting changed, and the box's state around it."""
    before = {"conf": box.sh(f"cat {XVNC_CONF}"), "pids": program_pids_when_running(box)}
    run = operator.deploy("--dry", "--diff", "--json", "--data", f"vnc_resolution={NEW}")
    TIMINGS["dry run with --diff, 1 box"] = run.seconds
    after = {"conf": box.sh(f"cat {XVNC_CONF}"), "pids": box.program_pids()}
    return run, before, after


def planned_changes(run) -> list[str]:
    return [op["name"].split(" | ", 1)[-1] for op in run.json()["plan"]
            if op["hosts_with_change"]]


def test_dry_run_diff_shows_only_the_resolution_change(box, resolution_dry_run):
    run, before, after = resolution_dry_run
    assert run.returncode == 0, run.tail()
    # The files that carry the resolution change (Xvnc's program config; the login shells'
    # settings export, when the deploy writes one), each shown with its diff; nothing else.
    changes = planned_changes(run)
    assert XVNC_UPLOAD in changes, changes
    uploads = [name for name in changes if name.startswith("Upload ")]
    # The sessions' PAM block carries the resolution too: a block in a file, not an upload.
    assert set(changes) - set(uploads) <= {PAM_STEP}, changes
    assert run.stderr.count(f"[{box.host_name}] Will modify ") == len(uploads), run.stderr
    # pyinfra cannot know a dry run's `_if` outcomes: it lists the supervisor steps that only
    # run for a changed config as "conditional". Nothing else may be.
    conditional = [op["name"].split(" | ", 1)[-1] for op in run.json()["plan"]
                   if op["hosts_with_conditional_change"]]
    assert all(name.startswith(("Apply the changed supervisor program ", "Restart "))
               for name in conditional), conditional
    # Every changed line is the old resolution turned into the new one.
    lines = diff_lines(run.stderr)
    removed = [line[2:] for line in lines if line.startswith("-")]
    added = [line[2:] for line in lines if line.startswith("+")]
    assert removed and len(removed) == len(added), run.stderr[-4000:]
    for old, new in zip(removed, added, strict=True):
        assert OLD in old and old.replace(OLD, NEW) == new, (old, new)
    assert (f"command=/usr/bin/env RED_DISPLAY=1 RED_VNC_PORT={box.ports['xvnc']} "
            f"RED_VNC_RESOLUTION={NEW} RED_VNC_DEPTH=24 "
            "RED_VNC_PASSWORD_FILE=/etc/red/secrets/vnc_password /opt/red/bin/red-xvnc") in added
    # Nothing changed on the box.
    assert after == before


def test_apply_changes_what_the_dry_run_showed_and_restarts_only_xvnc(
        box, operator, resolution_dry_run):
    dry_run, before, _ = resolution_dry_run
    run = operator.deploy("-y", "--json", "--data", f"vnc_resolution={NEW}")
    assert run.returncode == 0, run.tail()
    assert run.totals["error"] == 0
    assert set(run.changed_ops()) == {*planned_changes(dry_run), XVNC_APPLY}, run.changed_ops()
    after = program_pids_when_running(box)
    assert after["xvnc"] != before["pids"]["xvnc"]
    assert f"-geometry {NEW} " in box.sh("ps -o args= -C Xvnc")
    # The desktop session ends with its X server, and supervisor starts it again; every
    # other program keeps its process.
    for program in set(PROGRAMS) - {"xvnc", "desktop"}:
        assert after[program] == before["pids"][program], (program, before, after)
    again = operator.deploy("-y", "--json", "--data", f"vnc_resolution={NEW}")
    assert again.returncode == 0 and again.totals["success"] == 0, again.changed_ops()


def test_the_same_instance_on_another_route_keeps_its_pin(box, operator, first_run):
    # Vast moves the instance to its SSH proxy: same id, another host:port (Red's sshd, which
    # serves the box's host keys), same key. Accepted from the pin, not trusted anew.
    pin = operator.known_hosts_file(box)
    keys = [line.split()[1:] for line in pin.read_text().splitlines()]
    assert keys and all(line.startswith(f"[127.0.0.1]:{box.ports['box_ssh']} ")
                        for line in pin.read_text().splitlines())
    operator.list_instances([box.proxied_instance()])
    try:
        moved = operator.pyinfra("exec", "--key", str(operator.key), "--", "true")
    finally:
        operator.list_instances([box.instance()])
    assert moved.returncode == 0, moved.tail()
    assert "Added host key" not in moved.stderr, moved.tail()
    lines = pin.read_text().splitlines()
    assert [line.split()[1:] for line in lines] == keys
    assert all(line.split()[0] == f"[localhost]:{box.ports['sshd']}" for line in lines)


def test_rerented_box_on_the_same_address_is_refused_under_its_old_id(
        freshbox_image, box, operator, first_run):
    # Vast destroys the instance and rents the ip:port out again: new box, new host key.
    freshbox.remove(box)
    freshbox.start(0, operator.public_key, freshbox_image)
    same_id = operator.pyinfra("exec", "--key", str(operator.key), "--", "true")
    assert same_id.returncode != 0
    assert f"[{box.host_name}] SSH host key error" in same_id.stderr, same_id.tail()
    # The new rental has a new instance id: its own known_hosts file, trusted on first use.
    renewed = dict(box.instance(), id=box.instance_id + 500)
    operator.list_instances([renewed])
    new_id = operator.pyinfra("exec", "--key", str(operator.key), "--", "true")
    assert new_id.returncode == 0, new_id.tail()
    pinned = operator.home / ".ssh" / "red_known_hosts" / f"vast-{renewed['id']}"
    assert pinned.read_text().strip()
    assert pinned.stat().st_mode & 0o777 == 0o600


@pytest.fixture(scope="module")
def fleet(freshbox_image, operator: Operator):
    # The single box is done: the 2 cores are the fleet's.
    freshbox.remove_index(0)
    boxes = []
    try:
        for index in (1, 2, 3):
            boxes.append(freshbox.start(index, operator.public_key, freshbox_image))
        operator.list_instances([started.instance() for started in boxes])
        yield boxes
    finally:
        freshbox.remove(*boxes)


def test_fleet_of_three_converges_in_one_parallel_run(fleet, operator):
    run = operator.deploy("-y", "--json")
    TIMINGS["first converge over SSH, fleet of 3 fresh boxes"] = run.seconds
    assert run.returncode == 0, run.tail()
    # Three instances, two a page: the inventory followed next_token to the second page.
    assert any(request["query"].get("after_token") for request in operator.api.seen)
    assert run.totals["error"] == 0 and not run.json()["results"]["failed_hosts"]
    started = {}
    for member in fleet:
        freshbox.wait_running(member)
        started[member.host_name] = int(member.sh("stat -c %Y /var/run/supervisor.sock"))
    # In parallel: pyinfra runs each step on every box at once, so the three boxes reach the
    # last step (starting supervisord) together, not one full converge apart.
    spread = max(started.values()) - min(started.values())
    assert spread < max(10, run.seconds / 4), (started, run.seconds)
    noop = operator.deploy("-y", "--json")
    TIMINGS["no-op converge over SSH, fleet of 3 boxes"] = noop.seconds
    assert noop.returncode == 0 and noop.totals["success"] == 0, noop.changed_ops()


def test_an_unreachable_box_fails_alone_and_is_named(fleet, operator):
    reachable = fleet[:2]
    gone = freshbox.instance(freshbox.UNREACHABLE_ID, "red-live-gone", freshbox.UNREACHABLE_PORT)
    gone_name = f"vast-{freshbox.UNREACHABLE_ID}"
    operator.list_instances([member.instance() for member in reachable] + [gone])
    # A change for the reachable boxes to apply while the third one cannot be reached.
    run = operator.deploy("-y", "--json", "--data", "vnc_resolution=1280x720")
    assert run.returncode == 1, run.tail()
    assert run.json()["results"]["failed_hosts"] == [gone_name]
    assert f"[{gone_name}] Could not connect" in run.stderr
    assert run.totals["error"] == 0
    changed = run.changed_ops()
    assert sorted(changed[XVNC_UPLOAD]) == sorted(member.host_name for member in reachable)
    for member in reachable:
        freshbox.wait_running(member)
        assert "-geometry 1280x720 " in member.sh("ps -o args= -C Xvnc")
