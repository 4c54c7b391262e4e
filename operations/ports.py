"""
The port policy: a program listening on a port another process holds (Vast's own sshd or
Jupyter in its ssh/jupyter launch modes, a process outside this box) is not started; the launch
mode and the listeners are asked once per host and run.
"""

from __future__ import annotations

from operations import _files, settings
from operations.facts import PortListeners, VastLaunchMode

# The ports Vast's own services hold in each of its modes (its sshd on 22; in jupyter mode
# its Jupyter on 8080, with TLS): ours never start there, even before Vast's have bound them.
VAST_OWNED_PORTS = {
    "ssh": {22: "Vast's sshd"},
    "jupyter": {22: "Vast's sshd", 8080: "Vast's Jupyter"},
}


def launch_mode() -> str | None:
    """Vast's launch mode of this box (recorded once per host in the startup log)."""
    return settings.once_per_host("launch mode", _launch_mode)


def _launch_mode() -> str | None:
    mode = _files.fact(VastLaunchMode)
    settings.record([
        f"Vast's {mode} mode (/.launch): Vast owns PID 1 and "
        + ", ".join(f"port {port} ({owner})" for port, owner in VAST_OWNED_PORTS[mode].items())
        if mode else "entrypoint mode (no /.launch): Red's supervisord runs every service"
    ], topic="launch")
    return mode


def _service_ports(*more: int) -> list[int]:
    return sorted({int(settings.get(key)) for key in settings.PORT_ENV} | {int(p) for p in more})


def _port_listeners(port: int) -> dict[int, list[dict]]:
    """Who listens on the service ports (and this one), in one look."""
    ports = _service_ports(port)
    return settings.once_per_host(("port listeners", tuple(ports)), lambda: _files.fact(
        PortListeners, ports=ports) or {})


@_files.up_front
def _asked_every_run() -> None:
    """The launch mode and the service ports (configure half)."""
    if settings.halves()[1]:
        _files.expect_fact(VastLaunchMode)
        _files.expect_fact(PortListeners, ports=_service_ports())


def autostart_unless_port_taken(program: str, port: int, env_name: str, check: bool) -> bool:
    """
    Whether a program listening on ``port`` may start: not when something other than our
    supervisord's programs holds the port (Vast's own sshd or Jupyter in its ssh/jupyter
    launch modes). Then the program keeps its config with autostart=false, and one line in
    /logs/startup.log says what was skipped.

    + check: look at the port (the configure half); False keeps autostart (image build)
    """
    if not check:
        return True
    owner = VAST_OWNED_PORTS.get(launch_mode() or "", {}).get(port)
    listeners = _port_listeners(port).get(int(port), [])
    foreign = [item for item in listeners if not item["supervised"]]
    if not foreign and not owner:
        return True
    holders = ", ".join(dict.fromkeys([
        *(f"{item['name']} (pid {item['pid']})" if item["pid"] else "a process outside this box"
          for item in foreign),
        *([owner] if owner and not foreign else []),
    ]))
    settings.record(
        [f"{program}: port {port} is held by {holders}: not starting a second one "
         f"(autostart=false; set {env_name} to a free port to run ours)"],
        topic="ports",
    )
    return False
