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
from collections.abc import Mapping
from dataclasses import dataclass, field

from pyinfra.api import deploy
from pyinfra.operations import server

from operations import _files, settings
from operations.ops import apt_install, installed_packages, secret, template, upload
from operations.ports import autostart_unless_port_taken
from operations.program import Program, supervisor_program
from redbox.settings import parse

PACKAGES = ["nginx", "openssl"]
WWW_FILES = ("index.html", "status.js", "status.css", "desktop.html", "401.html")
# Marks a policy-rc.d we put in place only while nginx installs (a box without one).
POLICY_MARK = "# red: held back while the front door nginx installs"
LOOPBACK = "127.0.0.1"
EVERY_ADDRESS = "0.0.0.0"  # noqa: S104 - only without the front door, or when asked for


@dataclass
class PortalSettings:
    """The front door's view of the resolved settings (``portal_settings``)."""

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
        return LOOPBACK if self.enabled and not self.direct_ports else EVERY_ADDRESS


def portal_settings(runtime: settings.RuntimeSettings) -> PortalSettings:
    """
    The front door's settings, from the resolved runtime settings (redbox/registry.py's
    "portal" group: their fallbacks are already decided there).
    """
    enabled = bool(runtime.portal_enabled)
    direct = bool(runtime.portal_direct_ports)
    notes = []
    if direct or not enabled:
        cause = "PORTAL_DIRECT_PORTS=true" if enabled else "PORTAL_ENABLED=false"
        notes.append(f"{cause}: noVNC ({runtime.novnc_port}) and Jupyter "
                     f"({runtime.jupyter_port}) listen off loopback on their own ports too")
    return PortalSettings(enabled=enabled, port=runtime.portal_port, direct_ports=direct,
                          token=runtime.portal_token,
                          jupyter_base_url=runtime.portal_jupyter_base_url if enabled else "/",
                          decisions=notes)


def _public_ip(env: Mapping[str, str]) -> str | None:
    """PUBLIC_IPADDR when it is an IP address (it goes into the certificate's names)."""
    value = (env.get("PUBLIC_IPADDR") or "").strip()
    try:
        return str(ipaddress.ip_address(value)) if value else None
    except ValueError:
        settings.record([f"PUBLIC_IPADDR={parse.show(value)} is not an IP address: the "
                         "certificate names localhost and 127.0.0.1 only"], topic="portal")
        return None


def _install_nginx() -> None:
    """Install nginx without letting its package start the distro's server on port 80."""
    missing = not all(name in installed_packages() for name in PACKAGES)
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


def _certificate_pairs(portal_dir: str) -> list[tuple[str, str]]:
    """Vast's instance certificate and key, then ours."""
    tls = f"{portal_dir}/tls"
    return [(settings.get("portal_instance_cert"), settings.get("portal_instance_key")),
            (f"{tls}/cert.pem", f"{tls}/key.pem")]


@_files.up_front
def _asked_every_run() -> None:
    """Its directories (made in either half); the certificates (configure half)."""
    _files.expect_with_directories(settings.get("portal_dir"), settings.get("portal_status_dir"))
    if settings.halves()[1]:
        _files.expect(*(path for pair in _certificate_pairs(settings.get("portal_dir"))
                        for path in pair))


def _certificate(portal_dir: str) -> tuple[str, str, list]:
    """Vast's instance certificate when present, else ours, made once per container."""
    tls = f"{portal_dir}/tls"
    pairs = _certificate_pairs(portal_dir)
    for cert, key in pairs:
        if _files.is_file(cert) and _files.is_file(key):
            return cert, key, []
    cert, key = pairs[-1]
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
def setup_portal(runtime: settings.RuntimeSettings, programs: list[Program],
                 install: bool = True, configure: bool = True) -> list[Program]:
    """
    Install nginx, the status page and the status writer's entry points; keep the token, the
    certificate and nginx's config; describe the ``portal`` and ``status`` programs.

    + runtime: the resolved runtime settings (the door's, and the ports behind it)
    + programs: the other concerns' programs: a change to the VNC password or Jupyter's token
      restarts the door too (it hands both on)
    + install: run the install half (packages, static files, entry points; the library is
      operations/runtime.py's)
    + configure: run the configure half (token, certificate, nginx's config)
    """
    door = portal_settings(runtime)
    portal_dir = settings.get("portal_dir")
    www = settings.get("portal_www_dir")
    status_dir = settings.get("portal_status_dir")
    if install:
        _install_nginx()
        for name in WWW_FILES:
            upload("portal", f"{www}/{name}", mode="644")
    _files.directory(name=f"Create {portal_dir} (root-only)", path=portal_dir, mode="700")
    _files.directory(name=f"Create {status_dir}", path=status_dir, mode="755")
    token_path = settings.secret_path("portal_token")
    portal, status = build_programs(runtime)
    if configure:
        settings.record(door.decisions, topic="portal")
        portal.restart_on.append(secret(name=f"Keep the front door's token in {token_path}",
                                        path=token_path, value=door.token, length=32))
        cert, key, made = _certificate(portal_dir)
        portal.restart_on += made
        portal.restart_on.append(_files.template(
            name=f"Upload {portal_dir}/nginx.conf",
            src=template("portal", "/etc/red/portal/nginx.conf"),
            dest=f"{portal_dir}/nginx.conf",
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
        portal.restart_on += [op for program in programs if program.name in ("xvnc", "jupyter")
                              for op in program.restart_on]
    portal.autostart = door.enabled and autostart_unless_port_taken(
        "portal", door.port, settings.PORT_ENV["portal_port"], configure)
    return [supervisor_program(portal), supervisor_program(status)]


def build_programs(runtime: settings.RuntimeSettings, data=settings.get) -> list[Program]:
    """
    The front door (nginx behind red-portal) and the status writer for these settings (no
    pyinfra host needed).

    + runtime: the resolved runtime settings
    + data: where other settings come from (the host's data; ``settings.DEFAULTS.get``)
    """
    door = portal_settings(runtime)
    portal_dir = data("portal_dir")
    secrets_dir = data("secrets_dir")
    portal = Program(
        name="portal",
        command="/opt/red/bin/red-portal",
        args=["serve", "--config", f"{portal_dir}/nginx.conf",
              "--secrets-conf", f"{portal_dir}/secrets.conf",
              "--token-file", f"{secrets_dir}/portal_token",
              "--vnc-password-file", f"{secrets_dir}/vnc_password",
              "--jupyter-token-file", f"{secrets_dir}/jupyter_token",
              "--cookie-name", f"red_door_{door.port}"],
        priority=70,
        module=__name__,
        port_setting="portal_port",
        port=door.port,
        # Every request authenticates (token, cookie, Bearer or basic), over TLS only.
        public=door.enabled,
        autostart=door.enabled,
    )
    status = Program(
        name="status",
        command="/opt/red/bin/red-status",
        args=["--output", data("portal_status_dir"),
              "--interval", str(data("portal_status_interval")),
              "--logs-dir", data("base_logs_dir"),
              "--provisioning-dir", data("provisioning_state_dir"),
              "--models-state", data("visomaster_models_state"),
              "--app-dir", data("visomaster_dir"),
              "--app-venv", data("python_app_venv"),
              "--secrets-dir", secrets_dir,
              "--supervisor-socket", data("supervisor_socket"),
              "--jupyter-path", door.jupyter_base_url],
        priority=80,
        module=__name__,
        autostart=door.enabled,
    )
    return [portal, status]
