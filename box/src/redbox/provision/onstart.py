"""
red-provision onstart: the seed's boot-time flow (the services, then the app and the user's
PROVISIONING_SCRIPT, run once per URL), once per container start with --once-per-boot.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time

from redbox.core import supervisor
from redbox.core.pids import container_start
from redbox.provision.common import (
    BACKGROUND_NICENESS,
    OWN_SCRIPTS,
    SCRIPT_DONE,
    logs_and_decisions,
    markers,
    now,
    read_json,
    settings,
    tool_log,
    write_json,
)
from redbox.provision.download import download
from redbox.provision.runner import converge
from redbox.provision.script import run_script
from redbox.settings import parse

SUPERVISOR_CONF = "/etc/supervisor/supervisord.conf"


def supervisord_running(socket: str) -> bool:
    """supervisord answers on its socket (asked from this process: the boot polls it)."""
    return supervisor.running(socket, timeout=15)


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
    values, prov = settings()
    paths = markers(prov.state_dir)
    this_start = container_start()
    previous = read_json(paths["onstart.json"]) or {}
    if args.once_per_boot and this_start and previous.get("container_start") == this_start:
        print(f"{now()} red-onstart: the on-start flow already ran in this container start "
              f"(pid {previous.get('pid')}, {previous.get('status')}): not again")
        return 0
    return _onstart_flow(args, values, prov, paths, this_start)


def _onstart_flow(args, values, prov, paths: dict[str, str], this_start: str) -> int:
    logs = logs_and_decisions(values, prov)
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
