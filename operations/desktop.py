"""
The VNC desktop: TigerVNC's Xvnc on loopback, a light xfce session once X answers, and noVNC
served by websockify so a browser is the only client a user needs.
"""

from pyinfra.api import deploy

from operations import settings
from operations.ops import apt_install, secret, upload
from operations.portal import LOOPBACK, portal_settings
from operations.program import Program, supervisor_program

DESKTOP_PACKAGES = [
    "tigervnc-standalone-server",
    "tigervnc-tools",
    "xfce4-session",
    "xfwm4",
    "xfdesktop4",
    "xfce4-panel",
    "xfce4-terminal",
    "thunar",
    "dbus-x11",
    "x11-utils",
    "xfonts-base",
    "fonts-dejavu-core",
    "novnc",
    "websockify",
]
WRAPPERS = ("red-xvnc", "red-desktop", "red-novnc")
# Our xfconf defaults, searched before the distro's (see files/desktop/etc/red/xdg).
XDG_CONFIG_DIRS = "/etc/red/xdg:/etc/xdg"
SESSION_XML = "/etc/red/xdg/xfce4/xfconf/xfce-perchannel-xml/xfce4-session.xml"


@deploy("Set up the VNC desktop")
def setup_desktop(runtime: settings.RuntimeSettings, install: bool = True,
                  configure: bool = True) -> list[Program]:
    """
    Install Xvnc, xfce and noVNC, keep the VNC password and describe their programs.

    + runtime: the resolved runtime settings (resolution, ports, password)
    + install: run the install half (packages, wrappers)
    + configure: run the configure half (the VNC password)
    """
    if install:
        apt_install(DESKTOP_PACKAGES, name="Install TigerVNC, xfce and noVNC")
        for wrapper in WRAPPERS:
            upload("desktop", f"/opt/red/bin/{wrapper}")
        upload("desktop", SESSION_XML, mode="644")
    password_path = settings.secret_path("vnc_password")
    xvnc, desktop, novnc = build_programs(runtime)
    if configure:
        xvnc.restart_on.append(
            secret(name=f"Keep the VNC password in {password_path}", path=password_path,
                   value=runtime.vnc_password, length=8)
        )
    return [supervisor_program(program) for program in (xvnc, desktop, novnc)]


def build_programs(runtime: settings.RuntimeSettings, data=settings.get) -> list[Program]:
    """
    Xvnc, the xfce session and noVNC for these settings (no pyinfra host needed).

    + runtime: the resolved runtime settings
    + data: where other settings come from (the host's data; ``settings.DEFAULTS.get``)
    """
    display = data("vnc_display")
    # Behind the front door noVNC is reached through it only.
    listen = portal_settings(runtime).backend_listen
    return [
        Program(
            name="xvnc",
            command="/opt/red/bin/red-xvnc",
            priority=20,
            module=__name__,
            environment={
                "RED_DISPLAY": display,
                "RED_VNC_PORT": runtime.vnc_port,
                "RED_VNC_RESOLUTION": runtime.vnc_resolution,
                "RED_VNC_DEPTH": data("vnc_depth"),
                "RED_VNC_PASSWORD_FILE": f"{data('secrets_dir')}/vnc_password",
            },
            port_setting="vnc_port",
            port=runtime.vnc_port,
        ),
        Program(
            name="desktop",
            command="/opt/red/bin/red-desktop",
            priority=30,
            module=__name__,
            environment={
                "RED_DISPLAY": display,
                "HOME": "/root",
                "USER": "root",
                "SHELL": "/bin/bash",
                "XDG_CONFIG_DIRS": XDG_CONFIG_DIRS,
                # No accessibility bus in a container: silence its warning per program.
                "NO_AT_BRIDGE": "1",
            },
        ),
        Program(
            name="novnc",
            command="/opt/red/bin/red-novnc",
            priority=40,
            module=__name__,
            environment={"RED_NOVNC_LISTEN": listen, "RED_NOVNC_PORT": runtime.novnc_port,
                         "RED_VNC_PORT": runtime.vnc_port},
            port_setting="novnc_port",
            port=runtime.novnc_port,
            # Off loopback only without the front door (or with PORTAL_DIRECT_PORTS): then every
            # client authenticates to Xvnc with the VNC password.
            public=listen != LOOPBACK,
        ),
    ]
