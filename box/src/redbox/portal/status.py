"""
The status writer (``red-status``): every couple of seconds, what the box is doing as one JSON
file the front door serves to the status page, and the last lines of each log beside it. No
server of its own: the page is static, nginx serves these files behind the token.

Read, never changed: supervisord's process states (its XML-RPC socket) and the program
configs, the provisioning markers (``red-provision``'s in-progress / completed / failed /
onstart.json), the models' state, the app's checkout and venv stamp, red-doctor's report
(the GPU, the flavor, the app's checks: ``redbox.app.doctor``), ``/logs/startup.log`` (which
secrets were generated) and ``/.launch`` (Vast's jupyter mode). Stdlib only: it runs on the
box's own Python.

``red-status --doctor-problems [FILE]`` prints the problems of red-doctor's report instead, one a
line, for the desktop's launcher: exit 0 when there are none (or no report), 1 when there are
some, 3 when no flavor runs on this GPU (nothing is installed).
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import glob
import os
import re
import sys
import time

from redbox.app import doctor
from redbox.core import lock, pids, supervisor
from redbox.core import state as state_file
from redbox.core.log import startup_log, timestamp
from redbox.settings.resolve import SETTINGS_FILE, Resolved, box_settings

LOG_TAIL_LINES = 200
LOG_TAIL_BYTES = 64 * 1024
SERVICE_FAILED = ("FATAL", "BACKOFF", "EXITED", "UNKNOWN")
ONSTART_FAILED = {"script-failed", "timeout", "download-failed", "bad-url",
                  "supervisord-not-answering", "interrupted"}
# Which secret files the page names, and what each one opens.
SECRETS = (("portal_token", "the front door (the Open button, ?token=, Bearer, basic auth)"),
           ("jupyter_token", "JupyterLab (the front door hands it on)"),
           ("vnc_password", "the VNC desktop (the front door hands it to noVNC)"))
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# How the page's problems name what red-doctor found.
DOCTOR_PREFIX = "red-doctor: "
# --doctor-problems' exit status when no flavor runs on this GPU (nothing is installed).
NOTHING_INSTALLED = 3


def tail(path: str, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a file (at most LOG_TAIL_BYTES of it); [] when unreadable."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            data = handle.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace").splitlines()
    if size > LOG_TAIL_BYTES and text:
        text = text[1:]  # the first line was cut
    return text[-lines:]


def last_line(path: str) -> str:
    lines = [line for line in tail(path, 20) if line.strip()]
    return lines[-1].strip() if lines else ""


def parse_supervisorctl(output: str) -> dict[str, dict]:
    """``supervisorctl status`` lines: name -> {state, info}."""
    programs = {}
    for line in output.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[1].isupper() and _SAFE_NAME.match(parts[0]):
            programs[parts[0]] = {"state": parts[1], "info": parts[2].strip() if len(parts) > 2
                                  else ""}
    return programs


def program_configs(conf_dir: str) -> dict[str, dict]:
    """Each program's autostart/autorestart from its supervisor config."""
    configs = {}
    for path in sorted(glob.glob(os.path.join(conf_dir, "*.conf"))):
        parser = configparser.RawConfigParser(strict=False, interpolation=None)
        with contextlib.suppress(configparser.Error, OSError):
            parser.read(path, encoding="utf-8")
        for section in parser.sections():
            if section.startswith("program:"):
                values = parser[section]
                configs[section.split(":", 1)[1]] = {
                    "autostart": values.get("autostart", "true").strip() == "true",
                    "autorestart": values.get("autorestart", "unexpected").strip(),
                }
    return configs


def programs_status(status_output: str, configs: dict[str, dict], logs_dir: str) -> list[dict]:
    states = parse_supervisorctl(status_output)
    result = []
    for name in sorted(set(states) | set(configs)):
        config = configs.get(name, {})
        state = states.get(name, {"state": "UNKNOWN", "info": "not known to supervisord"})
        service = config.get("autostart", True) and config.get("autorestart") == "true"
        result.append({"name": name, "state": state["state"], "info": state["info"],
                       "service": bool(service), "log": os.path.join(logs_dir, f"{name}.log")})
    return result


def converge_state(state_dir: str) -> dict:
    """The last converge as red-provision's markers tell it."""
    in_progress = state_file.read(os.path.join(state_dir, "in-progress"))
    completed = state_file.read(os.path.join(state_dir, "completed"))
    failed = state_file.read(os.path.join(state_dir, "failed"))
    if in_progress is not None:
        running = lock.is_held(os.path.join(state_dir, "lock"))
        return {"state": "running" if running else "interrupted", "marker": in_progress}
    if completed is not None:
        return {"state": "completed", "marker": completed}
    if failed is not None:
        return {"state": "failed", "marker": failed}
    return {"state": "never", "marker": None}


def _step(name: str, state: str, detail: str, log: str | None = None) -> dict:
    return {"name": name, "state": state, "detail": detail, "log": log}


def _switch(resolved: Resolved, key: str) -> tuple[bool, str]:
    """A true/false setting, resolved by the registry's rule, and where it came from."""
    return bool(resolved[key]), resolved.sources.get(key, key)


def _converge_step(converge: dict, logs: str) -> dict:
    marker = converge["marker"] or {}
    state = {"completed": "done", "running": "running", "failed": "failed",
             "interrupted": "failed", "never": "waiting"}[converge["state"]]
    detail = {
        "completed": f"converged in {marker.get('seconds', '?')} s, "
                     f"{marker.get('changes', '?')} changes ({marker.get('finished', '')})",
        "running": f"running since {marker.get('started', '?')} ({marker.get('by', '?')})",
        "failed": f"FAILED: {marker.get('reason', '?')}",
        "interrupted": f"interrupted (started {marker.get('started', '?')}): the next run "
                       "converges again",
        "never": "not run yet",
    }[converge["state"]]
    return _step("Converge (red-provision)", state, detail, f"{logs}/converge.log")


def _app_step(name: str, enabled_by: tuple[bool, str], done: bool, log: str,
              done_detail: str, *, busy: bool) -> dict:
    enabled, source = enabled_by
    if not enabled:
        return _step(name, "skipped", f"{source}=false", log)
    if done:
        return _step(name, "done", done_detail or last_line(log), log)
    line = last_line(log)
    if re.search(r"FAILED|ERROR|NOT verified", line) and not busy:
        return _step(name, "failed", line, log)
    return _step(name, "running" if busy else "waiting", line or "not started yet", log)


def _models_step(state_path: str, enabled_by: tuple[bool, str], log: str, busy: bool) -> dict:
    models = state_file.read(state_path)
    name = "VisoMaster models"
    if enabled_by[0] and isinstance(models, dict):
        if models.get("verified"):
            return _step(name, "done", f"all {models.get('checked', '?')} model files verified",
                         log)
        if not busy:
            reason = models.get("error") or models.get("unreadable") or (
                f"{len(models.get('failed') or [])} of {models.get('checked', '?')} model "
                "files failed verification")
            return _step(name, "failed", reason, log)
    return _app_step(name, enabled_by, False, log, "", busy=busy)


def _script_step(provisioning_dir: str, log: str) -> dict:
    name = "Provisioning script"
    onstart = state_file.read(os.path.join(provisioning_dir, "onstart.json"))
    if not onstart:
        return _step(name, "waiting", "the on-start flow has not run yet", log)
    status = str(onstart.get("status", "?"))
    if status == "running" and not pids.alive(onstart.get("pid")):
        status = "interrupted"
    source = onstart.get("source") or "no script"
    if status == "running":
        return _step(name, "running", f"{source}: running since {onstart.get('started', '?')}; "
                     f"{last_line(log)}", log)
    if status == "ok":
        return _step(name, "done", f"{source}: finished in {onstart.get('seconds', '?')} s", log)
    if status == "no-script":
        return _step(name, "skipped", "no PROVISIONING_SCRIPT and no local script", log)
    reason = onstart.get("reason") or (
        f"exit {onstart['exit_code']}" if onstart.get("exit_code") is not None else "")
    return _step(name, "failed", f"{source}: {status}{': ' + reason if reason else ''}", log)


def provisioning_steps(args, env: dict, converge: dict,
                       report: dict | None = None) -> list[dict]:
    """
    The boot's steps with their state (done, running, waiting, failed, skipped) and a detail:
    the services' converge, the app's checkout, packages and models, the user's script.
    ``report``: red-doctor's (no flavor runs on its GPU: the converge installs nothing).
    """
    logs = args.logs_dir
    busy = converge["state"] == "running"
    # The app's switches as the converges read them: the env over the deploy's settings file.
    resolved = box_settings(env, args.settings_file)
    # The checkout the deploy configured (the program's --app-dir follows VISOMASTER_DIR).
    app_dir = args.app_dir
    checkout = _app_step("VisoMaster checkout", _switch(resolved, "visomaster_checkout"),
                         os.path.isdir(os.path.join(app_dir, ".git")),
                         f"{logs}/visomaster-checkout.log", f"{app_dir} is a checkout",
                         busy=busy)
    steps = [
        _app_step("VisoMaster packages", _switch(resolved, "visomaster_install_requirements"),
                  os.path.isfile(os.path.join(args.app_venv, ".red-visomaster.stamp")),
                  f"{logs}/visomaster-pip.log", f"installed into {args.app_venv}", busy=busy),
        _models_step(args.models_state, _switch(resolved, "visomaster_download_models"),
                     f"{logs}/visomaster-models.log", busy),
    ]
    if checkout["state"] in ("skipped", "failed"):
        # Without a checkout there is nothing to install or download: say so, not "waiting"
        # (or "running" while the converge that skipped the checkout goes on, or the install's
        # own "requirements file missing" failure: the checkout's step names the cause). A
        # models record stays as it is: it verified real files.
        pending = {"waiting", "running"}
        steps = [step if step["state"] not in (
                     pending | {"failed"} if step["name"] == "VisoMaster packages" else pending)
                 else
                 {**step, "state": "skipped", "detail": f"no checkout in {app_dir}"}
                 for step in steps]
    if report and report["flavor"]["chosen"] is None:
        # What is not there yet never comes: the converge installs nothing on this GPU.
        checkout, *steps = [
            {**step, "state": "skipped", "detail": "no flavor runs on this GPU (red-doctor): "
             "nothing is installed"} if step["state"] in ("waiting", "running") else step
            for step in (checkout, *steps)]
    return [_converge_step(converge, logs), checkout, *steps,
            _script_step(args.provisioning_dir, f"{logs}/provisioning.log")]


def generated_secrets(logs_dir: str, secrets_dir: str) -> list[dict]:
    """Where each secret is kept, and whether this box generated it (startup.log says so)."""
    startup = "\n".join(tail(startup_log(logs_dir), 2000))
    result = []
    for name, opens in SECRETS:
        path = os.path.join(secrets_dir, name)
        result.append({"name": name, "path": path, "opens": opens,
                       "exists": os.path.exists(path),
                       "generated": f"generated token kept in {path}" in startup
                       or f"generated secret kept in {path}" in startup})
    return result


def doctor_report(path: str) -> dict | None:
    """
    red-doctor's last report (its shape: ``redbox.app.doctor.report``), or None when there is
    none, or the file does not read as one (half a file, another shape).
    """
    found = state_file.read(path)
    if not isinstance(found, dict):
        return None
    card, flavor = found.get("gpu"), found.get("flavor")
    shaped = (
        (card is None or (isinstance(card, dict) and all(
            key in card for key in ("name", "compute_capability", "driver_version",
                                    "cuda_max"))))
        and isinstance(flavor, dict) and all(key in flavor for key in ("configured", "chosen",
                                                                       "reason"))
        and isinstance(found.get("app"), list)
        and all(isinstance(check, dict) for check in found["app"])
        and isinstance(found.get("problems"), list)
        and all(isinstance(line, str) for line in found["problems"])
        and isinstance(found.get("ok"), bool) and (found["ok"] or found["problems"]))
    return found if shaped else None


def doctor_problems(report: dict | None) -> list[str]:
    """What red-doctor found that keeps the app from running (its report's problems)."""
    return list(report["problems"]) if report and not report["ok"] else []


def problems(programs: list[dict], steps: list[dict], report: dict | None = None) -> list[str]:
    """
    What failed, most important first: services, the boot's steps, then red-doctor's where
    the box has a GPU or none of the app's flavors runs on it (without a GPU the GPU card says
    so: the box serves everything else).
    """
    found = []
    for program in programs:
        if program["service"] and program["state"] in SERVICE_FAILED:
            found.append(f"{program['name']} is {program['state']}: see {program['log']} "
                         f"({last_line(program['log']) or program['info']})")
    for step in steps:
        if step["state"] == "failed":
            found.append(f"{step['name']} failed: {step['detail']}"
                         + (f" (see {step['log']})" if step["log"] else ""))
    if report and (report.get("gpu") or report["flavor"].get("chosen") is None):
        found += [DOCTOR_PREFIX + line for line in doctor_problems(report)]
    return found


def jupyter_link(args, env: dict, launch_file: str = "/.launch") -> dict:
    """Our JupyterLab behind the door, or Vast's own in its jupyter launch mode."""
    try:
        with open(launch_file, encoding="utf-8", errors="replace") as handle:
            vast_jupyter = "jupyter" in handle.read()
    except OSError:
        vast_jupyter = False
    if vast_jupyter:
        port = env.get("VAST_TCP_PORT_8080") or "8080"
        return {"vast": True, "port": int(port) if port.isdigit() else 8080, "path": "/"}
    return {"vast": False, "port": None, "path": args.jupyter_path}


def write_log_tails(logs_dir: str, out_dir: str, seen: dict) -> list[str]:
    """Copy the tail of each changed /logs/*.log to <out>/logs/<name>.txt; the names."""
    target = os.path.join(out_dir, "logs")
    os.makedirs(target, mode=0o755, exist_ok=True)
    names = []
    for path in sorted(glob.glob(os.path.join(logs_dir, "*.log"))):
        name = os.path.basename(path)[:-4]
        if not _SAFE_NAME.match(name):
            continue
        names.append(name)
        try:
            info = os.stat(path)
        except OSError:
            continue
        key = (info.st_size, info.st_mtime_ns)
        if seen.get(name) == key:
            continue
        seen[name] = key
        write_atomic(os.path.join(target, f"{name}.txt"), "\n".join(tail(path)) + "\n")
    return names


def write_atomic(path: str, text: str) -> None:
    """A log tail, replaced whole (the page never reads half a file)."""
    staging = f"{path}.tmp-{os.getpid()}"
    with open(staging, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(staging, 0o644)
    os.replace(staging, path)


def supervisor_status(socket: str, timeout: float = 10) -> str:
    """What ``supervisorctl status`` prints, asked on supervisord's socket from this process."""
    return supervisor.status_text(socket, timeout)


def snapshot(args, env: dict, status_output: str, log_names: list[str]) -> dict:
    programs = programs_status(status_output, program_configs(args.conf_dir), args.logs_dir)
    converge = converge_state(args.provisioning_dir)
    report = doctor_report(args.doctor_report)
    steps = provisioning_steps(args, env, converge, report)
    found = problems(programs, steps, report)
    services = [program for program in programs if program["service"]]
    return {
        "generated": timestamp(),
        "generated_epoch": time.time(),
        "interval": args.interval,
        "hostname": os.uname().nodename,
        "label": env.get("VAST_CONTAINERLABEL", ""),
        "ready": bool(services) and all(p["state"] == "RUNNING" for p in services),
        "programs": programs,
        "provisioning": steps,
        "problems": found,
        # red-doctor's report, as it wrote it (None: not written yet, or unreadable).
        "doctor": report,
        "secrets": generated_secrets(args.logs_dir, args.secrets_dir),
        "jupyter": jupyter_link(args, env),
        "desktop": {"path": "/desktop/"},
        "logs": log_names,
        "logs_dir": args.logs_dir,
    }


def print_doctor_problems(path: str) -> int:
    """The launcher's question: the report's problems, one a line; the exit status says more."""
    report = doctor_report(path)
    lines = doctor_problems(report)
    for line in lines:
        print(line)
    if not lines:
        return 0
    return NOTHING_INSTALLED if report["flavor"]["chosen"] is None else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="red-status", description=__doc__.split("\n")[1])
    parser.add_argument("--output", help="directory of status.json and logs/ (required)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between writes")
    parser.add_argument("--logs-dir", default="/logs")
    parser.add_argument("--provisioning-dir", default="/var/lib/red/provisioning")
    parser.add_argument("--models-state", default="/var/lib/red/models-state.json")
    parser.add_argument("--app-dir", default="/workspace/VisoMaster")
    parser.add_argument("--app-venv", default="/opt/red/venv")
    parser.add_argument("--secrets-dir", default="/etc/red/secrets")
    parser.add_argument("--conf-dir", default="/etc/supervisor/conf.d")
    parser.add_argument("--supervisor-socket", default="/var/run/supervisor.sock")
    parser.add_argument("--jupyter-path", default="/jupyter/")
    parser.add_argument("--settings-file", default=SETTINGS_FILE,
                        help="what the last converge resolved (redbox.settings.resolve)")
    parser.add_argument("--doctor-report", default=doctor.REPORT_FILE,
                        help="red-doctor's report (red-doctor --write)")
    parser.add_argument("--doctor-problems", nargs="?", const="", metavar="FILE",
                        help="only print the problems of red-doctor's report (FILE, else "
                             "--doctor-report's) and exit: 0 none, 1 some, "
                             f"{NOTHING_INSTALLED} no flavor runs on this GPU")
    parser.add_argument("--once", action="store_true", help="write once and exit")
    args = parser.parse_args(argv)
    if args.doctor_problems is not None:
        return print_doctor_problems(args.doctor_problems or args.doctor_report)
    if not args.output:
        # argparse's own words, as for any other required option.
        parser.error("the following arguments are required: --output")
    os.makedirs(args.output, mode=0o755, exist_ok=True)
    seen: dict = {}
    print(f"red-status: writing {args.output}/status.json every {args.interval:g} s",
          file=sys.stderr, flush=True)
    while True:
        try:
            names = write_log_tails(args.logs_dir, args.output, seen)
            status = snapshot(args, dict(os.environ),
                              supervisor_status(args.supervisor_socket), names)
            state_file.write(os.path.join(args.output, "status.json"), status)
        except Exception as error:  # one bad round must not stop the page
            print(f"red-status: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        if args.once:
            return 0
        time.sleep(args.interval)
