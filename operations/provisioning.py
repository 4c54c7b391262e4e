"""
Provisioning: the seed's boot-time flow and its scripts. ``/vast_ai_provisioning_script.sh``
and ``/src/provisioning_script.sh`` converge the box (``red-provision run``: a lock, markers);
``red-onstart`` is the seed's on-start script (PROVISIONING_SCRIPT, else those scripts); where
Vast owns PID 1 (its ssh/jupyter modes, a box converged over SSH) a marked block of
``/root/onstart.sh``, which Vast runs at every container start, runs it. The
settings users expect in their SSH and Jupyter sessions go to ``/etc/profile.d/red.sh`` (login
shells) and a marked block of ``/etc/environment`` (every SSH session, through PAM).
"""

import json
import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.connectors.local import LocalConnector
from pyinfra.facts.files import Block

from operations import _files, settings, threads
from operations.ops import upload
from operations.ports import launch_mode
from redbox.provision import OWN_SCRIPTS, RUN_ONLY_KEYS
from redbox.settings.registry import BY_KEY
from redbox.settings.resolve import SETTINGS_FILE, settings_file_payload

TOOLS = ("red-onstart",)
SCRIPTS = OWN_SCRIPTS
PROFILE = "/etc/profile.d/red.sh"
# PAM's pam_env reads it for every SSH session, `ssh box cmd` included (Vast's documented
# place for a template's env): one marked block of ours, the rest of the file left alone.
PAM_ENVIRONMENT = "/etc/environment"
# pyinfra's files.block puts a marker into an awk regex inside single quotes, unescaped: no
# quote, slash, parenthesis or other regex character in a marker.
PAM_BLOCK_MARKER = "# {mark} Red settings, managed by the deploy: rewritten on converge"
# Vast saves the template's on-start script here and runs it at every container start (ssh and
# jupyter modes): Red's block runs the on-start flow; the user's own lines stay as they are.
ONSTART = "/root/onstart.sh"
# The seed's directory for the provisioning script (/src/provisioning_script.sh).
SRC = "/src"
ONSTART_MARKER = ("# {mark} Red on-start block, managed by the deploy: rewritten on converge; "
                  "provisioning_onstart_block=false removes it")
ONSTART_BLOCK = [
    "# Vast runs this file at every container start: Red's on-start flow brings the services",
    "# back (a converge of this box) and runs PROVISIONING_SCRIPT once (/logs/provisioning.log);",
    "# nothing when the template's own on-start line already ran it in this start.",
    "[ ! -x /opt/red/bin/red-onstart ] || /opt/red/bin/red-onstart --once-per-boot </dev/null &",
]
PAM_STEP = f"Write the session settings into {PAM_ENVIRONMENT} (Red's block only)"
# pam_env strips one pair of quotes and knows no escapes: such values cannot be written.
_PAM_UNSAFE = ('"', "'", "\\", "\n", "\r", "$", "`")


def _pam_environment(values: dict[str, str]) -> tuple[list[str], list[str]]:
    """The /etc/environment lines for the session values, and a note for each one skipped."""
    lines, notes = [], []
    for name, value in values.items():
        if any(char in value for char in _PAM_UNSAFE):
            notes.append(f"{name} has quotes, a backslash, a $ or a newline: not written to "
                         f"{PAM_ENVIRONMENT} (login shells still get it from {PROFILE})")
            continue
        lines.append(f'{name}="{value}"')
    return lines, notes


def chosen_settings(cli: set[str]) -> set[str]:
    """The --data keys a box's own converges keep: settings, minus the per-run ones."""
    return {key for key in cli if key in BY_KEY} - set(RUN_ONLY_KEYS)


def _profile(values: dict[str, str]) -> str:
    lines = [
        "# Managed by Red (operations/provisioning.py), rewritten on every converge: the box's",
        "# settings for login shells (SSH, Jupyter terminals). Values are quoted data; no secrets.",
    ]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


@_files.up_front
def _asked_every_run() -> None:
    configure = settings.halves()[1]
    _files.expect_with_directories(settings.get("provisioning_state_dir"), SRC,
                                   *((SETTINGS_FILE, PROFILE) if configure else ()))
    if configure:
        # As _files.block asks them (the same arguments: the same question).
        for path, marker in ((PAM_ENVIRONMENT, PAM_BLOCK_MARKER), (ONSTART, ONSTART_MARKER)):
            _files.expect_fact(Block, path=path, marker=marker, begin=None, end=None)


@deploy("Set up provisioning")
def setup_provisioning(runtime: settings.RuntimeSettings, install: bool = True,
                       configure: bool = True):
    """
    Ship the provisioning scripts and the on-start flow; export the session settings.

    + runtime: the resolved runtime settings (ports, resolution) for the login shells
    + install: run the install half (the scripts, the markers' directory)
    + configure: run the configure half (/etc/profile.d/red.sh from the runtime env)
    """
    state_dir = settings.get("provisioning_state_dir")
    if install:
        _files.directory(name=f"Create {state_dir} (root-only)", path=state_dir, mode="700")
        for tool in TOOLS:
            upload("provisioning", f"/opt/red/bin/{tool}")
        _files.directory(name=f"Create {SRC}", path=SRC, mode="755")
        for script in SCRIPTS:
            upload("provisioning", script)
    if configure:
        # The box's tools resolve their settings with the same rule, over what this run chose.
        # Its --data keys are the user's choices of settings, which the box's own converges
        # keep; not the ones red-provision sets for one run, nor pyinfra's own (--key is
        # override data `ssh_key` over SSH).
        payload = settings_file_payload(runtime, chosen_settings(settings.cli_keys()),
                                        per_run=RUN_ONLY_KEYS)
        _files.put(
            name=f"Upload {SETTINGS_FILE} (the resolved settings, no secrets)",
            src=StringIO(json.dumps(payload, indent=1, sort_keys=True) + "\n"),
            dest=SETTINGS_FILE,
            mode="644",
        )
        # With a starved host's thread caps (operations/threads.py), decided at each converge.
        values = {**settings.session_environment(runtime, settings.runtime_environment()),
                  **threads.caps()}
        _files.put(
            name=f"Upload {PROFILE}",
            src=StringIO(_profile(values)),
            dest=PROFILE,
            mode="644",
        )
        lines, notes = _pam_environment(values)
        settings.record(notes, topic="sessions")
        _files.block(
            name=PAM_STEP,
            path=PAM_ENVIRONMENT,
            content=lines,
            marker=PAM_BLOCK_MARKER,
        )
        _onstart_block(settings.get("provisioning_onstart_block"))


def _onstart_block(wanted: bool) -> None:
    """Red's block in /root/onstart.sh: kept where Vast owns PID 1, removed when not wanted."""
    vast_owns_pid1 = launch_mode() is not None or host.connector_cls is not LocalConnector
    if wanted and not vast_owns_pid1:
        # The image's entrypoint runs the flow itself; a file of the user's is not touched.
        return
    _files.block(
        name=f"{'Write' if wanted else 'Remove'} Red's on-start block in {ONSTART}",
        path=ONSTART,
        content=ONSTART_BLOCK,
        marker=ONSTART_MARKER,
        present=wanted,
    )
