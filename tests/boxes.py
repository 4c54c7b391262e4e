"""
Containers of the image under test, started the way this machine needs (podman, runc, host
network), and the checks that tell when one is ready. Shared by the image tests and the
benchmark.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field

from operations import settings
from operations.programs import default_programs, port_env

RUN_FLAGS = [
    "--runtime", "runc", "--network", "host",
    "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
]
# The deploy's own programs (operations/programs.py): those that run from boot, and the port
# setting of each that listens.
DEPLOYED = default_programs()
PROGRAMS = tuple(program.name for program in DEPLOYED if program.autostart)
PORT_SETTINGS = {program.name: program.port_setting for program in DEPLOYED
                 if program.port_setting}
# Listening off loopback, each authenticated: with the front door on (the default) only sshd
# (keys) and the door (its token); noVNC and Jupyter are behind it on loopback.
PUBLIC = tuple(program.name for program in DEPLOYED if program.public)
TOKEN_FILE = "/etc/red/secrets/jupyter_token"
# The provisioning boxes' token, and where the on-start flow keeps its records.
TOKEN = "prov-token-0123456789"
STATE = "/var/lib/red/provisioning"
# The app's checkout is left out of boots that test something else (test_visomaster.py
# checks it out from loopback fixtures).
NO_APP = {"VISOMASTER_CHECKOUT": "false"}
VNC_PASSWORD_FILE = "/etc/red/secrets/vnc_password"


def ports(base: int) -> dict[str, int]:
    """A port for each program that listens, from ``base`` up: a box on ports of its own."""
    return {name: base + index for index, name in enumerate(PORT_SETTINGS)}


def ports_env(ports: dict[str, int]) -> dict[str, str]:
    """The env that gives a box these ports, e.g. ``{"SSH_PORT": "22020", ...}``."""
    return {port_env(PORT_SETTINGS[name]): str(port) for name, port in ports.items()}


def image() -> str:
    name = os.environ.get("RED_TEST_IMAGE")
    if not name:
        raise RuntimeError("RED_TEST_IMAGE is not set: run the image tests through `make test`")
    return name


# How long `docker stop` (and so Vast's stop) waits before SIGKILL; a restart gets as long.
# supervisord stops one program per turn of its 1 s loop: 3-7 s for the whole box.
STOP_TIMEOUT = 10


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run podman; with ``check``, a failure raises with podman's own words (its stderr)."""
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        shown = " ".join(args[:3]) + (" ..." if len(args) > 3 else "")
        raise AssertionError(f"podman {shown} exited {result.returncode}: "
                             f"{result.stderr.strip()[-2000:]}")
    return result


def restart(name: str) -> None:
    podman("restart", "-t", str(STOP_TIMEOUT), name, timeout=120)


@dataclass
class Box:
    """A running container of the image, with the ports it was given."""

    name: str
    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)

    def exec(self, *command: str, check: bool = True, timeout: float = 120):
        return podman("exec", self.name, *command, check=check, timeout=timeout)

    def sh(self, script: str, check: bool = True, timeout: float = 120) -> str:
        return self.exec("bash", "-c", script, check=check, timeout=timeout).stdout

    def converge_json(self, *extra: str) -> dict:
        """Re-run the deploy inside the box as the entrypoint does; pyinfra's JSON report."""
        result = self.exec(
            "bash", "-c",
            "cd /opt/red/deploy && /opt/red/tool/bin/pyinfra @local deploy.py -y --json "
            + shlex.join(extra),
            check=False, timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout)

    def program_pids(self) -> dict[str, int]:
        pids = {}
        for line in self.exec("supervisorctl", "status", check=False).stdout.splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "RUNNING":
                pids[parts[0]] = int(parts[3].rstrip(","))
        return pids


def start_box(name: str, env: dict[str, str], ports: dict[str, int], *extra: str,
              command: list[str] | None = None, image_tag: str | None = None) -> Box:
    """A box of the image (or image_tag); ``extra`` goes before it (e.g. --entrypoint, -v)."""
    remove(name)
    args = ["run", "-d", "--name", name, "--shm-size", "512m", *RUN_FLAGS, *extra]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    podman(*args, image_tag or image(), *(command or []))
    return Box(name, env, ports)


def service_env(ports: dict[str, int]) -> dict[str, str]:
    """A provisioning box's env: these ports, the known token, no app checkout."""
    return {**ports_env(ports), "JUPYTER_TOKEN": TOKEN, "VNC_PW": "prov-vnc", **NO_APP}


def onstart_record(box: Box) -> dict:
    text = box.sh(f"cat {STATE}/onstart.json 2>/dev/null", check=False)
    return json.loads(text) if text.strip() else {}


def wait_onstart(box: Box, timeout: float = 120, replacing: dict | None = None) -> dict:
    """
    Wait for the on-start flow to finish; its record.

    + replacing: the record of the boot before a restart: until the new boot's flow writes its
      own, the file still holds that one (finished, but not this boot's)
    """
    start_time = time.monotonic()
    while time.monotonic() - start_time < timeout:
        record = onstart_record(box)
        if record.get("status") not in (None, "running") and not (
                replacing and record.get("started") == replacing.get("started")):
            return record
        time.sleep(0.5)
    raise AssertionError(f"on-start flow still running after {timeout} s:\n"
                         + box.sh("tail -n 30 /logs/provisioning.log", check=False))


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def answers(box, name: str, port: int) -> bool:
    """
    Whether a box's service answers on its port. Xvnc is asked about through `ss` in the box,
    never by connecting: it counts a connection closed before authentication as a failed
    login, and after five it refuses every client from that address for a while.
    """
    if name == "xvnc":
        return bool(box.sh(f"ss -Hltn 'sport = :{port}'", check=False).strip())
    return port_open(port)


# JupyterLab's base_url behind the front door (on its own port too).
JUPYTER_BASE_URL = settings.DEFAULTS["portal_jupyter_base_url"]


def jupyter_status(port: int, token: str | None,
                   path: str = f"{JUPYTER_BASE_URL}api/status") -> int:
    url = f"http://127.0.0.1:{port}{path}"
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def wait_ready(box: Box, token: str | None = None, timeout: float = 120) -> float:
    """
    Wait until every program runs, every port answers and Jupyter returns 200 with the token
    (None: the token the box generated). Returns the seconds it took.
    """
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if token is None:
            token = box.sh(f"cat {TOKEN_FILE} 2>/dev/null", check=False).strip() or None
        running = set(box.program_pids()) >= set(PROGRAMS)
        ports = all(answers(box, name, port) for name, port in box.ports.items())
        if running and ports and jupyter_status(box.ports["jupyter"], token) == 200:
            return time.monotonic() - start
        time.sleep(0.2)
    logs = box.sh("tail -n 20 /logs/*.log", check=False)
    raise AssertionError(f"{box.name} not ready after {timeout} s:\n{logs}")


def remove(*names: str) -> None:
    for name in names:
        podman("rm", "-f", "-t", "2", name, check=False)
