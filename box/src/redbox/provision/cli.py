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

from redbox.provision.common import settings, usable_logs_dir
from redbox.provision.onstart import cmd_onstart
from redbox.provision.runner import cmd_mark_installed, cmd_run
from redbox.provision.script import cmd_stamp
from redbox.provision.status import cmd_status


def cmd_logs_dir(_args) -> int:
    values, _prov = settings()
    logs = usable_logs_dir(values)
    print(logs or values["base_logs_dir"])
    return 0 if logs else 1


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
