"""
VisoMaster: its system packages and launcher at install time; at configure time (boot or live
box) its checkout, converged without losing a user's files, its requirements in the app venv,
its verified models, and a supervisor program that runs it on the VNC desktop.

The app's steps never stop a converge: each failure is an (ignored) error in pyinfra's report
and one line in /logs/startup.log, and the next converge tries again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
import shlex
from dataclasses import dataclass

from pyinfra import host, logger
from pyinfra.api import FactBase, FunctionCommand, QuoteString, StringCommand, deploy, operation

from operations import _files, settings
from operations.facts import ToolReport
from operations.ops import apt_install, failure_note, upload
from operations.program import Program, supervisor_program
from redbox.app.checks import last_object
from redbox.app.doctor import REPORT_FILE
from redbox.app.install import stamp_path
from redbox.app.weights import DEFAULT_STATE as CLIP_STATE
from redbox.core.log import SHELL_TIMESTAMP, startup_log

# ffmpeg (recording), git (the checkout), wmctrl and xdotool (a stop closes the app's window
# like a user would) and what Qt 6's xcb platform plugin loads.
APP_PACKAGES = [
    "ffmpeg",
    "git",
    "wmctrl",
    "xdotool",
    "libxcb-cursor0",
    "libxkbcommon0",
    "libxkbcommon-x11-0",
    "libxcb-icccm4",
    "libxcb-image0",
    "libxcb-keysyms1",
    "libxcb-render-util0",
    "libxcb-shape0",
    "libxcb-randr0",
    "libxcb-xfixes0",
    "libxcb-xkb1",
    "libxcb-sync1",
    "libxcb-shm0",
    "libfontconfig1",
    "libdbus-1-3",
    "libegl1",
    "libgl1",
    "libglib2.0-0",
]
BIN = "/opt/red/bin"
TOOLS = ("red-visomaster", "red-visomaster-start")
CLIP = f"{BIN}/red-app-clip"
# Where CLIP's loader looks (os.path.expanduser("~/.cache/clip")): a link to the cache.
CLIP_LINK = "/root/.cache/clip"
CHECKOUT = f"{BIN}/red-app-checkout"
MODELS = f"{BIN}/red-app-models"
PIP = f"{BIN}/red-app-pip"
DOCTOR = f"{BIN}/red-doctor"
# The doctor's report (the status page, red-provision status and the notebook read it) and
# what it was made for.
DOCTOR_REPORT = REPORT_FILE
DOCTOR_KEY = "/var/lib/red/doctor.key"
# The menu entry; the desktop icon is a copy of it.
MENU_ENTRY = "/usr/share/applications/red-visomaster.desktop"
DESKTOP_ICON = "/root/Desktop/red-visomaster.desktop"
# Upstream's model list (hashes and URLs), read by red-app-models without importing the app.
MODELS_DATA = "app/processors/models_data.py"
XDG_RUNTIME_DIR = "/run/user/0"
SHM = "/dev/shm"  # noqa: S108 - the mount to measure, not a temporary file


class _ShmMegabytes(FactBase):
    """Returns the size of /dev/shm in MB, or None when there is none."""

    def command(self) -> str:
        return f"df -Pk {SHM} 2>/dev/null | awk 'NR == 2 {{ print int($2 / 1024) }}'"

    def process(self, output) -> int | None:
        text = "".join(output).strip()
        return int(text) if text.isdigit() else None


def _checkout_notes(summary: dict | None, ok: bool, log: str) -> list[str]:
    """The lines a checkout run leaves in the startup log: what moved where, what failed."""
    if summary is None:
        if ok:
            return []
        return [f"checkout FAILED without a report; details in {log}"]
    dest, ref = summary.get("dest"), summary.get("ref")
    if not ok:
        return [
            f"checkout of {summary.get('url')} at {ref} into {dest} FAILED: "
            f"{summary.get('error')}; nothing was lost, the next converge retries "
            f"(details in {log})"
        ]
    notes = []
    for aside in summary.get("moved_aside") or []:
        notes.append(f"{dest} was not a clone of {summary.get('url')} ({summary.get('reason')}): "
                     f"moved aside to {aside}, nothing in it deleted")
    carried = summary.get("carried_over") or {}
    if carried.get("files"):
        notes.append(f"{len(carried['files'])} model/engine file(s) ({carried['bytes']} bytes) "
                     f"moved from {carried['from']} into the new checkout {dest}, not "
                     f"downloaded again: {', '.join(carried['files'][:10])}"
                     + (" ..." if len(carried["files"]) > 10 else ""))
    for branch in summary.get("backup_branches") or []:
        notes.append(f"{branch['commits']} local commit(s) in {dest} kept on branch "
                     f"{branch['name']}")
    backup = summary.get("user_files_backup")
    if backup:
        user_files = summary.get("user_files") or []
        replaced = [item["path"] for item in user_files if not item.get("in_worktree")]
        notes.append(
            f"{len(user_files)} edited or untracked file(s) in {dest} copied to {backup} before "
            f"moving to {ref}"
            + (f"; {ref} replaced your version of {', '.join(replaced)} (yours are in the copy)"
               if replaced else "; all of them are still in the tree")
        )
    if summary.get("action") in ("cloned", "updated"):
        notes.append(f"{dest} {summary['action']} to {ref} ({str(summary.get('commit'))[:12]})")
    return notes


def _append_startup_log(lines: list[str]) -> StringCommand:
    """Append timestamped lines to the box's startup log; never fails (safe after ``&&``)."""
    stamped = [arg for line in lines for arg in (SHELL_TIMESTAMP, QuoteString(line))]
    return StringCommand(
        "{", "printf '%s visomaster: %s\\n'", *stamped, ">>",
        QuoteString(startup_log(settings.get("base_logs_dir"))),
        "2>/dev/null;", "true;", "}",
    )


def _run_checkout(state, host, command: StringCommand, log: str) -> bool:
    """
    Run red-app-checkout; report what it moved or failed on, in pyinfra's output and the
    box's startup log. (pyinfra passes ``state`` and ``host`` by these parameter names.)
    """
    ok, output = host.run_shell_command(command)
    summary = last_object("\n".join(output.stdout_lines))
    notes = _checkout_notes(summary, ok, log)
    for line in notes:
        logger.warning(f"{host.print_prefix}VisoMaster: {line}")
    if summary is None and not ok:
        for line in output.stderr_lines[-5:]:
            logger.warning(f"{host.print_prefix}{line}")
    if notes:
        host.run_shell_command(_append_startup_log(notes))
    return ok


def _checkout_check(url: str, ref: str, dest: str, **_) -> dict:
    """The ToolReport arguments of red-app-checkout's --check for a checkout."""
    return {"tool": CHECKOUT, "args": shlex.join(["--check", "--url", url, "--ref", ref,
                                                  "--dest", dest])}


@_files.declares(asks=lambda **kwargs: (
    [], [], [_files.fact_probe(ToolReport, **_checkout_check(**kwargs))]))
@operation()
def _checkout(url: str, ref: str, dest: str, log: str, *, retries: int, backoff: float):
    """
    Converge a directory to a clone of URL at REF with red-app-checkout, keeping every user
    file (see its docstring for each conflict); checked first with its ``--check``.

    + url: the repository
    + ref: the tag, branch or commit
    + dest: the checkout directory
    + log: red-app-checkout's detailed log
    + retries: network retries of clone/fetch
    + backoff: seconds before the first retry (doubling)
    """
    report = _files.fact(ToolReport, **_checkout_check(url, ref, dest))
    if report and report.get("in_state"):
        host.noop(f"{dest} is {url} at {ref}")
        return
    command = StringCommand(
        CHECKOUT, "--url", QuoteString(url), "--ref", QuoteString(ref),
        "--dest", QuoteString(dest), "--log", QuoteString(log),
        "--retries", str(int(retries)), "--backoff", str(float(backoff)),
    )
    yield FunctionCommand(_run_checkout, (command, log), {})


@_files.declares("requirements")
@operation()
def _pip_install(venv: str, requirements: str, flavor: str, *, extra_index_urls: list[str],
                 key: str, log: str, also: list[str], places: dict, bounds: dict):
    """
    Install the app's flavor with red-app-pip (uv, into the flavor's own venv on its own
    Python): bounded (uv's request timeout and retries, a deadline for the whole install),
    recorded with its cause when it fails, and not repeated inside the backoff that follows a
    failure unless the inputs changed.

    + venv: the app venv
    + requirements: the requirements file in the checkout
    + flavor: the flavor (its Pythons, index strategy and overrides: redbox.app.flavors)
    + extra_index_urls: indexes for uv's command line
    + key: anything else that makes an install different (the ref)
    + log: the install's output (uv's lines as they come)
    + also: more requirements (the Jupyter kernel's ipykernel)
    + places: uv's cache, its managed Pythons and their mirror (the settings)
    + bounds: deadline, timeout, retries, backoff, state and status (the settings)
    """
    args = [
        "--venv", venv, "--requirements", requirements, "--flavor", flavor, "--key", key,
        *(item for url in extra_index_urls for item in ("--extra-index-url", url)),
        *(item for requirement in also for item in ("--also", requirement)),
        "--cache-dir", places["cache"], "--python-dir", places["pythons"],
        *(("--python-mirror", places["mirror"]) if places["mirror"] else ()),
        "--deadline", str(int(bounds["deadline"])), "--timeout", str(int(bounds["timeout"])),
        "--retries", str(int(bounds["retries"])), "--backoff", str(int(bounds["backoff"])),
        "--state", bounds["state"], "--status", bounds["status"],
    ]
    # No requirements file (no checkout yet): what red-app-pip would say, without its start.
    report = {"state": "missing", "error": os.strerror(errno.ENOENT)} \
        if _files.state_of(requirements) is None \
        else _files.fact(ToolReport, tool=PIP, args=shlex.join([*args, "--check"])) or {}
    found = report.get("state")
    if found == "installed":
        host.noop(f"{venv} already has visomaster installed ({requirements})")
        return
    if found == "missing":
        _skip(f"requirements file {requirements} does not exist ({report.get('error')}): "
              "nothing installed (set visomaster_requirements / VISOMASTER_REQUIREMENTS)")
        return
    if found == "backoff":
        _held_off(f"pip install of {requirements}", "these inputs", report, PIP)
        return
    yield StringCommand(
        "{", "echo", QuoteString(f"== red-app-pip {requirements}"), SHELL_TIMESTAMP, ";",
        PIP, *(QuoteString(arg) for arg in args), ";", "}",
        ">>", QuoteString(log), "2>&1",
        failure_note(f"visomaster: installing {requirements} into {venv} FAILED", log),
    )


def _skip(note: str) -> None:
    """Nothing to run: the reason in pyinfra's output and the box's startup log."""
    host.noop(note)
    settings.record([note], topic="visomaster")


def _held_off(what: str, inputs: str, report: dict, tool: str) -> None:
    """A step that failed is not repeated inside its backoff: say so and when it tries again."""
    _skip(f"{what} skipped: it failed {report.get('failures')} time(s) with {inputs} "
          f"({report.get('cause')}); next try after {report.get('next_try_after')}; "
          f"`{tool} --retry-now` tries now")


def _detached(run: StringCommand) -> StringCommand:
    """The same run in the background: its outcome reaches the logs as the foreground one's."""
    return StringCommand("setsid", "sh", "-c", QuoteString(run.get_raw_value()),
                         "</dev/null", ">/dev/null", "2>&1", "&")


def _models_check(repo: str, state: str, cache: str = "", **_) -> dict:
    """
    The ToolReport arguments of red-app-models with no download allowed (``--attempts 0``):
    it refreshes the state file as it goes, a verification record with a hash cache, which is
    what lets the next check skip hashing gigabytes of unchanged files.
    """
    return {"tool": MODELS, "args": shlex.join(["--repo", repo, "--models-data", MODELS_DATA,
                                                "--attempts", "0", "--state", state,
                                                *(("--cache", cache) if cache else ())]),
            "needs": f"{repo}/{MODELS_DATA}"}


@_files.declares(asks=lambda **kwargs: (
    [], [], [_files.fact_probe(ToolReport, **_models_check(**kwargs))]))
@operation()
def _models(repo: str, python: str, attempts: int, state: str, log: str, *, bounds: dict,
            pip_state: str, status: str, cache: str = "", background: bool = False):
    """
    Fetch the app's model files until every one verifies (red-app-models: Red's fetcher,
    resumed and verified per file), unless they already do; the result is kept in a state
    file for the diagnostic notebook. In the background, the fetch starts and the converge
    goes on (the app's install meanwhile): the same call later in the converge waits for it
    (one run per state file) and finds the files verified.

    + repo: the app's checkout
    + python: the interpreter that runs the app's own downloader (red-app-models --downloader
      app, by hand)
    + attempts: download rounds before giving up
    + state: the state file
    + cache: the verified files' hashes (on the workspace, with the files)
    + log: the downloader's output
    + bounds: timeout (seconds one downloader run may take: a hung one would hold the
      provisioning lock for ever), deadline (all the runs together) and backoff (after a
      failure, seconds before a converge downloads again) and streams (files at once): the
      settings
    + pip_state: red-app-pip's record (a failed install is named as the cause)
    + status: the status JSON (per-file progress)
    + background: start it detached and go on
    """
    report = _files.fact(ToolReport, **_models_check(repo, state, cache))
    if report is None:
        host.noop(f"no model list at {repo}/{MODELS_DATA}: nothing to download")
        return
    if report.get("verified"):
        host.noop(f"all {report.get('checked')} model files in {repo} verify")
        return
    if report.get("in_backoff"):
        _held_off(f"models download in {repo}", "this model list", report, MODELS)
        return
    models = StringCommand(
        MODELS, "--repo", QuoteString(repo), "--models-data", MODELS_DATA,
        "--python", QuoteString(python), "--attempts", str(int(attempts)),
        "--timeout", str(int(bounds["timeout"])), "--deadline", str(int(bounds["deadline"])),
        "--backoff", str(int(bounds["backoff"])), "--streams", str(int(bounds["streams"])),
        "--state", QuoteString(state),
        *(("--cache", QuoteString(cache)) if cache else ()),
        *(("--pip-state", QuoteString(pip_state)) if pip_state else ()),
        "--status", QuoteString(status), ">/dev/null",
    )
    run = StringCommand(
        "{", "echo", QuoteString(f"== red-app-models {repo}"), SHELL_TIMESTAMP, ";", models, ";",
        "}",
        ">>", QuoteString(log), "2>&1", "&&", _append_startup_log(
            [f"model files in {repo} downloaded and verified (state in {state})"]),
        failure_note(f"visomaster: models NOT verified (state in {state})", log),
    )
    yield _detached(run) if background else run


@_files.declares("stamp", "key_file")
@operation()
def _doctor(report: str, key_file: str, stamp: str):
    """
    Run red-doctor when what it looks at changed (the GPU, the flavor, the app venv's install):
    its report where the status page reads it, its summary line in the startup log (which the
    boot echoes to the container log).

    + report: the report file
    + key_file: what the report was made for
    + stamp: the app venv's install stamp
    """
    gpu, problem = settings.box_gpu()
    seen = [gpu.as_json() if gpu else problem, settings.flavor().as_json(),
            _files.sha256_of(stamp)]
    key = hashlib.sha256(json.dumps(seen, sort_keys=True).encode()).hexdigest()
    if _files.holds(key_file, f"{key}\n".encode()):
        host.noop("the doctor's report is current")
        return
    yield StringCommand(
        "line=$(", DOCTOR, "--write", QuoteString(report), "--summary 2>/dev/null);",
        "printf '%s %s\\n'", SHELL_TIMESTAMP, '"$line"', ">>",
        QuoteString(startup_log(settings.get("base_logs_dir"))), "2>/dev/null;",
        "echo", QuoteString(key), ">", QuoteString(key_file),
    )


def _clip_args(url: str, sha256: str, directory: str, state: str, bounds: dict) -> list[str]:
    """red-app-clip's arguments: its check adds ``--check``, its download runs them as they are."""
    return ["--url", url, "--sha256", sha256, "--dir", directory, "--link", CLIP_LINK,
            "--attempts", str(int(bounds["attempts"])), "--deadline", str(int(bounds["deadline"])),
            "--failure-backoff", str(int(bounds["backoff"])), "--state", state,
            "--status", bounds["status"]]


@_files.declares(asks=lambda repo, **_: ([f"{repo}/{MODELS_DATA}"], [], []))
@operation()
def _clip(url: str, sha256: str, directory: str, log: str, *, repo: str, state: str,
          bounds: dict, background: bool = False):
    """
    Fetch the CLIP weights into the workspace's cache, verified, with ~/.cache/clip linked to
    it (red-app-clip: Red's fetcher, resumed and verified), unless they are there and verify;
    not before the app is checked out. A failed download is recorded in the state file and not
    repeated inside its backoff (the check says so without touching the network). In the
    background, the fetch starts and the converge goes on (the app's install meanwhile): the
    same call later in the converge waits for it (one run per state file) and finds the
    weights verified.

    + repo: the app's checkout (no model list there yet: nothing to do)
    + url: the weights' URL
    + sha256: their SHA-256
    + directory: the persistent cache
    + log: the download's output
    + state: red-app-clip's record (the failures, cause and backoff; the verified file's stat)
    + bounds: attempts, deadline, backoff and status (the models' settings)
    + background: start it detached and go on
    """
    args = _clip_args(url, sha256, directory, state, bounds)
    if not _files.is_file(f"{repo}/{MODELS_DATA}"):
        host.noop(f"no app in {repo} yet: the CLIP weights come with it")
        return
    report = _files.fact(ToolReport, tool=CLIP, args=shlex.join(["--check", *args])) or {}
    if report.get("verified"):
        host.noop(f"the CLIP weights in {directory} verify")
        return
    if report.get("in_backoff"):
        tool = CLIP if state == CLIP_STATE else f"{CLIP} --state {shlex.quote(state)}"
        _held_off(f"CLIP weights download into {directory}", "this URL and hash", report, tool)
        return
    run = StringCommand(
        "{", "echo", QuoteString(f"== red-app-clip {url}"), SHELL_TIMESTAMP, ";",
        CLIP, *(QuoteString(arg) for arg in args), ";", "}", ">>", QuoteString(log), "2>&1",
        "&&", _append_startup_log([f"CLIP weights in {directory} downloaded and verified"]),
        failure_note(f"visomaster: CLIP weights NOT verified in {directory}", log),
    )
    yield _detached(run) if background else run


@dataclass(frozen=True)
class AppPlan:
    """
    What setup_visomaster converges, read once from the host's resolved settings: each step's
    switch and its operation's arguments (the op tests' data has the same shape).
    """

    dir: str
    venv: str
    flavor: str | None
    refusal: str
    baking: bool
    min_shm_mb: int
    autostart: bool
    # red-doctor's report: also on a GPU no flavor runs on (it says why).
    doctor: bool
    checkout: dict | None
    install: dict | None
    models: dict | None
    clip: dict | None

    @classmethod
    def of(cls, runtime: settings.RuntimeSettings, *, install: bool, configure: bool) -> AppPlan:
        app_dir, venv = runtime.visomaster_dir, runtime.python_app_venv
        logs, status = runtime.base_logs_dir, runtime.visomaster_status_file
        choice = runtime.flavor
        # An image build with VISOMASTER_IN_IMAGE=1 bakes the checkout and its packages in;
        # the boot then finds both in state. The models are the boot's (verified there).
        baking = install and runtime.visomaster_in_image and runtime.red_phase == "install"
        app_steps = (configure or baking) and choice.chosen is not None
        models_log = f"{logs}/visomaster-models.log"
        return cls(
            dir=app_dir, venv=venv, flavor=choice.chosen, refusal=choice.reason, baking=baking,
            min_shm_mb=runtime.visomaster_min_shm_mb, autostart=runtime.visomaster_autostart,
            doctor=configure and (runtime.visomaster_install_requirements
                                  or runtime.visomaster_checkout),
            checkout={
                "name": f"Check out {runtime.visomaster_ref} of VisoMaster into {app_dir}",
                "url": runtime.visomaster_repo_url, "ref": runtime.visomaster_ref,
                "dest": app_dir, "log": f"{logs}/visomaster-checkout.log",
                "retries": runtime.visomaster_checkout_retries,
                "backoff": runtime.visomaster_checkout_backoff,
            } if app_steps and runtime.visomaster_checkout else None,
            install={
                "name": f"Install VisoMaster {choice.chosen} ({runtime.visomaster_requirements})"
                        f" into {venv} with uv",
                "venv": venv, "requirements": f"{app_dir}/{runtime.visomaster_requirements}",
                "flavor": choice.chosen,
                "extra_index_urls": _as_list(runtime.visomaster_extra_index_urls),
                "key": f"ref={runtime.visomaster_ref}", "log": f"{logs}/visomaster-pip.log",
                "also": [f"ipykernel=={runtime.python_ipykernel_version}"],
                # An image build keeps no cache: the workspace volume is the box's.
                "places": {"cache": "" if baking else runtime.visomaster_uv_cache_dir,
                           "pythons": runtime.visomaster_python_dir,
                           "mirror": runtime.visomaster_python_mirror},
                "bounds": {"deadline": runtime.visomaster_pip_deadline,
                           "timeout": runtime.visomaster_pip_timeout,
                           "retries": runtime.visomaster_pip_retries,
                           "backoff": runtime.visomaster_pip_backoff,
                           "state": runtime.visomaster_pip_state, "status": status},
            } if app_steps and runtime.visomaster_install_requirements else None,
            models={
                "name": f"Download and verify VisoMaster's models in {app_dir}",
                "repo": app_dir, "python": f"{venv}/bin/python",
                "attempts": runtime.visomaster_models_attempts,
                "bounds": {"timeout": runtime.visomaster_models_timeout,
                           "deadline": runtime.visomaster_models_deadline,
                           "backoff": runtime.visomaster_models_backoff,
                           "streams": runtime.visomaster_models_streams},
                "state": runtime.visomaster_models_state, "status": status, "log": models_log,
                "cache": runtime.visomaster_models_cache,
                # Only an install this converge runs can be why the app's downloader cannot.
                "pip_state": runtime.visomaster_pip_state
                if runtime.visomaster_install_requirements else "",
            } if app_steps and configure and runtime.visomaster_download_models else None,
            clip={
                "name": "Download and verify the CLIP weights into "
                        f"{runtime.visomaster_clip_dir}",
                "url": runtime.visomaster_clip_url, "sha256": runtime.visomaster_clip_sha256,
                "directory": runtime.visomaster_clip_dir, "repo": app_dir, "log": models_log,
                # Its record beside the models' (the same place, its own file and lock).
                "state": posixpath.join(posixpath.dirname(runtime.visomaster_models_state),
                                        posixpath.basename(CLIP_STATE)),
                "bounds": {"attempts": runtime.visomaster_models_attempts,
                           "deadline": runtime.visomaster_models_deadline,
                           "backoff": runtime.visomaster_models_backoff, "status": status},
            } if configure and choice.chosen is not None and runtime.visomaster_download_clip
            else None,
        )


@deploy("Set up VisoMaster")
def setup_visomaster(install: bool = True, configure: bool = True) -> list[Program]:
    """
    Install VisoMaster's system packages and launcher, converge its checkout, requirements and
    models, and describe its supervisor program.

    + install: run the install half (packages, tools, launcher, desktop icon and menu entry)
    + configure: run the configure half (/dev/shm check, checkout, pip, models)
    """
    plan = AppPlan.of(settings.current(), install=install, configure=configure)
    if install:
        apt_install(APP_PACKAGES, name="Install ffmpeg, git and the Qt 6 xcb libraries")
        for tool in TOOLS:
            upload("visomaster", f"{BIN}/{tool}")
        upload("visomaster", MENU_ENTRY, mode="644")
        # xfdesktop runs a launcher on the desktop only when it is executable.
        upload("visomaster", DESKTOP_ICON, shipped_as=MENU_ENTRY)
    if configure:
        _warn_small_shm(plan.min_shm_mb)
    if plan.flavor is None and (configure or plan.baking):
        # The reason is already in the log (the settings' decisions) and on the status page.
        host.noop(f"no VisoMaster flavor runs on this GPU: nothing installed ({plan.refusal})")
    if plan.checkout:
        _checkout(**plan.checkout, _ignore_errors=True)
    if plan.install:
        # The model list comes with the checkout: the models and the CLIP weights (their own
        # state file: not held up by the models' run) arrive while uv installs.
        if plan.models:
            _models(**{**plan.models, "name": "Start fetching VisoMaster's models (alongside "
                       "the install)", "pip_state": ""}, background=True, _ignore_errors=True)
        if plan.clip:
            _clip(**{**plan.clip, "name": "Start fetching the CLIP weights (alongside the "
                     "install)"}, background=True, _ignore_errors=True)
        _pip_install(**plan.install, _ignore_errors=True)
    if plan.models:
        _models(**plan.models, _ignore_errors=True)
    if plan.clip:
        _clip(**plan.clip, _ignore_errors=True)
    if plan.doctor:
        _doctor(name="Check what the app will meet on this GPU (red-doctor)",
                report=DOCTOR_REPORT, key_file=DOCTOR_KEY, stamp=stamp_path(plan.venv))
    return [supervisor_program(build_program(plan.dir, plan.autostart))]


def build_program(app_dir: str, autostart: bool, data=settings.get) -> Program:
    """
    The app's program on the VNC desktop (no pyinfra host needed).

    + app_dir: the checkout it runs
    + autostart: start it with supervisord
    + data: where other settings come from (the host's data; ``settings.DEFAULTS.get``)
    """
    return Program(
        name="visomaster",
        command=f"{BIN}/red-visomaster",
        priority=60,
        module=__name__,
        environment={
            "RED_APP_DIR": app_dir,
            "RED_APP_PYTHON": f"{data('python_app_venv')}/bin/python",
            "DISPLAY": f":{data('vnc_display')}",
            "QT_X11_NO_MITSHM": "1",
            "XDG_RUNTIME_DIR": XDG_RUNTIME_DIR,
            "HOME": "/root",
            "USER": "root",
            # The app's print()s reach its log as they happen.
            "PYTHONUNBUFFERED": "1",
            # At a container start it waits for the boot's install of the app (redbox.app.wait).
            "RED_ONSTART_STATE": f"{data('provisioning_state_dir')}/onstart.json",
        },
        autostart=autostart,
        # Closing the app's window ends it for good; a crash brings it back after a pause
        # (red-visomaster counts crashes: the third within 5 minutes is FATAL).
        autorestart="unexpected",
        startretries=3,
        startsecs=5,
    )


@_files.up_front
def _asked_every_run() -> None:
    """The desktop icon (install half); /dev/shm and the app's model list (configure half)."""
    install, configure = settings.halves()
    if install:
        _files.expect_with_directories(DESKTOP_ICON)
    if configure:
        _files.expect_fact(_ShmMegabytes)
        app = settings.visomaster()
        # Both the models' step and CLIP's read it.
        if app["visomaster_download_models"] or app["visomaster_download_clip"]:
            _files.expect(f"{app['visomaster_dir']}/{MODELS_DATA}")


def _warn_small_shm(minimum_mb: int) -> None:
    size = _files.fact(_ShmMegabytes)
    if size is not None and size < int(minimum_mb):
        settings.record(topic="visomaster", decisions=[
            f"{SHM} is {size} MB, less than the {minimum_mb} MB GUI apps like VisoMaster "
            "need (Qt, PyTorch): start the container with `docker run --shm-size=2g ...` "
            "(on Vast.ai: add --shm-size=2g to the template's Docker options)"
        ])


def _as_list(value) -> list[str]:
    """A list setting given as a list, or as one string (--data key=URL) of URLs."""
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value]
    return str(value or "").replace(",", " ").split()
