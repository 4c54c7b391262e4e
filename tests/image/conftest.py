"""
The image tier: real containers of the image built by `make test`, reached with real clients.

Three boxes run side by side on the host network, each on its own ports:
- ``box``: every setting given (keys, secrets, non-default ports), the one most tests use;
- ``generated_box``: no secret given, and bad values for the rest: generated secrets and
  fallbacks;
- a third one, started by a test, checks that two containers get different host keys.
"""

import subprocess

import pytest
import testinfra

from tests.boxes import Box, remove, start_box, wait_ready

VNC_PASSWORD = "Red-vnc1"
# Shell metacharacters: the token must reach Jupyter as data, never run.
JUPYTER_TOKEN = "tok$(touch${IFS}/tmp/pwned)`id`;'\"-0123456789"
MAIN_PORTS = {"ssh": 22022, "jupyter": 18888, "novnc": 16080, "vnc": 15901}
GENERATED_PORTS = {"ssh": 22122, "jupyter": 18988, "novnc": 16180, "vnc": 5901}
# A resolution that tries to smuggle a supervisor program into a config file.
INJECTION = "1280x720\n[program:evil]\ncommand=touch /tmp/evil"


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory):
    path = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "red-test",
                    "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="session")
def box(ssh_key):
    env = {
        "SSH_PORT": str(MAIN_PORTS["ssh"]),
        "JUPYTER_PORT": str(MAIN_PORTS["jupyter"]),
        "NOVNC_PORT": str(MAIN_PORTS["novnc"]),
        "VNC_PORT": str(MAIN_PORTS["vnc"]),
        "VNC_PW": VNC_PASSWORD,
        "JUPYTER_TOKEN": JUPYTER_TOKEN,
        "VNC_RESOLUTION": "1280x800",
        "SSH_PUBLIC_KEY": ssh_key.with_suffix(".pub").read_text().strip(),
    }
    started = start_box("red-test-main", env, MAIN_PORTS)
    try:
        wait_ready(started, JUPYTER_TOKEN)
        yield started
    finally:
        remove(started.name)


@pytest.fixture(scope="session")
def generated_box():
    env = {
        "SSH_PORT": str(GENERATED_PORTS["ssh"]),
        "JUPYTER_PORT": str(GENERATED_PORTS["jupyter"]),
        "NOVNC_PORT": str(GENERATED_PORTS["novnc"]),
        # Bad on purpose: each falls back with one line in /logs/startup.log.
        "VNC_PORT": "59o1",
        "VNC_PW": "abc",
        "VNC_RESOLUTION": INJECTION,
    }
    started = start_box("red-test-generated", env, GENERATED_PORTS)
    try:
        wait_ready(started)
        yield started
    finally:
        remove(started.name)


@pytest.fixture(scope="session")
def host(box: Box):
    return testinfra.get_host(f"podman://{box.name}")
