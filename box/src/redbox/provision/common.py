"""
What red-provision's commands share: their settings, their log, the state dir's files, and the
names the deploy reads too (operations/ imports them through the package).
"""

from __future__ import annotations

import os
import sys

from redbox.core import log as logs_
from redbox.core import state
from redbox.settings.resolve import SEED_SCRIPTS, box_settings, provisioning_settings

DEPLOY_DIR = "/opt/red/deploy"
# The deploy tree's version (operations/runtime.py writes it into DEPLOY_DIR).
VERSION_FILE = ".red-version"
# In the state dir: the deploy version whose install half last completed (a full converge by
# red-provision, or the image build: `red-provision mark-installed`).
INSTALLED = "installed.json"
# Red's own work behind the services at boot (the full converge, the app's install) yields
# the CPU to them while they start; the user's PROVISIONING_SCRIPT keeps the normal priority
# (a server it starts must not inherit ours).
BACKGROUND_NICENESS = 10
# Set for a script the on-start flow runs: its output already goes into provisioning.log
# (timestamped, as "script:"), so a red-provision inside it writes its lines to stdout only.
CAPTURED_ENV = "RED_PROVISIONING_LOG_CAPTURED"
# The app's slow steps (clone, a multi-GB pip install, models): the boot's foreground converge
# leaves them to the background flow, so SSH, Jupyter and the desktop come up first.
APP_STEPS = ("visomaster_checkout", "visomaster_install_requirements",
                  "visomaster_download_models", "visomaster_download_clip")
# The seed's scripts this image ships (operations/provisioning.py): each converges the whole box.
OWN_SCRIPTS = SEED_SCRIPTS[:2]
# Keys red-provision itself gives a converge for that run only: never saved as --data choices.
RUN_ONLY_KEYS = ("supervisor_start", "red_phase", "base_logs_dir", *APP_STEPS)
# The user's PROVISIONING_SCRIPT runs once: this marker (in the state dir) says what ran OK.
SCRIPT_DONE = "provisioning-script.json"

now = logs_.timestamp
read_json, write_json, remove = state.read, state.write, state.remove


def settings():
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


def logs_and_decisions(values, prov) -> str | None:
    """The logs dir to use; the settings' decisions go to its startup log."""
    logs = usable_logs_dir(values)
    if prov.decisions and logs:
        logs_.append(logs_.startup_log(logs), "settings", prov.decisions)
    return logs


def markers(state_dir: str) -> dict[str, str]:
    return {name: os.path.join(state_dir, name)
            for name in ("lock", "in-progress", "completed", "failed", "onstart.json",
                         SCRIPT_DONE, INSTALLED)}
