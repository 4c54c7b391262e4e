"""
The app's progress, in one status JSON the status page, ``red-provision status`` and the
desktop icon read: the current step (checkout, pip, models, clip), its state, percent and a
one-line detail, and each step's last record.

    red-progress [--json] [STATUS_FILE]   # print it (what `status` shows)
    red-progress --installing [STATUS_FILE]   # the running install step, for the desktop icon
    red-progress --write STEP STATE DETAIL [STATUS_FILE]   # what the app's program records

Shape (``/var/lib/red/visomaster-status.json``)::

    {"app": "visomaster", "step": "pip", "state": "running", "percent": 42,
     "detail": "collecting torch (12 packages, 1.2 GB so far)", "pid": 123,
     "updated": "2026-12-01T22:20:27Z", "steps": {"pip": {...same keys...}, ...}}

``state`` is running, done, failed or backoff; a running step whose pid is gone reads as
interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

from redbox.core import lock, state
from redbox.core.log import timestamp
from redbox.core.pids import alive

STATUS_FILE = "/var/lib/red/visomaster-status.json"
STATES = ("running", "done", "failed", "backoff")
# A running step rewrites the file at most this often (a pip log has thousands of lines).
MIN_INTERVAL = 1.0
# Seconds a writer waits for another one (a write takes milliseconds); then it writes anyway.
WRITER_WAIT = 2.0


class Reporter:
    """Writes one step's progress to the status file, throttled; the last word always lands."""

    def __init__(self, path: str, step: str, app: str = "visomaster"):
        self.path, self.step, self.app = path, step, app
        self._last = 0.0

    def update(self, state_name: str, percent: float | None = None, detail: str = "",
               force: bool = False, **extra) -> None:
        now = time.monotonic()
        if not force and state_name == "running" and now - self._last < MIN_INTERVAL:
            return
        self._last = now
        try:
            write(self.path, self.step, state_name, percent, detail, app=self.app, **extra)
        except OSError as error:
            print(f"progress: cannot write {self.path}: {error}", file=sys.stderr)


def write(path: str, step: str, state_name: str, percent: float | None = None,
          detail: str = "", *, app: str = "visomaster", **extra) -> dict:
    """Record a step's state as the current one (and in ``steps``); returns the record."""
    if state_name not in STATES:
        raise ValueError(f"unknown state {state_name!r}")
    with _one_writer(path):
        current = read(path) or {}
        record = {"state": state_name, "detail": detail, "updated": timestamp(),
                  "percent": None if percent is None else max(0, min(100, round(percent))),
                  "pid": os.getpid(), **extra}
        steps = current.get("steps") if isinstance(current.get("steps"), dict) else {}
        steps[step] = record
        status = {"app": app, "step": step, **record, "steps": steps}
        state.write(path, status)
    return status


@contextlib.contextmanager
def _one_writer(path: str):
    """
    Steps that run at once (the install, the models, CLIP) each read, change and replace the
    file: one at a time (a lock file beside it), else one's record can be lost. The wait is
    bounded: progress never holds a step up for long.
    """
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        fd = None
    try:
        if fd is not None:
            lock.acquire(fd, WRITER_WAIT, poll=0.01)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def read(path: str = STATUS_FILE) -> dict | None:
    """The status, None without one; a running step whose process is gone is interrupted."""
    status = state.read(path)
    if not isinstance(status, dict) or "unreadable" in status:
        return None
    for record in [status, *(status.get("steps") or {}).values()]:
        if isinstance(record, dict) and record.get("state") == "running" \
                and not alive(record.get("pid")):
            record["state"] = "interrupted"
    return status


def running(path: str = STATUS_FILE) -> dict | None:
    """The status when a step is running right now, else None."""
    status = read(path)
    return status if status and status.get("state") == "running" else None


def line(status: dict | None) -> str:
    """One line for a person: ``visomaster: pip running 42%: collecting torch``."""
    if not status:
        return "visomaster: no step has run yet"
    percent = status.get("percent")
    shown = f" {percent}%" if percent is not None else ""
    detail = f": {status['detail']}" if status.get("detail") else ""
    return (f"{status.get('app', 'visomaster')}: {status.get('step')} {status.get('state')}"
            f"{shown}{detail} (at {status.get('updated')})")


def lines(status: dict | None) -> list[str]:
    """The current step, then every step's last record."""
    if not status:
        return [line(status)]
    out = [line(status)]
    for name, record in sorted((status.get("steps") or {}).items()):
        if name != status.get("step") and isinstance(record, dict):
            out.append("  " + line({"app": "last", "step": name, **record}))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="red-progress", description=__doc__.split("\n")[1])
    parser.add_argument("path", nargs="?", default=STATUS_FILE)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--installing", action="store_true",
                        help="print the running install step's line; exit 1 when none runs")
    parser.add_argument("--write", nargs=3, metavar=("STEP", "STATE", "DETAIL"),
                        help="record a step's state (the app's program records step 'app')")
    args = parser.parse_args(argv)
    if args.write:
        step, state_name, detail = args.write
        write(args.path, step, state_name, None, detail)
        return 0
    if args.installing:
        installing = running(args.path)
        if not installing or installing.get("step") == "app":
            return 1
        print(line(installing))
        return 0
    status = read(args.path)
    if args.json:
        print(json.dumps(status, sort_keys=True))
    else:
        print("\n".join(lines(status)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
