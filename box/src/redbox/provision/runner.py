"""red-provision run: converge this box with pyinfra @local, one run at a time, with markers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

from redbox.core import lock, supervisor
from redbox.core import log as logs_
from redbox.portal import status as portal_status
from redbox.provision.common import (
    APP_STEPS,
    BACKGROUND_NICENESS,
    CAPTURED_ENV,
    DEPLOY_DIR,
    INSTALLED,
    RUN_ONLY_KEYS,
    VERSION_FILE,
    logs_and_decisions,
    markers,
    now,
    read_json,
    remove,
    settings,
    tool_log,
    write_json,
)
from redbox.settings.registry import BY_KEY
from redbox.settings.resolve import SETTINGS_FILE

PYINFRA = "/opt/red/tool/bin/pyinfra"
SUPERVISOR_CONF_DIR = "/etc/supervisor/conf.d"
EX_TEMPFAIL = 75


def saved_data(path: str = SETTINGS_FILE) -> list[str]:
    """
    ``--data key=value`` arguments for the --data choices the last converge saved (JSON values,
    as pyinfra parses them), leaving out the keys red-provision sets per run.
    """
    saved = read_json(path)
    if not isinstance(saved, dict) or not isinstance(saved.get("values"), dict):
        return []
    values, keys = saved["values"], saved.get("cli")
    arguments = []
    for key in keys if isinstance(keys, list) else []:
        if key in values and key not in RUN_ONLY_KEYS and key in BY_KEY:
            arguments += ["--data", f"{key}={json.dumps(values[key])}"]
    return arguments


def startup_size(logs: str | None) -> int:
    """The startup log's size now: the lines after it are this run's."""
    try:
        return os.path.getsize(logs_.startup_log(logs)) if logs else 0
    except OSError:
        return 0


def echo_startup_lines(logs: str | None, offset: int) -> None:
    """Copy what the converge added to the startup log to stdout (the container log)."""
    if not logs or os.environ.get(CAPTURED_ENV) == "1":
        return
    try:
        with open(logs_.startup_log(logs), "rb") as handle:
            handle.seek(offset)
            added = handle.read().decode("utf-8", "replace")
    except OSError:
        return
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.write(added)
        sys.stdout.flush()


def acquire_lock(paths: dict[str, str], timeout: int, log) -> int | None:
    """The run lock's fd, waiting up to timeout seconds for a run in progress; None: not got."""
    handle = os.open(paths["lock"], os.O_RDWR | os.O_CREAT, 0o600)

    def waiting() -> None:
        holder = read_json(paths["in-progress"]) or {}
        log(f"another run holds the lock (pid {holder.get('pid', '?')}, by "
            f"{holder.get('by', '?')}, started {holder.get('started', '?')}): waiting up to "
            f"{timeout} s for it")

    waited = lock.acquire(handle, timeout, on_wait=waiting)
    if waited is None:
        os.close(handle)
        return None
    if waited:
        log(f"the other run finished after {waited:.0f} s: converging now")
    return handle


def _changed_operations(stdout: bytes) -> tuple[list[str] | None, dict]:
    try:
        report = json.loads(stdout.decode("utf-8", "replace"))
        results = report["results"]
        changed = [" | ".join(op.get("names") or [op.get("name", "?")])
                   for op in results["operations"] if op.get("success")]
        return changed, results.get("totals", {})
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, {}


def _error_lines(path: str | None, count: int = 8) -> list[str]:
    if not path:
        return []
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            tail = handle.readlines()[-400:]
    except OSError:
        return []
    pattern = re.compile(r"error|failed|traceback|exception|--> ", re.IGNORECASE)
    return [line.rstrip() for line in tail if pattern.search(line)][-count:]


def deploy_version() -> str | None:
    """The version of the deploy tree in DEPLOY_DIR, or None when it has none."""
    try:
        with open(os.path.join(DEPLOY_DIR, VERSION_FILE), encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def install_in_place(paths: dict[str, str]) -> str | None:
    """The deploy version when its install half is known complete on this box, else None."""
    version = deploy_version()
    installed = read_json(paths[INSTALLED]) or {}
    return version if version and installed.get("version") == version else None


def mark_installed(paths: dict[str, str], by: str) -> None:
    version = deploy_version()
    if version:
        write_json(paths[INSTALLED], {"version": version, "at": now(), "by": by})


def converge(values, prov, logs: str | None, by: str, *, start_supervisor: bool = True,
             skip_app: bool = False, configure_if_installed: bool = False,
             background: bool = False) -> int:
    """The `run` command's work: lock, in-progress marker, pyinfra, completed or failed."""
    log = tool_log(logs, "red-provision")
    paths = markers(prov.state_dir)
    try:
        os.makedirs(prov.state_dir, mode=0o700, exist_ok=True)
    except OSError as error:
        log(f"cannot create {prov.state_dir} ({error.strerror}): not converging")
        return 2
    handle = acquire_lock(paths, prov.lock_timeout, log)
    if handle is None:
        log(f"gave up after {prov.lock_timeout} s: another run still holds the lock "
            "(PROVISIONING_LOCK_TIMEOUT); this run changed nothing")
        return EX_TEMPFAIL
    try:
        interrupted = read_json(paths["in-progress"])
        if interrupted is not None:
            # We hold the lock, so whoever wrote this marker is gone.
            log(f"the previous run (pid {interrupted.get('pid', '?')}, by "
                f"{interrupted.get('by', '?')}, started {interrupted.get('started', '?')}) was "
                "interrupted before it finished (killed?): converging again")
        nice = BACKGROUND_NICENESS if background else 0
        record = {"by": by, "pid": os.getpid(), "started": now(),
                  "interrupted_run": interrupted, "niceness": os.nice(0) + nice}
        write_json(paths["in-progress"], record)
        command = [PYINFRA, "@local", "deploy.py", "-y", "--json", *saved_data()]
        installed = install_in_place(paths) if configure_if_installed else None
        if installed:
            # The boot's foreground step: settings, secrets and program configs before
            # supervisord starts; the full converge (drift repair) follows in the background.
            log(f"the install half of deploy {installed[:12]} is in place: applying the "
                "runtime settings only (the full converge follows in the background)")
            command += ["--data", "red_phase=configure"]
        if not start_supervisor:
            command += ["--data", "supervisor_start=false"]
        for step in APP_STEPS if skip_app else ():
            command += ["--data", f"{step}=false"]
        if logs and logs != str(values["base_logs_dir"]):
            command += ["--data", f"base_logs_dir={logs}"]
        record["log"] = os.path.join(logs, "converge.log") if logs else None
        log(f"converging this box: {' '.join(command[1:])} in {DEPLOY_DIR}"
            + (f" (pyinfra's output: {record['log']})" if record["log"] else ""))
        clock, offset = time.monotonic(), startup_size(logs)
        stdout, reason = run_pyinfra(command, record["log"], handle, nice=nice)
        record.update(finished=now(), seconds=round(time.monotonic() - clock, 1))
        echo_startup_lines(logs, offset)
        code = _finish_run(paths, record, stdout, reason, log)
        if code == 0 and not installed:
            mark_installed(paths, by)
        if code == 0 and interrupted is not None:
            apply_unapplied_programs(str(values["supervisor_socket"]), log)
        return code
    finally:
        os.close(handle)


def apply_unapplied_programs(socket: str, log, conf_dir: str = SUPERVISOR_CONF_DIR) -> None:
    """
    After a run that was killed midway: what it may have left half done in supervisord. A
    program config it wrote but did not apply (killed inside ``supervisorctl update``: the
    program stopped, or removed) is the same file for this run, which applies nothing: the
    configs on disk are applied, and a service (autostart, autorestart=true) that is stopped
    is started.
    """
    if not supervisor.running(socket):
        return
    result = subprocess.run(["supervisorctl", "-s", f"unix://{socket}", "update"],
                            capture_output=True, text=True, timeout=120, check=False)
    applied = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    states = portal_status.parse_supervisorctl(supervisor.status_text(socket))
    started = []
    for name, config in portal_status.program_configs(conf_dir).items():
        service = config["autostart"] and config["autorestart"] == "true"
        if service and states.get(name, {}).get("state") in ("STOPPED", "EXITED", "FATAL"):
            with contextlib.suppress(*supervisor.ERRORS):
                supervisor.rpc(socket).startProcess(name)
                started.append(name)
    if applied or started:
        log("after the interrupted run: "
            + "; ".join([*(f"supervisorctl update: {line}" for line in applied),
                         *(f"started {name} (it was stopped)" for name in started)]))


def run_pyinfra(command: list[str], log_path: str | None, handle: int,
                nice: int = 0) -> tuple[bytes, str]:
    """
    Run pyinfra (its progress to log_path) at this much lower priority; (its JSON stdout, ""
    or why it failed).
    """
    try:
        sink = open(log_path, "ab") if log_path else None
    except OSError:
        sink = None
    stopped_by: list[str] = []
    try:
        # The child shares the lock: a run whose parent was killed still finishes first.
        process = subprocess.Popen(
            (["nice", "-n", str(nice)] if nice else []) + command, cwd=DEPLOY_DIR,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=sink or sys.stderr,
            pass_fds=(handle,),
        )
    except OSError as error:
        if sink:
            sink.close()
        return b"", f"cannot run pyinfra ({error})"

    def forward(number, _frame):
        stopped_by.append(signal.Signals(number).name)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(number)

    previous = {number: signal.signal(number, forward)
                for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        stdout, _ = process.communicate()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if sink:
            sink.close()
    if stopped_by:
        return stdout, f"stopped by {stopped_by[0]}"
    return stdout, "" if process.returncode == 0 else f"pyinfra exited {process.returncode}"


def _finish_run(paths: dict[str, str], record: dict, stdout: bytes, reason: str, log) -> int:
    if not reason:
        changed, totals = _changed_operations(stdout)
        record.update(changes=len(changed) if changed is not None else None,
                      changed=changed, totals=totals)
        write_json(paths["completed"], record)
        remove(paths["failed"])
        remove(paths["in-progress"])
        shown = "" if not changed else ": " + "; ".join(changed[:8]) + (
            f"; and {len(changed) - 8} more" if len(changed) > 8 else "")
        count = "?" if changed is None else len(changed)
        log(f"converged in {record['seconds']} s: {count} changes{shown}")
        return 0
    record.update(reason=reason, errors=_error_lines(record["log"]))
    write_json(paths["failed"], record)
    remove(paths["completed"])
    remove(paths["in-progress"])
    log(f"FAILED after {record['seconds']} s: {reason}"
        + (f"; see {record['log']}" if record["log"] else ""))
    for line in record["errors"]:
        log(f"  {line}")
    return 1


def cmd_run(args) -> int:
    values, prov = settings()
    logs = logs_and_decisions(values, prov)
    return converge(values, prov, logs, args.by, start_supervisor=not args.no_start_supervisor,
                    skip_app=args.skip_app, configure_if_installed=args.configure_if_installed)


def cmd_mark_installed(args) -> int:
    """The image build ran the install half itself: record its version."""
    _values, prov = settings()
    mark_installed(markers(prov.state_dir), args.by)
    return 0
