"""red-provision: converge this box with Red's deploy, and the seed's boot-time flow.

Usage:
    red-provision run [--no-start-supervisor] [--skip-app] [--configure-if-installed] [--by NAME]
    red-provision onstart [--wait-for-supervisord] [--force] [--once-per-boot]
    red-provision status [--json]
    red-provision logs-dir

run       What /vast_ai_provisioning_script.sh and /src/provisioning_script.sh do: converge this
          box with `pyinfra @local deploy.py -y` in /opt/red/deploy and the runtime environment.
          The deploy starts supervisord when it is not running (--no-start-supervisor: the
          entrypoint starts it itself) and applies changed programs without restarting the rest.
          One run at a time: a flock on <state>/lock. A second run waits for it up to
          PROVISIONING_LOCK_TIMEOUT seconds (default 900) and then converges, so that the box
          ends up converged with the newest environment; when the wait runs out it exits 75
          having changed nothing. Markers in <state> (default /var/lib/red/provisioning):
            in-progress   while a run holds the lock: pid, who started it, when;
            completed     the last run succeeded: when, how long, which operations changed;
            failed        the last run failed: when, the reason, the tail of converge.log.
          completed and failed exclude each other. A run killed midway (SIGKILL, OOM, container
          stop) leaves in-progress behind with nobody holding the lock: `status` reports it as
          interrupted, and the next run says so and converges again. The lock is shared with the
          pyinfra child, so a run whose parent was killed still finishes before the next starts.
          A run of the whole deploy that succeeds records the deploy version in
          <state>/installed.json (the image build records its own); --configure-if-installed
          (the entrypoint) converges only the configure half when that record matches the
          deploy in /opt/red/deploy.
          Exit: 0 converged, 1 failed, 2 cannot start, 75 the lock was not obtained in time.
onstart   The seed's on-start script (/opt/red/bin/red-onstart). First the services: when
          supervisord does not answer (Vast's ssh/jupyter modes, where Vast owns PID 1), `run`
          converges the box, which starts it; with --wait-for-supervisord (the entrypoint, whose
          PID 1 is supervisord) it waits for supervisord instead. Then the seed's flow: with
          PROVISIONING_SCRIPT set, download it (curl; connect and total timeouts;
          retries with backoff; an empty body, an HTML page or binary data is refused) and run
          it by its shebang (else with bash; CRLF line endings converted, with a line
          saying so) ONCE: when it succeeded, <state>/provisioning-script.json records the
          URL and the sha256 of what ran, and a later boot with the same URL logs one line
          and skips it (a different URL runs; --force, or removing that marker, runs it
          again). Red's own converge still runs at every boot. Without a URL, run the first
          of the seed's local scripts that exists;
          otherwise log "ERROR: No provisioning script found" and exit 1. The script runs in its
          own process group with PROVISIONING_TIMEOUT seconds (default 3600); then the group
          gets SIGTERM and, 10 s later, SIGKILL. Every step, and the script's output, goes to
          <logs>/provisioning.log with timestamps, and to stdout (the container log); the
          outcome to <state>/onstart.json.
          --once-per-boot (Red's block in /root/onstart.sh): one line and nothing else when
          the flow already ran in this container start (the template's own on-start line).
          Exit: 0 when the script succeeded (or had already), 1 otherwise.
status    Print the markers, the lock, the scripts, the flavor and red-doctor's report (its
          summary and problems; read-only); --json for programs (the report under doctor).
logs-dir  Print the logs directory to use, creating it: /logs, or when that cannot be written
          the fallback (/var/log/red), with a line on stderr saying so.

Settings: the environment over /etc/red/settings.json (what the last converge resolved), by the
deploy's own rule (redbox.settings.resolve; a bad value: its default and one line in
startup.log). The
--data choices saved there (a converge over SSH with --data python_version=3.11) are given to
the box's own converges again, so that they resolve the same settings.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from redbox.app import doctor
from redbox.core import lock, progress, state, supervisor
from redbox.core import log as logs_
from redbox.core.pids import alive as pid_alive
from redbox.core.pids import container_start
from redbox.core.retry import Attempts
from redbox.portal import status
from redbox.settings import parse
from redbox.settings.registry import BY_KEY
from redbox.settings.resolve import SEED_SCRIPTS, SETTINGS_FILE, box_settings, provisioning_settings

DEPLOY_DIR = "/opt/red/deploy"
# The deploy tree's version (operations/runtime.py writes it into DEPLOY_DIR).
VERSION_FILE = ".red-version"
# In the state dir: the deploy version whose install half last completed (a full converge by
# red-provision, or the image build: `red-provision mark-installed`).
INSTALLED = "installed.json"
PYINFRA = "/opt/red/tool/bin/pyinfra"
# red-doctor's report (the converge writes it when the GPU, the flavor or the app's install
# changed): what the app meets on this GPU.
DOCTOR_REPORT = doctor.REPORT_FILE
SUPERVISOR_CONF = "/etc/supervisor/supervisord.conf"
SUPERVISOR_CONF_DIR = "/etc/supervisor/conf.d"
EX_TEMPFAIL = 75
# Red's own work behind the services at boot (the full converge, the app's install) yields
# the CPU to them while they start; the user's PROVISIONING_SCRIPT keeps the normal priority
# (a server it starts must not inherit ours).
BACKGROUND_NICENESS = 10
# Seconds between SIGTERM and SIGKILL for a script that ran out of time.
KILL_GRACE = 10
# Set for a script the on-start flow runs: its output already goes into provisioning.log
# (timestamped, as "script:"), so a red-provision inside it writes its lines to stdout only.
CAPTURED_ENV = "RED_PROVISIONING_LOG_CAPTURED"
PROVISIONING_SCRIPT_ENV = BY_KEY["provisioning_script"].env[0]
# The app's slow steps (clone, a multi-GB pip install, models): the boot's foreground converge
# leaves them to the background flow, so SSH, Jupyter and the desktop come up first.
APP_STEPS = ("visomaster_checkout", "visomaster_install_requirements",
                  "visomaster_download_models", "visomaster_download_clip")
# HTTP answers worth another attempt: the rest of 4xx will not change by retrying.
RETRIED_4XX = (408, 425, 429)
# The seed's scripts this image ships (operations/provisioning.py): each converges the whole box.
OWN_SCRIPTS = SEED_SCRIPTS[:2]
# Keys red-provision itself gives a converge for that run only: never saved as --data choices.
RUN_ONLY_KEYS = ("supervisor_start", "red_phase", "base_logs_dir", *APP_STEPS)
# The user's PROVISIONING_SCRIPT runs once: this marker (in the state dir) says what ran OK.
SCRIPT_DONE = "provisioning-script.json"

now = logs_.timestamp
read_json, write_json, remove = state.read, state.write, state.remove


def _settings():
    """
    (values, provisioning settings): the ONE place red-provision gets its settings.
    values: base_logs_dir, provisioning_fallback_logs_dir, supervisor_socket;
    provisioning: script_url, url_problem, script_timeout, ..., decisions.

    The environment over what the last converge left in /etc/red/settings.json, by the same
    rule as the deploy's (redbox.settings.resolve).
    """
    values = box_settings()
    return values, provisioning_settings(values)


def tool_log(logs_dir: str | None, name: str, stream=None) -> logs_.Log:
    """Timestamped lines to <logs>/provisioning.log and to a stream (stdout or stderr)."""
    captured = os.environ.get(CAPTURED_ENV) == "1"
    path = os.path.join(logs_dir, "provisioning.log") if logs_dir and not captured else None
    return logs_.Log(path, f"{name}:", echo=stream or sys.stdout)


def usable_logs_dir(values, quiet: bool = False) -> str | None:
    """base_logs_dir (recreated when removed), else the fallback, said on stderr; else None."""
    return logs_.usable_logs_dir(str(values["base_logs_dir"]),
                                 str(values["provisioning_fallback_logs_dir"]),
                                 "red-provision", quiet)


def markers(state_dir: str) -> dict[str, str]:
    return {name: os.path.join(state_dir, name)
            for name in ("lock", "in-progress", "completed", "failed", "onstart.json",
                         SCRIPT_DONE, INSTALLED)}


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
    states = status.parse_supervisorctl(supervisor.status_text(socket))
    started = []
    for name, config in status.program_configs(conf_dir).items():
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


def supervisord_running(socket: str) -> bool:
    """supervisord answers on its socket (asked from this process: the boot polls it)."""
    return supervisor.running(socket, timeout=15)


# -- download ---------------------------------------------------------------------------------

def _refusal(path: str, content_type: str) -> str | None:
    """Why a downloaded body is not a script, or None."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    body = head.lstrip()
    if not body:
        return "the body is empty"
    if b"\0" in head:
        return "the body is binary data, not a script"
    if body.startswith(b"#!"):
        return None
    media_type = content_type.split(";", maxsplit=1)[0].strip().lower()
    if body.startswith(b"<") or media_type == "text/html":
        return ("the body is an HTML page, not a script (a login, error or repository page "
                "instead of the raw file?)")
    return None


def _fetch(url: str, target: str, prov) -> tuple[bool, str, bool, str]:
    """One attempt: (ok, detail, worth retrying, content type)."""
    limit = prov.download_timeout + 15
    curl = shutil.which("curl")
    if not curl:
        return False, "curl is not installed", False, ""
    command = [curl, "-sS", "-L", "--max-redirs", "5", "--proto", "=http,https",
               "--proto-redir", "=http,https", "--connect-timeout", str(prov.connect_timeout),
               "--max-time", str(prov.download_timeout), "-o", target,
               "-w", "%{http_code} %{content_type}", url]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=limit,
                                check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, f"no answer within {limit} s", True, ""
    tool = os.path.basename(command[0])
    status_text, _, content_type = result.stdout.strip().partition(" ")
    status = int(status_text) if status_text.isdigit() else 0
    if status >= 400:
        return False, f"HTTP {status}", status >= 500 or status in RETRIED_4XX, content_type
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        detail = lines[-1].strip() if lines else ""
        return False, f"{tool} exit {result.returncode}: {detail}", True, content_type
    return True, f"HTTP {status}", False, content_type


def download(url: str, prov, dest: str, log) -> tuple[str | None, str]:
    """Fetch url to dest (mode 0700); returns (dest, "") or (None, why not)."""
    tries = Attempts(prov.download_retries + 1, prov.download_backoff,
                     on_pause=lambda pause: log(f"retrying in {pause:g} s"))
    attempts = tries.attempts
    staging = f"{dest}.part"
    detail = ""
    for attempt in tries:
        remove(staging)
        ok, detail, retry, content_type = _fetch(url, staging, prov)
        if ok:
            refusal = _refusal(staging, content_type)
            if refusal:
                remove(staging)
                log(f"attempt {attempt}/{attempts}: {refusal}: refused, not run")
                return None, refusal
            with open(staging, "rb") as handle:
                data = handle.read()
            log(f"downloaded {len(data)} bytes to {dest} "
                f"(sha256 {hashlib.sha256(data).hexdigest()[:16]}...)")
            if b"\r\n" in data:
                with open(staging, "wb") as handle:
                    handle.write(data.replace(b"\r\n", b"\n"))
                log("the script has CRLF (Windows) line endings: converted to LF before running")
            os.chmod(staging, 0o700)
            os.replace(staging, dest)
            return dest, ""
        remove(staging)
        log(f"attempt {attempt}/{attempts}: download failed: {detail}")
        if not retry:
            log(f"not retried: {detail} will not change by asking again")
            return None, detail
    return None, tries.why_stopped(detail)


# -- running a script -------------------------------------------------------------------------

def interpreter(path: str) -> tuple[list[str], str]:
    """How to run a script: by its shebang when it has one (as Vast does), else with bash."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(256)
    except OSError:
        first = b""
    if first.startswith(b"#!") and first[2:].strip():
        with contextlib.suppress(OSError):
            os.chmod(path, os.stat(path).st_mode | 0o700)
        shebang = first.decode("utf-8", "replace").strip()
        return [path], f"by its shebang ({shebang})"
    return ["bash", path], "with bash (no shebang)"


def script_done(path: str, url: str) -> dict | None:
    """The success marker of the user's script, when it is for this URL."""
    done = read_json(path)
    url_hash = hashlib.sha256(url.encode()).hexdigest()
    return done if isinstance(done, dict) and done.get("url_sha256") == url_hash else None


def mark_script_done(path: str, url: str, script: str, seconds: float) -> None:
    with open(script, "rb") as handle:
        content = hashlib.sha256(handle.read()).hexdigest()
    write_json(path, {"url": parse.show_url(url),
                      "url_sha256": hashlib.sha256(url.encode()).hexdigest(),
                      "script_sha256": content, "finished": now(),
                      "seconds": round(seconds, 1)}, mode=0o600)

def run_script(path: str, timeout: int, logs: str | None, log,
               nice: int = 0) -> tuple[str, int | None]:
    """
    Run a script by its shebang (else with bash) at this much lower priority, its output
    timestamped into the log; (outcome, exit code).
    """
    # -I: the installed package, never a directory that happens to be the working one.
    stamper_command = [sys.executable, "-I", "-m", "redbox.provision", "stamp", "--prefix",
                       "script"]
    if logs:
        stamper_command += ["--log", os.path.join(logs, "provisioning.log")]
    # The stamper lives in its own session and ends when the last writer closes the pipe: a
    # server the script left running in the background keeps logging, and never gets SIGPIPE.
    stamper = subprocess.Popen(stamper_command, stdin=subprocess.PIPE, start_new_session=True)
    command, how = interpreter(path)
    if nice:
        command, how = ["nice", "-n", str(nice), *command], f"{how} at niceness +{nice}"
    log(f"running {path} {how} (timeout {timeout} s; its output follows, as 'script:')")
    clock = time.monotonic()
    try:
        script = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stamper.stdin,
                                  stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, CAPTURED_ENV: "1"})
    except OSError as error:
        log(f"cannot run {path}: {error}")
        return "script-failed", None
    finally:
        stamper.stdin.close()
    outcome = "ok"
    try:
        code = script.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"{path} timed out after {timeout} s (PROVISIONING_TIMEOUT): stopping its process "
            f"group (SIGTERM, SIGKILL {KILL_GRACE} s later)")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(script.pid, signal.SIGTERM)
        try:
            code = script.wait(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(script.pid, signal.SIGKILL)
            code = script.wait()
        # What the script started in its group goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(script.pid, signal.SIGKILL)
        outcome = "timeout"
    try:
        stamper.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log("the script left processes running in the background; their output goes on "
            "into this log")
    seconds = time.monotonic() - clock
    if outcome == "timeout":
        log(f"{path} was stopped after {seconds:.0f} s")
    elif code == 0:
        log(f"{path} finished OK in {seconds:.1f} s")
    else:
        outcome = "script-failed"
        log(f"ERROR: {path} exited with status {code} after {seconds:.1f} s "
            "(its output is above)")
    return outcome, code


# -- commands ---------------------------------------------------------------------------------

def _logs_and_decisions(values, prov) -> str | None:
    """The logs dir to use; the settings' decisions go to its startup log."""
    logs = usable_logs_dir(values)
    if prov.decisions and logs:
        logs_.append(logs_.startup_log(logs), "settings", prov.decisions)
    return logs


def cmd_run(args) -> int:
    values, prov = _settings()
    logs = _logs_and_decisions(values, prov)
    return converge(values, prov, logs, args.by, start_supervisor=not args.no_start_supervisor,
                    skip_app=args.skip_app, configure_if_installed=args.configure_if_installed)


def cmd_mark_installed(args) -> int:
    """The image build ran the install half itself: record its version."""
    _values, prov = _settings()
    mark_installed(markers(prov.state_dir), args.by)
    return 0


def ensure_services(values, prov, logs: str | None, log, wait: bool) -> tuple[bool, bool]:
    """
    supervisord answers: waited for (entrypoint mode), or started by a converge;
    (whether to go on, whether this converged the box).
    """
    socket = str(values["supervisor_socket"])
    if wait:
        start = time.monotonic()
        while not supervisord_running(socket):
            if time.monotonic() - start > prov.supervisor_wait:
                log(f"ERROR: supervisord did not answer within {prov.supervisor_wait} s: "
                    "provisioning skipped (run /opt/red/bin/red-onstart by hand)")
                return False, False
            time.sleep(0.5)
    elif not supervisord_running(socket):
        log("supervisord is not running (Vast's ssh/jupyter mode, where Vast owns PID 1): "
            "converging this box first, which starts it")
        converge(values, prov, logs, "red-onstart")
        if not supervisord_running(socket):
            log("supervisord is still not running: starting it with the configs in place")
            subprocess.run(["supervisord", "-c", SUPERVISOR_CONF], check=False,
                           stdin=subprocess.DEVNULL)
        if not supervisord_running(socket):
            log("ERROR: supervisord does not answer: see supervisord.log; provisioning goes on")
        return True, True
    log("supervisord is running: the services are up")
    return True, False


def cmd_onstart(args) -> int:
    values, prov = _settings()
    paths = markers(prov.state_dir)
    this_start = container_start()
    previous = read_json(paths["onstart.json"]) or {}
    if args.once_per_boot and this_start and previous.get("container_start") == this_start:
        print(f"{now()} red-onstart: the on-start flow already ran in this container start "
              f"(pid {previous.get('pid')}, {previous.get('status')}): not again")
        return 0
    return _onstart_flow(args, values, prov, paths, this_start)


def _onstart_flow(args, values, prov, paths: dict[str, str], this_start: str) -> int:
    logs = _logs_and_decisions(values, prov)
    log = tool_log(logs, "red-onstart")
    os.makedirs(prov.state_dir, mode=0o700, exist_ok=True)
    # phase: services, then app (a converge: the app's checkout, packages and models), then
    # script (the user's); the app's program waits while the app is being installed.
    record = {"pid": os.getpid(), "started": now(), "status": "running", "phase": "services",
              "container_start": this_start,
              "mode": "entrypoint" if args.wait_for_supervisord else "on-start",
              "log": os.path.join(logs, "provisioning.log") if logs else None}
    write_json(paths["onstart.json"], record)
    clock = time.monotonic()

    def finish(status: str, **extra) -> int:
        record.update(status=status, finished=now(),
                      seconds=round(time.monotonic() - clock, 1), **extra)
        write_json(paths["onstart.json"], record)
        log(f"on-start flow finished: {status}")
        return 0 if status in ("ok", "already-done") else 1

    log("on-start flow begins: the services first, then PROVISIONING_SCRIPT or the seed's "
        "local scripts")
    go_on, converged = ensure_services(values, prov, logs, log, args.wait_for_supervisord)
    if not go_on:
        return finish("supervisord-not-answering")
    fallback = next((script for script in prov.fallback_scripts if os.path.isfile(script)), None)
    # Entrypoint mode: the foreground converge skipped the app's slow steps. Our own provisioning
    # scripts converge the whole box, so when one of them is what runs next, it does them.
    if args.wait_for_supervisord and (prov.script_url or prov.url_problem
                                      or fallback not in OWN_SCRIPTS):
        log("services are up: converging the app's checkout, packages and models")
        _phase(record, paths, "app")
        converge(values, prov, logs, "red-onstart (app)", background=True)

    path, status = _which_script(args, prov, paths, record, log, fallback=fallback,
                                 converged=converged)
    if path is None:
        outcome, reason = status if isinstance(status, tuple) else (status, None)
        return finish(outcome, **({"reason": reason} if reason else {}))
    _phase(record, paths, "app" if path in OWN_SCRIPTS else "script")
    clock_script = time.monotonic()
    # Our own scripts are the converge behind the services: it yields to them.
    own_behind_services = args.wait_for_supervisord and path in OWN_SCRIPTS
    outcome, code = run_script(path, prov.script_timeout, logs, log,
                               nice=BACKGROUND_NICENESS if own_behind_services else 0)
    if outcome == "ok" and prov.script_url:
        mark_script_done(paths[SCRIPT_DONE], prov.script_url, path,
                         time.monotonic() - clock_script)
        log(f"recorded in {paths[SCRIPT_DONE]}: later boots with this URL skip it")
    return finish(outcome, exit_code=code)


def _phase(record: dict, paths: dict[str, str], phase: str) -> None:
    record["phase"] = phase
    write_json(paths["onstart.json"], record)


def _which_script(args, prov, paths, record, log, *, fallback, converged):
    """(the script to run, None), or (None, the flow's outcome [and its reason])."""
    if prov.url_problem:
        log(f"ERROR: PROVISIONING_SCRIPT {prov.url_problem}: nothing downloaded")
        return None, ("bad-url", prov.url_problem)
    if prov.script_url:
        shown = parse.show_url(prov.script_url)
        record["source"] = shown
        write_json(paths["onstart.json"], record)
        done = script_done(paths[SCRIPT_DONE], prov.script_url)
        if done and not args.force:
            log(f"PROVISIONING_SCRIPT {shown} already ran OK on {done.get('finished')} "
                f"(sha256 {str(done.get('script_sha256'))[:16]}...): not run again (Vast runs it "
                f"once; to run it again: red-onstart --force, or remove {paths[SCRIPT_DONE]})")
            return None, "already-done"
        log(f"Using PROVISIONING_SCRIPT: {shown}"
            + (" (--force: run again although it already succeeded)" if done else ""))
        path, reason = download(prov.script_url, prov,
                                os.path.join(prov.state_dir, "downloaded-script.sh"), log)
        if path is None:
            log(f"ERROR: PROVISIONING_SCRIPT not run: {reason}")
            return None, ("download-failed", reason)
    elif converged and fallback in OWN_SCRIPTS:
        # Vast's ssh/jupyter mode at container start: our script is the converge just done.
        log(f"Found script: {fallback}: not run, it is the converge this flow just did")
        record["source"] = fallback
        return None, "ok"
    else:
        path = fallback
        if path is None:
            log(f"ERROR: No provisioning script found (looked for "
                f"{', '.join(prov.fallback_scripts)}; PROVISIONING_SCRIPT is unset)")
            return None, "no-script"
        record["source"] = path
        write_json(paths["onstart.json"], record)
        log(f"Found script: {path}")
    return path, None


def status_report() -> dict:
    values, prov = _settings()
    logs = logs_.readable_logs_dir(str(values["base_logs_dir"]),
                                   str(values["provisioning_fallback_logs_dir"]))
    paths = markers(prov.state_dir)
    in_progress = read_json(paths["in-progress"])
    completed, failed = read_json(paths["completed"]), read_json(paths["failed"])
    if in_progress is not None:
        state = "running" if lock.is_held(paths["lock"]) else "interrupted"
        marker = in_progress
    elif completed is not None:
        state, marker = "completed", completed
    elif failed is not None:
        state, marker = "failed", failed
    else:
        state, marker = "never", None
    onstart = read_json(paths["onstart.json"])
    if onstart and onstart.get("status") == "running" and not pid_alive(onstart.get("pid")):
        onstart["status"] = "interrupted"
    url = os.environ.get(PROVISIONING_SCRIPT_ENV, "")
    return {
        "logs_dir": logs,
        "state_dir": prov.state_dir,
        "converge": {"state": state, "marker": marker, "last_completed": completed,
                     "last_failed": failed},
        "onstart": onstart,
        "provisioning_script": parse.show_url(url) if url else "",
        "scripts": [{"path": path, "exists": os.path.isfile(path)}
                    for path in (*prov.fallback_scripts, "/opt/red/bin/red-onstart")],
        # The app's current step (checkout, pip, models, clip, app) and percent.
        "app": progress.read(str(values["visomaster_status_file"])),
        # The flavor configured (auto or a name); the one this GPU gets is the doctor's.
        "flavor": str(values["visomaster_flavor"]),
        # red-doctor's last report (None: not written yet, or it does not read).
        "doctor": status.doctor_report(DOCTOR_REPORT),
    }


def cmd_status(args) -> int:
    report = status_report()
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    converge_state, marker = report["converge"]["state"], report["converge"]["marker"] or {}
    print(f"converge (red-provision run): {converge_state}")
    if converge_state == "interrupted":
        print(f"  pid {marker.get('pid')} by {marker.get('by')} started {marker.get('started')} "
              "and never finished (killed?); the next run converges again")
    elif marker:
        print(f"  by {marker.get('by')}, started {marker.get('started')}, "
              f"finished {marker.get('finished', '-')}")
        if converge_state == "completed":
            changed = marker.get("changed") or []
            print(f"  {len(changed)} changes" + (": " + "; ".join(changed) if changed
                                                else " (the box was already converged)"))
        if converge_state == "failed":
            print(f"  reason: {marker.get('reason')}")
    onstart = report["onstart"]
    if onstart:
        print(f"on-start flow (red-onstart): {onstart.get('status')}, started "
              f"{onstart.get('started')}, source {onstart.get('source', '-')}, "
              f"exit code {onstart.get('exit_code', '-')}")
    else:
        print("on-start flow (red-onstart): never ran")
    print(f"PROVISIONING_SCRIPT: {report['provisioning_script'] or '(unset)'}")
    for script in report["scripts"]:
        print(f"  {'exists ' if script['exists'] else 'missing'} {script['path']}")
    for line in progress.lines(report["app"]):
        print(line)
    found = report["doctor"]
    if found:
        flavor = found["flavor"]
        print(f"flavor: {flavor['configured']} -> {flavor['chosen'] or 'none (nothing installed)'}"
              f": {flavor['reason']}")
        print(doctor.summary(found))
        for line in found["problems"]:
            print(f"  problem: {line}")
    else:
        print(f"flavor: {report['flavor']} (red-doctor has not reported on this GPU yet: "
              f"{DOCTOR_REPORT}; run red-doctor)")
    print(f"logs: {report['logs_dir']}/provisioning.log, {report['logs_dir']}/converge.log")
    return 0


def cmd_logs_dir(_args) -> int:
    values, _prov = _settings()
    logs = usable_logs_dir(values)
    print(logs or values["base_logs_dir"])
    return 0 if logs else 1


def cmd_stamp(args) -> int:
    """Copy stdin to the log (and stdout) line by line with a timestamp and a prefix."""
    echo = True
    log = None
    if args.log:
        try:
            log = open(args.log, "a", encoding="utf-8")
        except OSError:
            log = None
    for raw in sys.stdin.buffer:
        line = logs_.line(f"{args.prefix}:", raw.decode("utf-8", "replace").rstrip()) + "\n"
        if log:
            with contextlib.suppress(OSError):
                log.write(line)
                log.flush()
        if echo:
            try:
                sys.stdout.write(line)
                sys.stdout.flush()
            except (OSError, ValueError):
                echo = False
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="red-provision", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="converge this box (lock, markers)")
    run.add_argument("--no-start-supervisor", action="store_true")
    run.add_argument("--skip-app", action="store_true",
                     help="leave the app's checkout, packages and models to a later run")
    run.add_argument("--by", default="red-provision", help="who asked, for the markers")
    run.add_argument("--configure-if-installed", action="store_true",
                     help="only the configure half when this deploy's install half is in place")
    installed = commands.add_parser("mark-installed", help=argparse.SUPPRESS)
    installed.add_argument("--by", default="image build")
    onstart = commands.add_parser("onstart", help="the seed's on-start flow")
    onstart.add_argument("--wait-for-supervisord", action="store_true")
    onstart.add_argument("--once-per-boot", action="store_true",
                         help="nothing when the flow already ran in this container start")
    onstart.add_argument("--force", action="store_true",
                         help="run PROVISIONING_SCRIPT even when it already succeeded")
    status = commands.add_parser("status", help="markers, lock and scripts")
    status.add_argument("--json", action="store_true")
    commands.add_parser("logs-dir", help="the logs directory to use")
    stamp = commands.add_parser("stamp", help=argparse.SUPPRESS)
    stamp.add_argument("--prefix", default="script")
    stamp.add_argument("--log")
    args = parser.parse_args(argv)
    handlers = {"run": cmd_run, "onstart": cmd_onstart, "status": cmd_status,
                "logs-dir": cmd_logs_dir, "stamp": cmd_stamp,
                "mark-installed": cmd_mark_installed}
    return handlers[args.command](args)


