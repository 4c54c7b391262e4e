"""
Settings: where every value the deploy uses comes from, and what happens to a bad one.

Defaults live in ``group_data/all.py``. This module maps each setting to the environment
variables users already know (the seed's, Vast's, RunPod's names), validates the values and
records one line per decision: a bad value never stops a boot, it gets a fallback and a line
in ``/logs/startup.log`` naming the variable. Secrets are never written into that line.

Precedence: ``--data key=value`` > environment > ``group_data/all.py``.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import runpy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pyinfra import host, logger
from pyinfra.api import FactBase
from pyinfra.connectors.local import LocalConnector

from redbox import gitref, seed
from redbox.log import show as _show
from redbox.log import show_url, startup_log, timestamp

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = {
    key: value
    for key, value in runpy.run_path(str(ROOT / "group_data" / "all.py")).items()
    if not key.startswith("_")
}

# Bounds for VNC_RESOLUTION: below 640x480 the desktop is unusable, above 8K Xvnc's
# framebuffer alone would take hundreds of MB.
RESOLUTION_MIN = (640, 480)
RESOLUTION_MAX = (7680, 4320)
# VNC's DES authentication reads 8 characters; fewer than 6 is too weak to accept.
VNC_PASSWORD_MIN, VNC_PASSWORD_MAX = 6, 8

PORT_ENV = {
    "sshd_port": "SSH_PORT",
    "jupyter_port": "JUPYTER_PORT",
    "novnc_port": "NOVNC_PORT",
    "vnc_port": "VNC_PORT",
}
SSH_KEY_ENV = ("SSH_PUBLIC_KEY", "PUBLIC_KEY")
VNC_PASSWORD_ENV = ("VNC_PW", "VNC_PASSWORD")
JUPYTER_TOKEN_ENV = ("JUPYTER_TOKEN",)
# Vast's one secret for its web "open" buttons: the natural shared fallback.
SHARED_SECRET_ENV = "OPEN_BUTTON_TOKEN"  # noqa: S105 - a variable name, not a secret
PYTHON_VERSION_ENV = "RED_PYTHON_VERSION"

# -- provisioning (read by /opt/red/bin/red-provision, outside pyinfra: env > group data)
PROVISIONING_SCRIPT_ENV = "PROVISIONING_SCRIPT"
# Each number's env name and inclusive bounds.
PROVISIONING_NUMBER_ENV = {
    "provisioning_script_timeout": ("PROVISIONING_TIMEOUT", 1, 86400),
    "provisioning_download_connect_timeout": ("PROVISIONING_CONNECT_TIMEOUT", 1, 300),
    "provisioning_download_timeout": ("PROVISIONING_DOWNLOAD_TIMEOUT", 1, 3600),
    "provisioning_download_retries": ("PROVISIONING_DOWNLOAD_RETRIES", 0, 10),
    "provisioning_download_backoff": ("PROVISIONING_DOWNLOAD_BACKOFF", 0, 300),
    "provisioning_lock_timeout": ("PROVISIONING_LOCK_TIMEOUT", 0, 86400),
}
# The seed's local scripts, in the seed's order: without a URL the first that exists runs.
PROVISIONING_FALLBACK_SCRIPTS = seed.SCRIPTS

# -- login shells: what /etc/profile.d/red.sh exports besides the resolved settings. Vast's
# non-secret variables, as the box's env has them; never a token, password or API key.
SESSION_ENV_PASSTHROUGH = (
    PROVISIONING_SCRIPT_ENV,
    "DATA_DIRECTORY",
    "CONTAINER_ID",
    "VAST_CONTAINERLABEL",
    "PUBLIC_IPADDR",
    "GPU_COUNT",
    "OPEN_BUTTON_PORT",
)
SESSION_ENV_PREFIXES = ("VAST_TCP_PORT_", "VAST_UDP_PORT_")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_SSH_KEY_RE = re.compile(
    r"^(?:(?:ssh-(?:ed25519|rsa|dss)|ecdsa-sha2-nistp(?:256|384|521)"
    r"|sk-(?:ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/]+={0,3})"
    r"(?: [\x21-\x7e][\x20-\x7e]*)?$"
)
_TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")


@dataclass
class RuntimeSettings:
    """What the configure half of the deploy needs: resolved from --data, env and defaults."""

    sshd_port: int
    jupyter_port: int
    novnc_port: int
    vnc_port: int
    vnc_width: int
    vnc_height: int
    # None: keep (or generate) the secret in the secrets dir.
    vnc_password: str | None
    jupyter_token: str | None
    ssh_authorized_keys: list[str]
    decisions: list[str] = field(default_factory=list)

    @property
    def vnc_resolution(self) -> str:
        return f"{self.vnc_width}x{self.vnc_height}"


@dataclass
class ProvisioningSettings:
    """What the boot-time flow and the converge runs need; resolved from env and defaults."""

    # "" when PROVISIONING_SCRIPT is unset (or unusable: then url_problem says why).
    script_url: str
    url_problem: str | None
    script_timeout: int
    connect_timeout: int
    download_timeout: int
    download_retries: int
    download_backoff: int
    lock_timeout: int
    supervisor_wait: int
    state_dir: str
    fallback_scripts: tuple[str, ...] = PROVISIONING_FALLBACK_SCRIPTS
    decisions: list[str] = field(default_factory=list)


def get(key: str):
    """A setting from --data or group data, falling back to group_data/all.py's default."""
    value = host.data.get(key)
    return DEFAULTS.get(key) if value is None else value


def _from_cli(key: str) -> bool:
    return key in (host.inventory.get_override_data() or {})


class ContainerEnvironment(FactBase):
    """
    Returns the environment of the box's PID 1: what Vast or ``docker run -e`` gave the
    container. Read base64-encoded so values with newlines (several SSH keys) survive.
    """

    def command(self) -> str:
        return "base64 -w0 /proc/1/environ 2>/dev/null || true"

    def process(self, output) -> dict[str, str]:
        raw = base64.b64decode("".join(output).strip() or b"")
        env = {}
        for entry in raw.split(b"\0"):
            name, sep, value = entry.partition(b"=")
            if sep:
                env[name.decode(errors="replace")] = value.decode(errors="replace")
        return env


def runtime_environment() -> dict[str, str]:
    """The env the runtime settings come from: ours for @local, the container's otherwise."""
    if host.connector_cls is LocalConnector:
        return dict(os.environ)
    env = host.get_fact(ContainerEnvironment) or {}
    if "PATH" not in env:
        # An sshd running as PID 1 rewrites its process title over its environment.
        logger.warning(
            f"{host.name}: the environment of PID 1 is empty or unreadable: runtime settings "
            "come from --data and the defaults only"
        )
    return env


def python_version() -> str:
    """The app venv's Python (a build setting): --data, then RED_PYTHON_VERSION, then default."""
    env_value = os.environ.get(PYTHON_VERSION_ENV) if host.connector_cls is LocalConnector else None
    if not _from_cli("python_version") and env_value:
        value = env_value
    else:
        value = str(get("python_version"))
    if not re.fullmatch(r"3\.\d{1,2}", value):
        raise ValueError(
            f"python_version={value!r} is not a Python version like 3.10 "
            f"(set it with --data python_version=3.10 or {PYTHON_VERSION_ENV}=3.10)"
        )
    return value


class _Resolver:
    def __init__(self, env: Mapping[str, str], data: Callable[[str], Any], cli: set[str]):
        self.env = env
        # Settings from --data or group data, and which of them came from --data.
        self.data = data
        self.cli = cli
        self.decisions: list[str] = []

    def note(self, line: str) -> None:
        self.decisions.append(line)

    def first_env(self, names) -> tuple[str | None, str | None]:
        for name in names:
            value = self.env.get(name)
            if value is not None and value != "":
                return name, value
        return None, None

    def port(self, key: str, taken: set[int]) -> int:
        default = int(DEFAULTS[key])
        if key in self.cli:
            source, raw = f"--data {key}", str(self.data(key))
        else:
            source, raw = PORT_ENV[key], self.env.get(PORT_ENV[key])
            if raw is None or raw == "":
                source, raw = key, str(self.data(key))
        value = _parse_port(raw)
        if value is None:
            self.note(f"{source}={_show(raw)} is not a port (1-65535): using {default}")
            value = default
        if value in taken:
            self.note(f"{source}={value} is already used by another service: using {default}")
            value = default
        taken.add(value)
        return value

    def resolution(self) -> tuple[int, int]:
        default = _parse_resolution(str(DEFAULTS["vnc_resolution"]))
        if "vnc_resolution" in self.cli:
            source, raw = "--data vnc_resolution", str(self.data("vnc_resolution"))
        elif self.env.get("VNC_RESOLUTION"):
            source, raw = "VNC_RESOLUTION", self.env["VNC_RESOLUTION"]
        elif self.env.get("DISPLAY_SIZEW") or self.env.get("DISPLAY_SIZEH"):
            source = "DISPLAY_SIZEW/DISPLAY_SIZEH"
            raw = f"{self.env.get('DISPLAY_SIZEW', '')}x{self.env.get('DISPLAY_SIZEH', '')}"
        else:
            source, raw = "vnc_resolution", str(self.data("vnc_resolution"))
        parsed = _parse_resolution(raw)
        if parsed is None:
            low, high = "x".join(map(str, RESOLUTION_MIN)), "x".join(map(str, RESOLUTION_MAX))
            self.note(
                f"{source}={_show(raw)} is not WIDTHxHEIGHT within {low}..{high}: "
                f"using {default[0]}x{default[1]}"
            )
            return default
        return parsed

    def secret(self, key: str, env_names, *, stored_in: str, check) -> str | None:
        """A secret from --data, its env names or OPEN_BUTTON_TOKEN; None means generate."""
        if key in self.cli:
            source, value = f"--data {key}", str(self.data(key))
        else:
            source, value = self.first_env((*env_names, SHARED_SECRET_ENV))
        names = "/".join(env_names)
        if value is None:
            self.note(
                f"{names} unset: using the generated secret kept in {stored_in} "
                "(root-only; read it there)"
            )
            return None
        problem = check(value)
        if problem is None:
            return value
        if problem.startswith("warning:"):
            self.note(f"{source}: {problem.removeprefix('warning:').strip()}")
            return value
        self.note(f"{source} {problem}: using the generated secret kept in {stored_in}")
        return None

    def authorized_keys(self) -> list[str]:
        keys: list[str] = []
        if "ssh_authorized_keys" in self.cli:
            sources = [("--data ssh_authorized_keys", self.data("ssh_authorized_keys"))]
        else:
            sources = [(name, self.env.get(name)) for name in SSH_KEY_ENV]
        for name, value in sources:
            if not value:
                continue
            # Env values often carry several keys joined by literal "\n"s.
            text = "\n".join(value) if isinstance(value, list) else str(value)
            for number, raw_line in enumerate(text.replace("\\n", "\n").splitlines(), 1):
                line = raw_line.strip()
                if not line or line.startswith("#"):
                    continue
                if _SSH_KEY_RE.match(line):
                    if line not in keys:
                        keys.append(line)
                else:
                    self.note(f"{name}: line {number} is not an SSH public key: skipped")
        if not keys:
            self.note(
                f"{'/'.join(SSH_KEY_ENV)} unset: no key added; "
                "keys already in /root/.ssh/authorized_keys are kept"
            )
        return keys


def _parse_port(raw) -> int | None:
    text = str(raw).strip()
    if not text.isdigit() or not text.isascii():
        return None
    value = int(text)
    return value if 1 <= value <= 65535 else None


def _parse_resolution(raw: str) -> tuple[int, int] | None:
    match = re.fullmatch(r"([0-9]{3,5})x([0-9]{3,5})", raw.strip())
    if not match:
        return None
    width, height = int(match[1]), int(match[2])
    if not (RESOLUTION_MIN[0] <= width <= RESOLUTION_MAX[0]):
        return None
    if not (RESOLUTION_MIN[1] <= height <= RESOLUTION_MAX[1]):
        return None
    return width, height


def _check_vnc_password(value: str) -> str | None:
    if not _TOKEN_RE.match(value):
        return "has spaces, control or non-ASCII characters"
    if len(value) < VNC_PASSWORD_MIN:
        return f"is shorter than {VNC_PASSWORD_MIN} characters"
    if len(value) > VNC_PASSWORD_MAX:
        return (
            f"warning: VNC authentication uses only the first {VNC_PASSWORD_MAX} "
            f"of its {len(value)} characters"
        )
    return None


def _check_token(value: str) -> str | None:
    if not _TOKEN_RE.match(value):
        return "has spaces, control or non-ASCII characters"
    if len(value) < 8:
        return "is shorter than 8 characters"
    return None


def secret_path(name: str) -> str:
    return f"{get('secrets_dir')}/{name}"


def _check_url(raw: str) -> str | None:
    if any(ord(char) <= 32 or ord(char) == 127 for char in raw):
        return "has spaces or control characters"
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "is not an http(s) URL"
    return None


def provisioning(env: Mapping[str, str],
                 data: Callable[[str], Any] | None = None) -> ProvisioningSettings:
    """
    Resolve the provisioning settings: env names above > ``data`` (default: group data).
    A bad number falls back to its default; a bad URL is refused (nothing is downloaded).
    The decisions are returned, not recorded: the caller logs them.
    """
    data = data or DEFAULTS.get
    decisions: list[str] = []
    numbers = {}
    for key, (name, low, high) in PROVISIONING_NUMBER_ENV.items():
        default = int(DEFAULTS[key])
        source, raw = name, env.get(name)
        if raw is None or raw == "":
            source, raw = key, data(key)
        text = str(raw).strip()
        value = int(text) if text.isascii() and text.isdigit() else None
        if value is None or not low <= value <= high:
            decisions.append(
                f"{source}={_show(raw)} is not a whole number in {low}..{high}: using {default}"
            )
            value = default
        numbers[key] = value
    url = env.get(PROVISIONING_SCRIPT_ENV) or str(data("provisioning_script") or "")
    url = url.strip()
    problem = _check_url(url) if url else None
    if problem:
        decisions.append(
            f"{PROVISIONING_SCRIPT_ENV}={show_url(url)} {problem}: nothing is downloaded"
        )
    return ProvisioningSettings(
        script_url="" if problem else url,
        url_problem=problem,
        script_timeout=numbers["provisioning_script_timeout"],
        connect_timeout=numbers["provisioning_download_connect_timeout"],
        download_timeout=numbers["provisioning_download_timeout"],
        download_retries=numbers["provisioning_download_retries"],
        download_backoff=numbers["provisioning_download_backoff"],
        lock_timeout=numbers["provisioning_lock_timeout"],
        supervisor_wait=int(data("provisioning_supervisor_wait")),
        state_dir=str(data("provisioning_state_dir")),
        decisions=decisions,
    )


def session_environment(runtime_settings: RuntimeSettings, env: Mapping[str, str],
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
        "VNC_RESOLUTION": runtime_settings.vnc_resolution,
        "WORKSPACE": env.get("WORKSPACE") or str((data or get)("base_workspace_dir")),
    }
    for name in sorted(env):
        passed = name in SESSION_ENV_PASSTHROUGH or name.startswith(SESSION_ENV_PREFIXES)
        if passed and env[name] and _ENV_NAME_RE.match(name) and "\0" not in env[name]:
            values[name] = env[name]
    return values


def runtime() -> RuntimeSettings:
    """
    Resolve the runtime settings for the current host and record each decision.

    On ``@local`` (the container's own boot) decisions go to ``<logs>/startup.log``; on other
    connectors they are printed as pyinfra warnings.
    """
    settings = _resolve(runtime_environment())
    record(settings.decisions)
    return settings


def defaults() -> RuntimeSettings:
    """The runtime settings without any environment: what an image is built with."""
    return _resolve({})


def _resolve(
    env: Mapping[str, str],
    data: Callable[[str], Any] | None = None,
    cli: set[str] | None = None,
) -> RuntimeSettings:
    """Resolve runtime settings from an env, data (default: the host's) and --data keys."""
    if data is None:
        data = get
        cli = set(host.inventory.get_override_data() or {})
    resolver = _Resolver(env, data, cli or set())
    taken: set[int] = set()
    ports = {key: resolver.port(key, taken) for key in PORT_ENV}
    width, height = resolver.resolution()
    return RuntimeSettings(
        **ports,
        vnc_width=width,
        vnc_height=height,
        vnc_password=resolver.secret(
            "vnc_password",
            VNC_PASSWORD_ENV,
            stored_in=f"{data('secrets_dir')}/vnc_password",
            check=_check_vnc_password,
        ),
        jupyter_token=resolver.secret(
            "jupyter_token",
            JUPYTER_TOKEN_ENV,
            stored_in=f"{data('secrets_dir')}/jupyter_token",
            check=_check_token,
        ),
        ssh_authorized_keys=resolver.authorized_keys(),
        decisions=resolver.decisions,
    )


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


def record(decisions: list[str], topic: str = "settings") -> None:
    """
    Record decisions: one line each in ``<logs>/startup.log`` on ``@local`` (the container's
    own converge), pyinfra warnings on other connectors.
    """
    if not decisions:
        return
    if host.connector_cls is not LocalConnector:
        for line in decisions:
            logger.warning(f"{host.name}: {line}")
        return
    if not append_log(decisions, topic):
        for line in decisions:
            logger.warning(line)


# -- visomaster: the app's settings users set per box (README's settings table lists the names)
VISOMASTER_ENV = {
    "visomaster_repo_url": "VISOMASTER_REPO_URL",
    "visomaster_ref": "VISOMASTER_REF",
    "visomaster_dir": "VISOMASTER_DIR",
    "visomaster_checkout": "VISOMASTER_CHECKOUT",
    "visomaster_requirements": "VISOMASTER_REQUIREMENTS",
    "visomaster_install_requirements": "VISOMASTER_INSTALL_REQUIREMENTS",
    "visomaster_download_models": "VISOMASTER_DOWNLOAD_MODELS",
    "visomaster_autostart": "VISOMASTER_AUTOSTART",
}
_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True,
               "0": False, "false": False, "no": False, "off": False}
# Plain relative paths (no "..", no spaces, no "%").
_REL_PATH_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(?:/[A-Za-z0-9_][A-Za-z0-9._-]*)*")
_APP_EXPECTED = {
    "visomaster_repo_url": "a git URL",
    "visomaster_ref": "a tag, branch or commit name",
    "visomaster_dir": "an absolute directory below /",
    "visomaster_requirements": "a relative file name in the checkout",
}


def _app_value(key: str, raw: Any) -> Any:
    """A visomaster setting's value in its type, or None when it is not valid."""
    if isinstance(DEFAULTS[key], bool):
        return raw if isinstance(raw, bool) else _BOOL_WORDS.get(str(raw).strip().lower())
    text = str(raw).strip()
    if not _TOKEN_RE.fullmatch(text) or text.startswith("-"):
        return None
    if key == "visomaster_ref":
        return text if gitref.valid(text) else None
    if key == "visomaster_dir":
        path = os.path.normpath(text)
        ok = path.startswith("/") and path != "/" and _REL_PATH_RE.fullmatch(path[1:])
        return path if ok else None
    if key == "visomaster_requirements":
        return text if _REL_PATH_RE.fullmatch(text) else None
    return text


def visomaster(environment: bool = True) -> dict[str, Any]:
    """
    Every ``visomaster_*`` setting: --data, then (with ``environment``) the env names in
    VISOMASTER_ENV, then group_data/all.py. A bad value falls back to its default with one
    recorded line naming where it came from.
    """
    env = runtime_environment() if environment else {}
    cli = set(host.inventory.get_override_data() or {})
    values = {key: get(key) for key in DEFAULTS if key.startswith("visomaster_")}
    notes = []
    for key, name in VISOMASTER_ENV.items():
        if key not in cli and env.get(name):
            source, raw = name, env[name]
        else:
            source, raw = (f"--data {key}" if key in cli else key), get(key)
        value = _app_value(key, raw)
        if value is None:
            value = DEFAULTS[key]
            expected = _APP_EXPECTED.get(key, "true or false")
            notes.append(f"{source}={_show(raw)} is not {expected}: using {value}")
        values[key] = value
    record(notes)
    return values
