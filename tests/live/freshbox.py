"""
"Fresh Vast boxes" for the live tier: bare Debian 12 containers with only sshd and python3
(tests/fixtures/freshbox, not Red's image), reached over SSH on loopback ports, and pyinfra
runs against them through the real inventory, inventories/vast.py, which lists them from the
loopback stand-in for Vast's v1 API (tests/vast_api.py), a few instances a page.

Shared by the live tests and tests/live/measure.py.

Ports (host network, so every one is distinct): box N uses PORT_BASE + 100*N + {22: the box's
own sshd (what Vast's ``22/tcp`` mapping would reach), 23: Red's sshd (SSH_PORT), 59: Xvnc,
80: noVNC, 88: Jupyter}; PORT_BASE + 999 is the closed port of the "unreachable box".
RED_LIVE_PORT_BASE moves them all (default 24000).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.boxes import PORT_SETTINGS, PROGRAMS, RUN_FLAGS, answers, podman, port_open, ports_env
from tests.boxes import ports as program_ports
from tests.vast_api import GOOD_KEY, VastAPI, pages_of

ROOT = Path(__file__).resolve().parent.parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "freshbox"
IMAGE = os.environ.get("RED_LIVE_IMAGE", "localhost/red-live-freshbox:test")
BASE_IMAGE = os.environ.get("RED_BASE", "localhost/red-base:bookworm")
PORT_BASE = int(os.environ.get("RED_LIVE_PORT_BASE", "24000"))
UNREACHABLE_PORT = PORT_BASE + 999
# Instance ids: the host names are vast-<id>.
ID_BASE = 7_240_000
UNREACHABLE_ID = ID_BASE + 999
NAME_PREFIX = "red-live-"
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
# The fresh box is Debian 12, whose Python is 3.11 (the deploy's default, 3.10, is Ubuntu
# 22.04's): a Vast box on the CUDA Ubuntu image needs no such setting.
DEPLOY_DATA = ("--data", "python_version=3.11")
# The box's env, as Vast's template env would set it. GitHub is out of reach here: the
# VisoMaster steps are off (tests/image/test_visomaster.py covers them with local repos).
APP_OFF_ENV = {
    "VISOMASTER_CHECKOUT": "false",
    "VISOMASTER_INSTALL_REQUIREMENTS": "false",
    "VISOMASTER_DOWNLOAD_MODELS": "false",
}
# Instances per page of the API stand-in: small, so that a fleet spans pages.
PAGE_SIZE = 2
# Seconds measured by the tests, printed at the end of the run (see conftest).
TIMINGS: dict[str, float] = {}


def build_image() -> float:
    """
    Build the fresh-box image from tests/fixtures/freshbox on the local Debian 12 base, with
    this machine's extra CA certificates for pip (test-only). Returns the seconds it took.
    """
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="red-live-context-") as context:
        context_dir = Path(context)
        for item in FIXTURE.iterdir():
            shutil.copy2(item, context_dir / item.name)
        extra = context_dir / "extra-ca"
        extra.mkdir()
        (extra / ".keep").touch()
        for certificate in sorted(EXTRA_CA_DIR.glob("*.crt")):
            shutil.copy2(certificate, extra / certificate.name)
        podman("build", "--isolation", "chroot", "--network", "host",
               "--build-arg", f"BASE={BASE_IMAGE}", "-t", IMAGE, str(context_dir), timeout=900)
    return time.monotonic() - start


@dataclass
class FreshBox:
    """A running fresh box: its container, its instance id and its ports."""

    index: int
    name: str
    instance_id: int
    ports: dict[str, int]
    env: dict[str, str]

    @property
    def host_name(self) -> str:
        return f"vast-{self.instance_id}"

    @property
    def label(self) -> str:
        return f"red-live-{self.index}"

    def sh(self, script: str, check: bool = True, timeout: float = 120) -> str:
        return podman("exec", self.name, "bash", "-c", script, check=check,
                      timeout=timeout).stdout

    def program_pids(self) -> dict[str, int]:
        """Supervisor's RUNNING programs and their pids."""
        pids = {}
        status = podman("exec", self.name, "supervisorctl", "status", check=False).stdout
        for line in status.splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "RUNNING":
                pids[parts[0]] = int(parts[3].rstrip(","))
        return pids

    def instance(self) -> dict:
        """This box as the Vast API lists it: direct SSH to its own sshd on loopback."""
        return instance(self.instance_id, self.label, self.ports["box_ssh"])

    def proxied_instance(self) -> dict:
        """
        The same instance on another route, as when Vast moves it to its SSH proxy: no
        22/tcp mapping, ssh_host:ssh_port = Red's sshd, which serves the box's host keys.
        """
        return dict(self.instance(), image_runtype="ssh_proxy", ports={},
                    ssh_host="localhost", ssh_port=self.ports["sshd"])


def box_ports(index: int) -> dict[str, int]:
    base = PORT_BASE + 100 * index
    # The box's own sshd on base + 22; Red's programs from base + 23 up.
    return {"box_ssh": base + 22, **program_ports(base + 23)}


def instance(instance_id: int, label: str, ssh_port: int) -> dict:
    return {
        "id": instance_id,
        "label": label,
        "actual_status": "running",
        "intended_status": "running",
        "image_uuid": "debian:12",
        "image_runtype": "ssh_direc ssh_proxy",
        "public_ipaddr": "127.0.0.1\n",
        # Never used while the direct mapping exists; unresolvable on purpose.
        "ssh_host": "ssh.invalid",
        "ssh_port": 1,
        "gpu_name": "none",
        "num_gpus": 0,
        "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(ssh_port)}]},
        "start_date": 1755000000.0,
        "extra_env": [],
    }


def start(index: int, public_key: str, image: str = IMAGE,
          extra_env: dict[str, str] | None = None) -> FreshBox:
    """Start fresh box number ``index`` and wait until its sshd answers."""
    ports = box_ports(index)
    name = container_name(index)
    env = {
        "FRESHBOX_SSH_PORT": str(ports["box_ssh"]),
        "SSH_PUBLIC_KEY": public_key,
        # Red's services on ports of their own: the box's sshd keeps "22".
        **ports_env({name: port for name, port in ports.items() if name in PORT_SETTINGS}),
        **APP_OFF_ENV,
        **(extra_env or {}),
    }
    podman("rm", "-f", "-t", "2", name, check=False)
    args = ["run", "-d", "--name", name, "--shm-size", "512m", *RUN_FLAGS]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    podman(*args, image)
    box = FreshBox(index, name, ID_BASE + index, ports, env)
    deadline = time.monotonic() + 30
    while not port_open(ports["box_ssh"]):
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: sshd not answering on {ports['box_ssh']}:\n"
                                 + podman("logs", name, check=False).stderr)
        time.sleep(0.2)
    return box


def container_name(index: int) -> str:
    return f"{NAME_PREFIX}box{index}"


def remove(*boxes: FreshBox) -> None:
    for box in boxes:
        podman("rm", "-f", "-t", "2", box.name, check=False)


def remove_index(*indexes: int) -> None:
    for index in indexes:
        podman("rm", "-f", "-t", "2", container_name(index), check=False)


def wait_running(box: FreshBox, timeout: float = 120) -> float:
    """Wait until every supervisor program runs and Red's ports answer; the seconds it took."""
    start_time = time.monotonic()
    wanted = PORT_SETTINGS
    while time.monotonic() - start_time < timeout:
        running = set(box.program_pids()) >= set(PROGRAMS)
        if running and all(answers(box, name, box.ports[name]) for name in wanted):
            return time.monotonic() - start_time
        time.sleep(0.2)
    raise AssertionError(f"{box.name}: services not up after {timeout} s:\n"
                         + box.sh("supervisorctl status; tail -n 20 /logs/*.log", check=False))


@dataclass
class Run:
    """One pyinfra run: exit code, stdout (JSON with --json), stderr and seconds."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> dict:
        return json.loads(self.stdout)

    @property
    def totals(self) -> dict:
        return self.json()["results"]["totals"]

    def changed_ops(self) -> dict[str, list[str]]:
        """Op name (without its deploy prefix) -> hosts it changed."""
        return {op["name"].split(" | ", 1)[-1]: op["success"]
                for op in self.json()["results"]["operations"] if op["success"]}

    def tail(self, chars: int = 4000) -> str:
        return f"rc={self.returncode}\n{self.stderr[-chars:]}"


class Operator:
    """
    The person at the keyboard: a home directory of their own (their per-instance known_hosts
    land in ~/.ssh/red_known_hosts), an SSH key and an API key, and the Vast account, whose
    instances the v1 API stand-in lists. ``close()`` stops the stand-in.
    """

    def __init__(self, directory: Path):
        self.home = directory / "home"
        (self.home / ".ssh").mkdir(parents=True, exist_ok=True)
        self.key = self.home / ".ssh" / "id_ed25519"
        if not self.key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "red-live",
                            "-f", str(self.key)], check=True)
        self.public_key = self.key.with_suffix(".pub").read_text().strip()
        self.api = VastAPI(pages_of([])).__enter__()

    def list_instances(self, instances: list[dict]) -> None:
        self.api.serve_pages(pages_of(instances, PAGE_SIZE))

    def close(self) -> None:
        self.api.__exit__(None, None, None)

    def env(self, **extra: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("VAST_", "SSH_AUTH_SOCK"))}
        env.update(HOME=str(self.home), VAST_API_URL=self.api.url, VAST_API_KEY=GOOD_KEY,
                   **extra)
        return env

    def deploy(self, *args: str, timeout: float = 900, **env: str) -> Run:
        """``pyinfra inventories/vast.py deploy.py ARGS``, run from the repository as users do."""
        return self.pyinfra("deploy.py", "--key", str(self.key), *DEPLOY_DATA, *args,
                            timeout=timeout, **env)

    def pyinfra(self, *args: str, timeout: float = 900, **env: str) -> Run:
        """``pyinfra inventories/vast.py ARGS``."""
        command = [PYINFRA, "inventories/vast.py", *args]
        start_time = time.monotonic()
        result = subprocess.run(command, cwd=ROOT, env=self.env(**env), capture_output=True,
                                text=True, timeout=timeout, check=False)
        return Run(result.returncode, result.stdout, result.stderr,
                   time.monotonic() - start_time)

    def ssh(self, box: FreshBox, command: str, port: int | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        """
        Plain ssh to the box (its own sshd, or ``port``), a session as the user opens one, with
        the key and the host key pyinfra pinned for this instance.
        """
        return subprocess.run(
            ["ssh", "-F", str(self.ssh_config(box)), "-p", str(port or box.ports["box_ssh"]),
             "-o", f"HostKeyAlias=[127.0.0.1]:{box.ports['box_ssh']}", "root@127.0.0.1",
             command],
            capture_output=True, text=True, timeout=timeout, check=False, env=self.env())

    def known_hosts_file(self, box: FreshBox) -> Path:
        return self.home / ".ssh" / "red_known_hosts" / box.host_name

    def ssh_config(self, box: FreshBox) -> Path:
        """
        An ssh config for checking ``box`` with plain ssh (testinfra's ssh:// backend): the host
        key pyinfra pinned for this instance, nothing else trusted.
        """
        path = self.home / ".ssh" / f"config-{box.host_name}"
        path.write_text(
            "Host *\n"
            f"  IdentityFile {self.key}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts_file(box)}\n"
            "  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n"
        )
        return path
