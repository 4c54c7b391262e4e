"""
When the app's program may start the app: at a container start the boot's provisioning (the
on-start flow, in the background) clones and installs it after supervisord has already started
every program. Without waiting, an autostarted app finds no checkout (or half its packages),
exits, and supervisor gives up on it (FATAL) before the install is done.

    red-app-wait before --app-dir DIR [...]   # 0: start it; 1: nothing to start
    red-app-wait after-crash [...]            # 0: the install ran: start again

``before`` waits while a checkout or pip step runs, and, unless the app was installed before
this start (a checkout and red-app-pip's stamp in the venv: baked in, or an earlier boot's),
while the boot's flow installs it (its app phase, or it has not begun within ``--grace``
seconds). The user's PROVISIONING_SCRIPT, which runs after, is not waited for.
``after-crash`` waits for the flow's install when the app failed during it: not a crash.
Both are bounded by ``--timeout`` and say once what they wait for, then every minute.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from redbox.app.install import stamp_path
from redbox.core import progress, state
from redbox.core.log import timestamp
from redbox.core.pids import alive, container_start

INSTALL_STEPS = ("checkout", "pip")
REPORT_EVERY = 60.0


def flow_state(onstart_json: str, this_start: str) -> str:
    """
    The boot's on-start flow in this container start: installing (its services or app phase:
    the app's converge comes next or runs), running (the user's script), finished or not-begun.
    """
    record = state.read(onstart_json)
    if not isinstance(record, dict) or record.get("container_start") != this_start:
        return "not-begun"
    if record.get("status") == "running" and alive(record.get("pid")):
        return "running" if record.get("phase") == "script" else "installing"
    return "finished"


def installed(app_dir: str, venv: str) -> bool:
    """A checkout with packages installed for it (red-app-pip's stamp in the venv)."""
    return os.path.isfile(os.path.join(app_dir, "main.py")) and os.path.isfile(stamp_path(venv))


def install_step(status_file: str) -> str | None:
    """A line for the checkout or pip step running right now, else None."""
    status = progress.running(status_file)
    if status and status.get("step") in INSTALL_STEPS:
        return progress.line(status)
    return None


def _say(message: str) -> None:
    print(f"{timestamp()} red-visomaster: {message}", flush=True)


def _wait(pending, timeout: float, sleep=time.sleep, clock=time.monotonic) -> str | None:
    """Poll ``pending()`` (a reason or None) until None or the time is up; the last reason."""
    start, said, last = clock(), None, -REPORT_EVERY
    while True:
        reason = pending()
        if reason is None:
            return None
        if clock() - start >= timeout:
            return reason
        if reason != said or clock() - last >= REPORT_EVERY:
            _say(f"waiting: {reason}")
            said, last = reason, clock()
        sleep(1.0)


def before(a: argparse.Namespace, sleep=time.sleep, clock=time.monotonic) -> int:
    main_py = os.path.join(a.app_dir, "main.py")
    this_start = container_start()
    began = clock()
    # Installed before this start (baked in, or an earlier boot's): no need to wait for the
    # boot's converge, which then changes nothing app-related.
    ready = installed(a.app_dir, a.venv)

    def pending() -> str | None:
        step = install_step(a.status)
        if step:
            return f"the app is being installed ({step})"
        if ready:
            return None
        flow = flow_state(a.onstart, this_start)
        if flow == "installing":
            return (f"the app in {a.app_dir} is not installed yet: the boot's provisioning is "
                    "installing it")
        if flow == "not-begun" and clock() - began < a.grace:
            return (f"the app in {a.app_dir} is not installed yet: the boot's provisioning has "
                    "not begun")
        return None

    reason = _wait(pending, a.timeout, sleep, clock)
    if reason:
        _say(f"gave up after {a.timeout:.0f} s: {reason}")
    if os.path.isfile(main_py):
        return 0
    print(f"red-visomaster: no VisoMaster checkout in {a.app_dir} (main.py is missing): see "
          "/logs/startup.log and /logs/visomaster-checkout.log", file=sys.stderr)
    return 1


def after_crash(a: argparse.Namespace, sleep=time.sleep, clock=time.monotonic) -> int:
    this_start = container_start()
    if flow_state(a.onstart, this_start) != "installing" and not install_step(a.status):
        return 1
    _say("the app exited while the boot's provisioning runs (an install in progress): "
         "not a crash; starting it again once that is done")

    def pending() -> str | None:
        step = install_step(a.status)
        if step:
            return f"the app is being installed ({step})"
        if flow_state(a.onstart, this_start) == "installing":
            return "the boot's provisioning is still installing the app"
        return None

    reason = _wait(pending, a.timeout, sleep, clock)
    if reason:
        _say(f"gave up waiting after {a.timeout:.0f} s: {reason}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="red-app-wait", description=__doc__.split("\n")[1])
    parser.add_argument("when", choices=("before", "after-crash"))
    parser.add_argument("--app-dir", required=True)
    parser.add_argument("--venv", required=True, help="the app's venv")
    parser.add_argument("--onstart", default="/var/lib/red/provisioning/onstart.json",
                        help="the on-start flow's outcome (red-provision onstart)")
    parser.add_argument("--status", default=progress.STATUS_FILE)
    parser.add_argument("--timeout", type=float, default=3700)
    parser.add_argument("--grace", type=float, default=90,
                        help="how long to wait for the boot's flow to begin")
    a = parser.parse_args(argv)
    return before(a) if a.when == "before" else after_crash(a)


if __name__ == "__main__":
    sys.exit(main())
