"""redbox.appwait: when the app's program may start the app at a container start."""

from __future__ import annotations

import argparse
import os

import pytest

from redbox import appwait, progress, state

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
    a = argparse.Namespace(app_dir=str(tmp_path / "app"), onstart=str(tmp_path / "onstart.json"),
                           status=str(tmp_path / "status.json"), timeout=600.0, grace=90.0)
    os.makedirs(a.app_dir)
    return a


def flow(a, status, start=THIS_START, pid=None):
    state.write(a.onstart, {"status": status, "container_start": start,
                            "pid": pid or os.getpid()})


def checkout(a):
    with open(os.path.join(a.app_dir, "main.py"), "w", encoding="utf-8") as handle:
        handle.write("print('app')\n")


@pytest.mark.parametrize("setup, events, code, waited", [
    # A baked app, nothing installing: start at once.
    ("checkout", {}, 0, 0),
    # No checkout, the boot's flow installs it: wait for main.py.
    ("running", {30: "checkout"}, 0, 30),
    # No checkout and the flow has not begun: wait for it, within the grace.
    ("nothing", {20: "running", 40: "checkout"}, 0, 40),
    # No checkout, no flow within the grace: nothing to start.
    ("nothing", {}, 1, 90),
    # An older start's flow record counts as not begun.
    ("old-start", {}, 1, 90),
    # The flow finished without a checkout (a failed clone): nothing to start, at once.
    ("finished", {}, 1, 0),
    # The flow never ends: bounded by the timeout.
    ("running", {}, 1, 600),
])
def test_before_waits_for_the_boots_install_and_no_longer(box, setup, events, code, waited):
    actions = {"checkout": lambda: checkout(box), "running": lambda: flow(box, "running"),
               "finished": lambda: flow(box, "ok"), "old-start": lambda: flow(box, "running",
                                                                              "boot/1"),
               "nothing": lambda: None}
    actions[setup]()
    clock = Clock({at: actions[name] for at, name in events.items()})
    assert appwait.before(box, sleep=clock.sleep, clock=clock) == code
    assert clock.now == waited


def test_before_waits_while_the_packages_install_even_with_a_checkout(box):
    checkout(box)
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
])
def test_after_crash_counts_an_exit_during_the_install_as_none(box, setup, code, waited):
    flow(box, "running" if setup == "running" else "ok")
    clock = Clock({25: lambda: flow(box, "ok")})
    assert appwait.after_crash(box, sleep=clock.sleep, clock=clock) == code
    assert clock.now == waited


def test_waiting_is_said_once_per_reason_not_every_second(box, capsys):
    flow(box, "running")
    clock = Clock({200: lambda: checkout(box)})
    appwait.before(box, sleep=clock.sleep, clock=clock)
    lines = capsys.readouterr().out.splitlines()
    # Once at first, then once a minute: 200 s of waiting is 4 lines, not 200.
    assert len(lines) == 4 and all("waiting: no checkout" in line for line in lines)
