"""
One flow of the bench, run inside the box's namespace (stdlib only):

    python -m bench.app.flows SPEC.json

SPEC: {"steps": [{"name", "argv", "background", "cwd", "log"}], "env": {...},
"result": path, "timeout": seconds}. The steps run in order, a background one started and
left running (as the converge starts the models' fetch with setsid ... &), a foreground one
waited for; the flow ends when every step has (app ready). The result JSON has each step's
start and end (seconds from the flow's start) and exit code, and the flow's seconds.
Each step runs in a session of its own; past the timeout, or on SIGTERM, all of them are
killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def kill(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def run(spec: dict) -> dict:
    started = time.monotonic()
    ends = started + float(spec.get("timeout") or 3600)
    records: list[dict] = []
    running: list[tuple[subprocess.Popen, threading.Thread]] = []

    def watch(record: dict, process: subprocess.Popen) -> None:
        """The step's end, when it ends (a background one's too), or its kill at the timeout."""
        try:
            record["rc"] = process.wait(timeout=max(0.1, ends - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill(process)
            record["rc"] = "timeout"
        record["end"] = round(time.monotonic() - started, 3)

    def stop(*_args) -> None:
        for process, _ in running:
            kill(process)
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, stop)
    for step in spec["steps"]:
        record = {"name": step["name"], "background": bool(step.get("background")),
                  "start": round(time.monotonic() - started, 3), "log": step["log"]}
        records.append(record)
        with open(step["log"], "ab") as log:
            process = subprocess.Popen(step["argv"], cwd=step.get("cwd") or "/",
                                       env=spec["env"], stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        watcher = threading.Thread(target=watch, args=(record, process), daemon=True)
        watcher.start()
        running.append((process, watcher))
        if not record["background"]:
            watcher.join()
    for _, watcher in running:
        watcher.join()
    return {"seconds": round(max(record["end"] for record in records), 3), "steps": records,
            "ok": all(record.get("rc") == 0 for record in records)}


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    result = run(spec)
    Path(spec["result"]).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
