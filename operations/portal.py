"""
The front door: one authenticated HTTPS port (nginx from the distro) in front of the status
page, the desktop (noVNC and its websocket) and JupyterLab, and the status writer that feeds
the page. With it on, noVNC and Jupyter listen on loopback only.

nginx, not Caddy: the distro's package on Ubuntu 22.04 (1.18) and Debian 12 (1.22) is one code
path with no third-party apt repository (Ubuntu 22.04 has no caddy), exact token compares fit
nginx's maps, its access log format is ours to choose (the path without the query string), and
a redirect that drops only ``token=`` from the query is one map (Caddy 2.6 cannot edit a query).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import File
from pyinfra.operations import files, server

from operations import settings
from operations._common import (
    Program,
    apt_install,
    autostart_unless_port_taken,
    secret,
    supervisor_program,
    template,
    upload,
)

PACKAGES = ["nginx", "openssl"]
WWW_FILES = ("index.html", "status.js", "status.css", "desktop.html", "401.html")
LIB = "/opt/red/lib/redbox"
LIB_FILES = ("__init__.py", "status.py", "door.py")
ENTRY_POINTS = ("red-portal", "red-status")
# The front door's token: 8+ characters a URL carries as they are (no percent-encoding), which
# also keeps them data in nginx's config. Vast's OPEN_BUTTON_TOKEN is of this kind.
TOKEN_RE = re.compile(r"^[A-Za-z0-9._~-]{8,256}$")
TOKEN_ENV = settings.SHARED_SECRET_ENV
ENV = {"portal_enabled": "PORTAL_ENABLED", "portal_port": "PORTAL_PORT",
       "portal_direct_ports": "PORTAL_DIRECT_PORTS"}
# Marks a policy-rc.d we put in place only while nginx installs (a box without one).
POLICY_MARK = "# red: held back while the front door nginx installs"


@dataclass
class PortalSettings:
    """The front door's resolved settings."""

    enabled: bool
    port: int
    direct_ports: bool
    # None: keep (or generate) the token in the secrets dir.
    token: str | None
    # JupyterLab's base_url: the door's path for it; "/" without a door.
    jupyter_base_url: str = "/"
    decisions: list[str] = field(default_factory=list)

    @property
    def backend_listen(self) -> str:
        """Where noVNC and Jupyter listen: loopback behind the door, else every address."""
        return "127.0.0.1" if self.enabled and not self.direct_ports else "0.0.0.0"  # noqa: S104


def resolve_portal(env: Mapping[str, str], data: Callable[[str], Any], cli: set[str],
                   taken_ports: set[int]) -> PortalSettings:
    """
    Resolve the front door's settings: --data > env (ENV, OPEN_BUTTON_TOKEN) > group data.
    A bad value falls back to its default with one line in ``decisions``.
    """
    notes: list[str] = []

    def raw(key: str, env_name: str | None) -> tuple[str, Any]:
        if key in cli or not env_name or env.get(env_name) in (None, ""):
            return (f"--data {key}" if key in cli else key), data(key)
        return env_name, env[env_name]

    flags = {}
    for key in ("portal_enabled", "portal_direct_ports"):
        source, value = raw(key, ENV[key])
        flag = value if isinstance(value, bool) else settings._BOOL_WORDS.get(
            str(value).strip().lower())
        if flag is None:
            flag = bool(settings.DEFAULTS[key])
            notes.append(f"{source}={settings._show(value)} is not true or false: using "
                         f"{str(flag).lower()}")
        flags[key] = flag
    default_port = int(settings.DEFAULTS["portal_port"])
    source, value = raw("portal_port", ENV["portal_port"])
    port = settings._parse_port(value)
    if port is None:
        notes.append(f"{source}={settings._show(value)} is not a port (1-65535): using "
                     f"{default_port}")
        port = default_port
    elif port in taken_ports:
        notes.append(f"{source}={port} is already used by another service: using {default_port}")
        port = default_port
    token_path = f"{data('secrets_dir')}/portal_token"
    source, token = raw("portal_token", TOKEN_ENV)
    token = None if token in (None, "") else str(token)
    if token is None:
        notes.append(f"{TOKEN_ENV} unset: the front door uses the generated token kept in "
                     f"{token_path} (root-only; read it there)")
    elif not TOKEN_RE.match(token):
        notes.append(f"{source} is not 8+ characters of A-Z a-z 0-9 . _ ~ - (what a URL "
                     f"carries as is): the front door uses the generated token kept in "
                     f"{token_path}")
        token = None
    if flags["portal_direct_ports"] or not flags["portal_enabled"]:
        notes.append("noVNC and Jupyter listen on their own ports off loopback too "
                     "(PORTAL_DIRECT_PORTS=true or PORTAL_ENABLED=false)")
    return PortalSettings(enabled=flags["portal_enabled"], port=port,
                          direct_ports=flags["portal_direct_ports"], token=token,
                          jupyter_base_url=str(data("portal_jupyter_base_url"))
                          if flags["portal_enabled"] else "/",
                          decisions=notes)


def portal_settings(runtime: settings.RuntimeSettings, configure: bool) -> PortalSettings:
    """The front door's settings for this host (defaults only when building an image)."""
    taken = {runtime.sshd_port, runtime.jupyter_port, runtime.novnc_port, runtime.vnc_port}
    if not configure:
        return resolve_portal({}, settings.DEFAULTS.get, set(), taken)
    door = resolve_portal(settings.runtime_environment(), settings.get,
                          set(host.inventory.get_override_data() or {}), taken)
    settings.record(door.decisions, topic="portal")
    return door


def _public_ip(env: Mapping[str, str]) -> str | None:
    """PUBLIC_IPADDR when it is an IP address (it goes into the certificate's names)."""
    value = (env.get("PUBLIC_IPADDR") or "").strip()
    try:
        return str(ipaddress.ip_address(value)) if value else None
    except ValueError:
        settings.record([f"PUBLIC_IPADDR={settings._show(value)} is not an IP address: the "
                         "certificate names localhost and 127.0.0.1 only"], topic="portal")
        return None


def _install_nginx() -> None:
    """Install nginx without letting its package start the distro's server on port 80."""
    missing = not all(name in (host.get_fact(DebPackages) or {}) for name in PACKAGES)
    if missing:
        server.shell(
            name="Hold back service starts while nginx installs",
            commands=[f"[ -e /usr/sbin/policy-rc.d ] || printf '#!/bin/sh\\n{POLICY_MARK}\\n"
                      "exit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d"],
        )
    apt_install(PACKAGES, name="Install nginx and openssl")
    if missing:
        server.shell(
            name="Let services start again",
            commands=[f"! grep -qx '{POLICY_MARK}' /usr/sbin/policy-rc.d 2>/dev/null "
                      "|| rm -f /usr/sbin/policy-rc.d"],
        )


def _certificate(portal_dir: str) -> tuple[str, str, list]:
    """Vast's instance certificate when present, else ours, made once per container."""
    cert, key = settings.get("portal_instance_cert"), settings.get("portal_instance_key")
    if host.get_fact(File, path=cert) and host.get_fact(File, path=key):
        return cert, key, []
    tls = f"{portal_dir}/tls"
    cert, key = f"{tls}/cert.pem", f"{tls}/key.pem"
    if host.get_fact(File, path=cert) and host.get_fact(File, path=key):
        return cert, key, []
    names = ["DNS:localhost", "IP:127.0.0.1"]
    public_ip = _public_ip(settings.runtime_environment())
    if public_ip and public_ip != "127.0.0.1":
        names.insert(0, f"IP:{public_ip}")
    made = server.shell(
        name=f"Make the front door's self-signed certificate {cert}",
        commands=[
            f"umask 077 && mkdir -p {tls} && openssl req -x509 -newkey ec "
            "-pkeyopt ec_paramgen_curve:prime256v1 -nodes "
            f"-days {int(settings.get('portal_cert_days'))} -subj '/CN=Red front door' "
            f"-addext 'subjectAltName={','.join(names)}' "
            f"-keyout {key}.new -out {cert}.new 2>/dev/null "
            f"&& mv -f {key}.new {key} && mv -f {cert}.new {cert}",
        ],
    )
    return cert, key, [made]


@deploy("Set up the front door")
def setup_portal(runtime: settings.RuntimeSettings, door: PortalSettings,
                 programs: list[Program], install: bool = True,
                 configure: bool = True) -> list[Program]:
    """
    Install nginx, the status page and the status writer; keep the token, the certificate
    and nginx's config; describe the ``portal`` and ``status`` programs.

    + runtime: the resolved runtime settings (the ports behind the door)
    + door: the front door's settings (``portal_settings``)
    + programs: the other concerns' programs: a change to the VNC password or Jupyter's token
      restarts the door too (it hands both on)
    + install: run the install half (packages, static files, library, entry points)
    + configure: run the configure half (token, certificate, nginx's config)
    """
    portal_dir = settings.get("portal_dir")
    www = settings.get("portal_www_dir")
    status_dir = settings.get("portal_status_dir")
    if install:
        _install_nginx()
        for name in LIB_FILES:
            upload("lib", f"{LIB}/{name}", mode="644")
        for name in ENTRY_POINTS:
            upload("portal", f"/opt/red/bin/{name}")
        for name in WWW_FILES:
            upload("portal", f"{www}/{name}", mode="644")
    files.directory(name=f"Create {portal_dir} (root-only)", path=portal_dir, mode="700")
    files.directory(name=f"Create {status_dir}", path=status_dir, mode="755")
    token_path = settings.secret_path("portal_token")
    config = f"{portal_dir}/nginx.conf"
    restart_on = []
    if configure:
        restart_on.append(secret(name=f"Keep the front door's token in {token_path}",
                                 path=token_path, value=door.token, length=32))
        cert, key, made = _certificate(portal_dir)
        restart_on += made
        restart_on.append(files.template(
            name=f"Upload {config}",
            src=template("portal", "/etc/red/portal/nginx.conf"),
            dest=config,
            mode="600",
            port=door.port,
            cert=cert,
            key=key,
            secrets_conf=f"{portal_dir}/secrets.conf",
            www=www,
            status_dir=status_dir,
            novnc_port=runtime.novnc_port,
            jupyter_port=runtime.jupyter_port,
            jupyter_base_url=door.jupyter_base_url,
        ))
        restart_on += [op for program in programs if program.name in ("xvnc", "jupyter")
                       for op in program.restart_on]
    portal = Program(
        name="portal",
        command=(
            f"/opt/red/bin/red-portal serve --config {config} "
            f"--secrets-conf {portal_dir}/secrets.conf --token-file {token_path} "
            f"--vnc-password-file {settings.secret_path('vnc_password')} "
            f"--jupyter-token-file {settings.secret_path('jupyter_token')} "
            f"--cookie-name red_door_{door.port}"
        ),
        priority=70,
        autostart=door.enabled and autostart_unless_port_taken(
            "portal", door.port, "PORTAL_PORT", configure),
        restart_on=restart_on,
    )
    status = Program(
        name="status",
        command=(
            f"/opt/red/bin/red-status --output {status_dir} "
            f"--interval {int(settings.get('portal_status_interval'))} "
            f"--logs-dir {settings.get('base_logs_dir')} "
            f"--provisioning-dir {settings.get('provisioning_state_dir')} "
            f"--models-state {settings.get('visomaster_models_state')} "
            f"--app-dir {settings.get('visomaster_dir')} "
            f"--app-venv {settings.get('python_app_venv')} "
            f"--secrets-dir {settings.get('secrets_dir')} "
            f"--jupyter-path {door.jupyter_base_url}"
        ),
        priority=80,
        autostart=door.enabled,
    )
    return [supervisor_program(portal), supervisor_program(status)]
