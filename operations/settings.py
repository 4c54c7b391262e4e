"""
Settings for the deploy: the registry's one rule (``redbox.settings.resolve``) applied to the
current host. Every setting is declared once in ``redbox.settings.registry`` (key, default, env
names, parser, secret, doc); ``group_data/all.py`` and docs/settings.md are generated from it.

The environment is the runtime one (``docker run -e``, Vast's template): ours for ``@local``,
the env of PID 1 over SSH; the image build reads none of it, except the build settings from
the build's own environment. Each bad value gets one line in ``/logs/startup.log`` (pyinfra
warnings over SSH) naming the variable and the fallback; secrets are never shown.
"""

from __future__ import annotations

import base64
import itertools
import logging
import os
import re
import shlex
import textwrap
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pyinfra import host, logger, state
from pyinfra.api import FactBase
from pyinfra.api.exceptions import DeployError
from pyinfra.connectors.local import LocalConnector
from pyinfra.facts.server import Command

from operations.facts import GpuReport
from redbox.app.gpu import api_said
from redbox.core.log import SHELL_TIMESTAMP, startup_log, timestamp
from redbox.provision import DEPLOY_DIR
from redbox.settings import parse, registry
from redbox.settings.resolve import (
    SEED_SCRIPTS,
    ProvisioningSettings,
    Resolved,
    StrictSettingError,
    provisioning_settings,
    resolve,
)

ROOT = Path(__file__).resolve().parent.parent
# The deploy copy a box converges itself from (red-provision, the seed's scripts, the boot).
ON_THE_BOX = ROOT == Path(DEPLOY_DIR)
DEFAULTS = registry.DEFAULTS
# The resolved settings the concerns receive (attribute access: runtime.sshd_port).
RuntimeSettings = Resolved
PROVISIONING_FALLBACK_SCRIPTS = SEED_SCRIPTS
show_url = parse.show_url

# -- login shells: what /etc/profile.d/red.sh exports besides the resolved settings. Vast's
# non-secret variables, as the box's env has them; never a token, password or API key.
SESSION_ENV_PASSTHROUGH = (
    "PROVISIONING_SCRIPT",
    "DATA_DIRECTORY",
    "CONTAINER_ID",
    "VAST_CONTAINERLABEL",
    "PUBLIC_IPADDR",
    "GPU_COUNT",
    "OPEN_BUTTON_PORT",
)
SESSION_ENV_PREFIXES = ("VAST_TCP_PORT_", "VAST_UDP_PORT_")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ContainerEnvironment(FactBase):
    """
    Returns the environment of the box's PID 1: what Vast or ``docker run -e`` gave the
    container. Read base64-encoded so values with newlines (several SSH keys) survive.
    """

    def command(self) -> str:
        # The newline ends the line: asked in a batch, the next probe's marker starts its own.
        return "base64 -w0 /proc/1/environ 2>/dev/null; echo"

    def process(self, output) -> dict[str, str]:
        raw = base64.b64decode("".join(output).strip() or b"")
        env = {}
        for entry in raw.split(b"\0"):
            name, sep, value = entry.partition(b"=")
            if sep:
                env[name.decode(errors="replace")] = value.decode(errors="replace")
        return env


def runtime_environment() -> dict[str, str]:
    """
    The env the runtime settings come from: the container's (PID 1's, what ``docker run -e``
    or Vast's template gave it) over SSH; in the box's own converges, that env under the
    converge's own (``VNC_RESOLUTION=1024x768 /src/provisioning_script.sh`` is a one-off
    choice). A login shell lacks Vast's template env (SSH_PUBLIC_KEY, VISOMASTER_*): without
    PID 1's, a converge typed in an SSH session would resolve another box. @local anywhere but
    the box's deploy copy (a controller, a test) reads its own env only.
    """
    if host.connector_cls is LocalConnector and not ON_THE_BOX:
        return dict(os.environ)
    # PID 1's environment is fixed for the container's life.
    container = dict(once_per_host("PID 1's environment", _container_environment))
    if host.connector_cls is LocalConnector:
        return {**container, **os.environ}
    return container


def _container_environment() -> dict[str, str]:
    env = host.get_fact(ContainerEnvironment) or {}
    if "PATH" in env:
        return env
    # An sshd running as PID 1 rewrites its process title over its environment.
    if host.connector_cls is LocalConnector:
        logger.warning("the environment of PID 1 is empty or unreadable: runtime settings "
                       "come from this converge's own environment")
        return {}
    logger.warning(
        f"{host.name}: the environment of PID 1 is empty or unreadable: runtime settings "
        "come from --data and the defaults only"
    )
    return env


def once_per_host(key: Any, compute: Callable[[], Any]) -> Any:
    """compute()'s answer for this host, asked once per run (what the box was before it)."""
    return _once(host._get_module(), key, compute)


def once_per_run(key: Any, compute: Callable[[], Any]) -> Any:
    """compute()'s answer, computed once per run for all hosts (what the controller holds)."""
    return _once(state._get_module(), key, compute)


def _once(holder: Any, key: Any, compute: Callable[[], Any]) -> Any:
    memo = holder.__dict__.setdefault("_red_once_per_run", {})
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def _cli() -> set[str]:
    return set(host.inventory.get_override_data() or {})


def _resolve_host() -> Resolved:
    cli = _cli()
    try:
        phase = resolve(data=host.data.get, cli=cli)["red_phase"]
        configure = phase != "install"
        build_env = os.environ if host.connector_cls is LocalConnector else {}
        resolved = resolve(runtime_environment() if configure else baked_app_env(build_env),
                           data=host.data.get, cli=cli, build_env=build_env,
                           gpu=box_gpu if configure else None)
    except StrictSettingError as error:
        raise DeployError(str(error)) from None
    if configure:
        _note_api_gpu(resolved)
        record(resolved.decisions, logs_dir=resolved.base_logs_dir)
    return resolved


def _note_api_gpu(resolved: Resolved) -> None:
    """The flavor line adds what Vast's API listed (host data) where nvidia-smi differs."""
    said = api_said(host.data, box_gpu()[0]) if resolved.flavor else ""
    if not said:
        return
    start = f"{resolved.sources['visomaster_flavor']}={resolved.flavor.configured}: "
    at = next((i for i, line in enumerate(resolved.decisions) if line.startswith(start)), None)
    if at is not None:
        resolved.decisions[at] += said


def box_gpu():
    """The box's GPU (nvidia-smi on the box, bounded), asked once per host and run."""
    return once_per_host("GPU", lambda: host.get_fact(GpuReport))


def flavor() -> Any:
    """The flavor choice for this host (redbox.app.flavors.Choice): configured, chosen, why."""
    return current().flavor


def baked_app_env(build_env: Mapping[str, str]) -> dict[str, str]:
    """
    What an image build resolves runtime settings from: nothing, except for a build that bakes
    the app in (VISOMASTER_IN_IMAGE=1): then the build's VISOMASTER_* build args choose the app,
    as they do again at boot (the Dockerfile keeps them as the image's env).
    """
    try:
        baked = registry.BY_KEY["visomaster_in_image"].parser(
            build_env.get("VISOMASTER_IN_IMAGE") or False)
    except parse.Invalid:
        return {}  # the strict setting stops the run with its own line
    return {name: value for name, value in build_env.items()
            if baked and name.startswith("VISOMASTER_")}


def current() -> Resolved:
    """This host's settings, resolved once per host and run (decisions recorded once)."""
    real = host._get_module()
    resolved = getattr(real, "_red_settings", None)
    if resolved is None:
        resolved = _resolve_host()
        real._red_settings = resolved
    return resolved


def get(key: str) -> Any:
    """A setting's resolved value for the current host."""
    return current()[key]


def halves() -> tuple[bool, bool]:
    """(install, configure): which halves of the deploy this run applies (red_phase)."""
    phase = current().red_phase
    return phase in ("install", "all"), phase in ("configure", "all")


def cli_keys() -> set[str]:
    return _cli()


def secret_path(name: str) -> str:
    return current().secret_path(name)


def python_version() -> str:
    return get("python_version")


def visomaster() -> dict[str, Any]:
    """Every ``visomaster_*`` setting, resolved."""
    return {key: value for key, value in current().values.items()
            if key.startswith("visomaster_")}


def _resolve(env: Mapping[str, str], data: Callable[[str], Any] | None = None,
             cli: set[str] | None = None) -> Resolved:
    """Resolve without a pyinfra host (tests, tools): an env, data and --data keys."""
    return resolve(env, data=data or DEFAULTS.get, cli=cli or ())


def provisioning(env: Mapping[str, str],
                 data: Callable[[str], Any] | None = None) -> ProvisioningSettings:
    """The provisioning settings for an env and data (no pyinfra host needed)."""
    return provisioning_settings(_resolve(env, data))


def session_environment(runtime_settings: Resolved, env: Mapping[str, str],
                        data: Callable[[str], Any] | None = None) -> dict[str, str]:
    """
    What login shells get exported: the resolved ports and resolution, the workspace, and
    Vast's non-secret variables as the box's env has them. Values are data (the caller
    quotes them); names that are not shell identifiers are dropped.
    """
    values = {
        "SSH_PORT": str(runtime_settings.sshd_port),
        "JUPYTER_PORT": str(runtime_settings.jupyter_port),
        "NOVNC_PORT": str(runtime_settings.novnc_port),
        "VNC_PORT": str(runtime_settings.vnc_port),
        "PORTAL_PORT": str(runtime_settings.portal_port),
        "VNC_RESOLUTION": runtime_settings.vnc_resolution,
        "WORKSPACE": env.get("WORKSPACE") or str(runtime_settings.base_workspace_dir),
    }
    for name in sorted(env):
        passed = name in SESSION_ENV_PASSTHROUGH or name.startswith(SESSION_ENV_PREFIXES)
        if passed and env[name] and _ENV_NAME_RE.fullmatch(name) and "\0" not in env[name]:
            values[name] = env[name]
    return values


def append_log(lines: Iterable[str], topic: str, logs_dir: str | None = None) -> bool:
    """
    Append timestamped ``<topic>: <line>`` lines to ``<logs>/startup.log`` on this machine.
    Returns False (having written nothing) when the log cannot be written.
    """
    log_path = Path(startup_log(logs_dir or get("base_logs_dir")))
    stamp = timestamp()
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a", encoding="utf-8") as log:
            for line in lines:
                log.write(f"{stamp} {topic}: {line}\n")
    except OSError as error:
        logging.getLogger("red").warning(f"cannot write {log_path} ({error}); lines follow")
        return False
    return True


def record(decisions: list[str], topic: str = "settings", logs_dir: str | None = None) -> None:
    """
    Record decisions: one line each in ``<logs>/startup.log`` of the box (the container's own
    converge writes it here; over SSH it is appended there too, and each line is a pyinfra
    warning for the person at the controller).
    """
    if not decisions:
        return
    if host.connector_cls is not LocalConnector:
        for line in decisions:
            logger.warning(f"{host.name}: {line}")
        _append_on_box(decisions, topic, logs_dir or get("base_logs_dir"))
        return
    if not append_log(decisions, topic, logs_dir):
        for line in decisions:
            logger.warning(line)


def _append_on_box(lines: Iterable[str], topic: str, logs_dir: str) -> None:
    """
    Append the lines to the box's startup log over its connection. It runs as a fact (a
    command whose output is read), not an operation: a log line is no change to the box, and a
    second converge that decides the same again must still report none.
    """
    # printf reuses its format for each (timestamp, line) pair: one line each.
    pairs = " ".join(f"{SHELL_TIMESTAMP} {shlex.quote(f'{topic}: {line}')}" for line in lines)
    host.get_fact(
        Command,
        f"{{ mkdir -p {shlex.quote(str(logs_dir))} && printf '%s %s\\n' {pairs} "
        f">> {shlex.quote(startup_log(logs_dir))}; }} 2>/dev/null; true",
    )


PROVISIONING_SCRIPT_ENV = registry.BY_KEY["provisioning_script"].env[0]
# Each service port's env name (sshd_port -> SSH_PORT).
PORT_ENV = {setting.key: setting.env[0] for setting in registry.SETTINGS if setting.distinct_port}
# The settings page (docs/settings.md), generated whole from the registry; the README links to it.
SETTINGS_PAGE = "docs/settings.md"
_SETTINGS_PAGE_HEADER = """\
# Settings

<!-- Generated from box/src/redbox/settings/registry.py by `make settings-docs`; a unit test
checks it is current: edit the registry, not this page. -->

Every setting of Red, one row each, by concern. Where a value comes from, the first that has
one wins:

1. `--data key=value` on a deploy run (a live box keeps that run's choices in
   `/etc/red/settings.json` for its own converges, until the next run from the controller
   without them);
2. the box's environment, by the names in the second column: what `docker run -e` or Vast's
   template gave the container (PID 1's env), read by every converge of the box, over SSH and
   on the box alike; a converge on the box (the boot, the seed's scripts, `red-provision run`
   in an SSH session) also reads its own env over it, for a one-off value;
3. the default (`group_data/all.py`, generated from the same registry).

The image build reads none of the runtime environment, only its build args
(`PYTHON_VERSION`, `VISOMASTER_IN_IMAGE` and the `VISOMASTER_*` ones). A bad value never stops a
boot: the service comes up with the fallback, and `/logs/startup.log` gets one line naming the
variable and what was done (secrets are never written there). The strict ones stop the run
with one line instead: {strict}.

Secrets, when unset, are generated once and kept across restarts, root-only (0600), in
`{secrets_dir}/<setting>` ({secrets}); read one with
`ssh root@BOX cat {secrets_dir}/jupyter_token`.
"""
_GROUP_HEADINGS = {
    "base": "base: the seed's directories, the locale, where secrets live",
    "python": "python: the app's venv",
    "ssh": "ssh",
    "jupyter": "jupyter: JupyterLab in its own venv",
    "desktop": "desktop: TigerVNC's Xvnc on loopback, xfce, noVNC",
    "supervisor": "supervisor",
    "visomaster": "visomaster: the app, checked out and set up at configure time",
    "provisioning": "provisioning: the seed's boot-time flow (red-onstart) and converge runs",
    "notebooks": "notebooks",
    "portal": "portal: the front door (nginx on one HTTPS port) and the status page",
}


def group_data_text() -> str:
    """group_data/all.py as generated from the registry (what users read defaults in)."""
    lines = [
        '"""',
        "Defaults for every setting of the deploy, generated from box/src/redbox/settings/",
        "registry.py by `make settings-docs` (a unit test checks it is current): edit the",
        "registry, not this file. Override per run with ``--data key=value``; at container start",
        f"the environment variables in {SETTINGS_PAGE} override these.",
        "Precedence: ``--data`` > environment > this file.",
        '"""',
    ]
    group = None
    for setting in registry.SETTINGS:
        if setting.group != group:
            group = setting.group
            lines += ["", f"# -- {_GROUP_HEADINGS[group]}"]
        env = f" (env {', '.join(setting.env)})" if setting.env else ""
        lines += textwrap.wrap(f"{setting.doc}{env}", width=96, initial_indent="# ",
                               subsequent_indent="# ")
        if setting.secret:
            lines.append(f"# {setting.key}: generated when unset, kept in "
                         f"{DEFAULTS['secrets_dir']}/{setting.key} (root-only)")
        else:
            lines.append(f"{setting.key} = {setting.default!r}")
    return "\n".join(lines) + "\n"


def settings_table(entries: Iterable[registry.Setting] = registry.SETTINGS) -> str:
    """One Markdown table, one row per setting: its key, env names, default and meaning."""
    rows = ["| setting (`--data`) | environment | default | meaning |", "|---|---|---|---|"]
    for setting in entries:
        names = [f"`{name}`" for name in setting.env]
        if setting.joined_env:
            joined, separator = setting.joined_env
            names.append("else " + f" {separator} ".join(f"`{name}`" for name in joined))
        default = setting.shown_default
        if default is None:
            default = ", ".join(setting.default) if isinstance(setting.default, list) \
                else str(setting.default).lower() if isinstance(setting.default, bool) \
                else str(setting.default)
        rows.append(f"| `{setting.key}` | {', '.join(names)} | {default} | {setting.doc} |")
    return "\n".join(rows)


def settings_page() -> str:
    """docs/settings.md as generated from the registry: a header, then a table per concern."""
    parts = [_SETTINGS_PAGE_HEADER.format(
        strict=", ".join(f"`{s.key}`" for s in registry.SETTINGS if s.strict),
        secrets=", ".join(f"`{s.key}`" for s in registry.SETTINGS if s.secret),
        secrets_dir=DEFAULTS["secrets_dir"])]
    for group, members in itertools.groupby(registry.SETTINGS, key=lambda s: s.group):
        parts.append(f"## {_GROUP_HEADINGS[group]}\n\n{settings_table(members)}\n")
    return "\n".join(parts)


def write_docs(root: Path = ROOT) -> None:
    """Regenerate group_data/all.py and docs/settings.md from the registry."""
    (root / "group_data" / "all.py").write_text(group_data_text(), encoding="utf-8")
    page = root / SETTINGS_PAGE
    page.parent.mkdir(exist_ok=True)
    page.write_text(settings_page(), encoding="utf-8")
