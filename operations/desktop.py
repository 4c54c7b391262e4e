"""
The VNC desktop: TigerVNC's Xvnc on loopback, a light xfce session once X answers, and noVNC
served by websockify so a browser is the only client a user needs.
"""

from pyinfra.api import deploy

from operations import settings
from operations._common import Program, apt_install, secret, supervisor_program, upload

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
WRAPPERS = ("red-xvnc", "red-desktop")
# Our xfconf defaults, searched before the distro's (see files/desktop/etc/red/xdg).
XDG_CONFIG_DIRS = "/etc/red/xdg:/etc/xdg"
SESSION_XML = "/etc/red/xdg/xfce4/xfconf/xfce-perchannel-xml/xfce4-session.xml"


@deploy("Set up the VNC desktop")
def setup_desktop(runtime: settings.RuntimeSettings, install: bool = True,
                  configure: bool = True, listen: str = "0.0.0.0") -> list[Program]:  # noqa: S104
    """
    Install Xvnc, xfce and noVNC, keep the VNC password and describe their programs.

    + runtime: the resolved runtime settings (resolution, ports, password)
    + install: run the install half (packages, wrappers)
    + configure: run the configure half (the VNC password)
    + listen: websockify's address (loopback behind the front door)
    """
    if install:
        apt_install(DESKTOP_PACKAGES, name="Install TigerVNC, xfce and noVNC")
        for wrapper in WRAPPERS:
            upload("desktop", f"/opt/red/bin/{wrapper}")
        upload("desktop", SESSION_XML, mode="644")
    password_path = settings.secret_path("vnc_password")
    xvnc_restart_on = []
    if configure:
        xvnc_restart_on.append(
            secret(name=f"Keep the VNC password in {password_path}", path=password_path,
                   value=runtime.vnc_password, length=8)
        )
    display = settings.get("vnc_display")
    programs = [
        Program(
            name="xvnc",
            command=(
                f"/opt/red/bin/red-xvnc {display} {runtime.vnc_port} "
                f"{runtime.vnc_resolution} {settings.get('vnc_depth')} {password_path}"
            ),
            priority=20,
            restart_on=xvnc_restart_on,
        ),
        Program(
            name="desktop",
            command=f"/opt/red/bin/red-desktop {display}",
            priority=30,
            environment={
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
            command=(
                f"/usr/bin/websockify --web /usr/share/novnc --heartbeat 30 "
                f"{listen}:{runtime.novnc_port} 127.0.0.1:{runtime.vnc_port}"
            ),
            priority=40,
        ),
    ]
    return [supervisor_program(program) for program in programs]
