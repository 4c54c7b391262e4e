"""red-provision status: the markers, the lock, the scripts, the flavor and red-doctor's report."""

from __future__ import annotations

import json
import os

from redbox.app import doctor
from redbox.core import lock, progress
from redbox.core import log as logs_
from redbox.core.pids import alive as pid_alive
from redbox.portal import status as portal_status
from redbox.provision.common import markers, read_json, settings
from redbox.settings import parse
from redbox.settings.registry import BY_KEY

# red-doctor's report (the converge writes it when the GPU, the flavor or the app's install
# changed): what the app meets on this GPU.
DOCTOR_REPORT = doctor.REPORT_FILE
PROVISIONING_SCRIPT_ENV = BY_KEY["provisioning_script"].env[0]


def status_report() -> dict:
    values, prov = settings()
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
        "doctor": portal_status.doctor_report(DOCTOR_REPORT),
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
