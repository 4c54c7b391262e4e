"""redbox.app.wait: when the app's program may start the app at a container start."""

from __future__ import annotations

import argparse
import os

import pytest

from redbox.app import wait as appwait
from redbox.app.install import stamp_path
from redbox.core import progress, state

THIS_START = "boot/123"


class Clock:
    """A fake clock: each sleep advances it, and may change the world (``events``)."""

    def __init__(self, events=None):
        self.now, self.events = 0.0, dict(events or {})

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        for at in sorted(self.events):
            if at <= self.now:
                self.events.pop(at)()


@pytest.fixture
def box(tmp_path, monkeypatch):
    monkeypatch.setattr(appwait, "container_start", lambda: THIS_START)
    a = argparse.Namespace(app_dir=str(tmp_path / "app"), venv=str(tmp_path / "venv"),
                           onstart=str(tmp_path / "onstart.json"),
                           status=str(tmp_path / "status.json"), timeout=600.0, grace=90.0)
    os.makedirs(a.app_dir)
    os.makedirs(a.venv)
    return a


def flow(a, status, start=THIS_START, pid=None, phase="app"):
    state.write(a.onstart, {"status": status, "container_start": start, "phase": phase,
                            "pid": pid or os.getpid()})


def checkout(a):
    with open(os.path.join(a.app_dir, "main.py"), "w", encoding="utf-8") as handle:
        handle.write("print('app')\n")


def install(a):
    checkout(a)
    with open(stamp_path(a.venv), "w", encoding="utf-8") as handle:
        handle.write("key\n")


@pytest.mark.parametrize("setup, events, code, waited", [
    # Installed before this start (baked in, an earlier boot): start at once.
    ("installed", {}, 0, 0),
    # No checkout, the boot's flow installs it: wait for the flow's app phase to end, not for
    # main.py alone (the packages come after the checkout).
    ("installing", {10: "checkout", 30: "finished"}, 0, 30),
    # The flow has not begun: wait for it, within the grace.
    ("nothing", {20: "installing", 40: "install", 41: "finished"}, 0, 41),
    # No checkout, no flow within the grace: nothing to start.
    ("nothing", {}, 1, 90),
    # An older start's flow record counts as not begun.
    ("old-start", {}, 1, 90),
    # The flow finished without a checkout (a failed clone): nothing to start, at once.
    ("finished", {}, 1, 0),
    # The flow went on to the user's script with the app installed: not waited for.
    ("installing", {5: "install", 6: "script"}, 0, 6),
    # The flow never ends: bounded by the timeout.
    ("installing", {}, 1, 600),
])
def test_before_waits_for_the_boots_install_and_no_longer(box, setup, events, code, waited):
    actions = {"installed": lambda: install(box), "checkout": lambda: checkout(box),
               "install": lambda: install(box),
               "installing": lambda: flow(box, "running"),
               "script": lambda: flow(box, "running", phase="script"),
               "finished": lambda: flow(box, "ok"),
               "old-start": lambda: flow(box, "running", "boot/1"),
               "nothing": lambda: None}
    actions[setup]()
    clock = Clock({at: actions[name] for at, name in events.items()})
    assert appwait.before(box, sleep=clock.sleep, clock=clock) == code
    assert clock.now == waited


def test_before_waits_while_the_packages_install_even_when_installed_before(box):
    install(box)
    progress.write(box.status, "pip", "running", 10, "collecting torch")
    clock = Clock({15: lambda: progress.write(box.status, "pip", "done", 100)})
    assert appwait.before(box, sleep=clock.sleep, clock=clock) == 0
    assert clock.now == 15


def test_a_flow_whose_process_is_gone_is_not_waited_for(box):
    flow(box, "running", pid=2 ** 22 + 17)  # no such pid: killed
    assert appwait.before(box, sleep=Clock().sleep, clock=Clock()) == 1


@pytest.mark.parametrize("setup, code, waited", [
    ("running", 0, 25),     # an exit during the boot's install: wait, then start again
    ("finished", 1, 0),     # no install running: a real crash
    ("script", 1, 0),       # the user's script runs: the app's install is done, a real crash
])
def test_after_crash_counts_an_exit_during_the_install_as_none(box, setup, code, waited):
    {"running": lambda: flow(box, "running"), "finished": lambda: flow(box, "ok"),
     "script": lambda: flow(box, "running", phase="script")}[setup]()
    clock = Clock({25: lambda: flow(box, "ok")})
    assert appwait.after_crash(box, sleep=clock.sleep, clock=clock) == code
    assert clock.now == waited


def test_waiting_is_said_once_per_reason_not_every_second(box, capsys):
    flow(box, "running")
    clock = Clock({200: lambda: flow(box, "ok")})
    appwait.before(box, sleep=clock.sleep, clock=clock)
    lines = capsys.readouterr().out.splitlines()
    # Once at first, then once a minute: 200 s of waiting is 4 lines, not 200.
    assert len(lines) == 4 and all("waiting: the app in" in line for line in lines)
