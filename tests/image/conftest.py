"""
The image tier: real containers of the image built by `make test`, reached with real clients.

Three boxes run side by side on the host network, each on its own ports:
- ``box``: every setting given (keys, secrets, non-default ports), the one most tests use;
- ``generated_box``: no secret given, and bad values for the rest: generated secrets and
  fallbacks;
- a third one, started by a test, checks that two containers get different host keys.

The testinfra suites (``test_services.py``) take their target from testinfra's ``--hosts``:
without it they check ``box``; with it they check any box over SSH, e.g. a live Vast box:

    pytest tests/image/test_services.py --hosts=ssh://root@HOST:PORT \
        --ssh-identity-file=KEY --ssh-config=CONFIG

Tests that need a podman box of the image skip when ``--hosts`` is given.
"""

import base64
import subprocess

import pytest

from operations import settings
from operations.portal import PortalSettings, resolve_portal
from tests.boxes import remove, start_box, wait_ready

VNC_PASSWORD = "Red-vnc1"
# Shell metacharacters: the token must reach Jupyter as data, never run.
JUPYTER_TOKEN = "tok$(touch${IFS}/tmp/pwned)`id`;'\"-0123456789"
MAIN_BOX = "red-test-main"
# GitHub is unreachable here: these boxes leave the app alone (test_visomaster.py checks it
# out from fixture repositories).
NO_APP = {"VISOMASTER_CHECKOUT": "false"}
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


def pytest_configure(config):
    # No --hosts: testinfra's `host` is the main box (its ids then name the box, not "local").
    config.red_live_target = bool(config.getoption("hosts", None))
    if not config.red_live_target:
        config.option.hosts = f"podman://{MAIN_BOX}"


def _needs_the_image(request) -> None:
    if request.config.red_live_target:
        pytest.skip("needs a podman box of the image; --hosts targets another box")


@pytest.fixture(scope="session")
def box(request, ssh_key):
    _needs_the_image(request)
    env = {
        **NO_APP,
        "SSH_PORT": str(MAIN_PORTS["ssh"]),
        "JUPYTER_PORT": str(MAIN_PORTS["jupyter"]),
        "NOVNC_PORT": str(MAIN_PORTS["novnc"]),
        "VNC_PORT": str(MAIN_PORTS["vnc"]),
        "VNC_PW": VNC_PASSWORD,
        "JUPYTER_TOKEN": JUPYTER_TOKEN,
        "VNC_RESOLUTION": "1280x800",
        "SSH_PUBLIC_KEY": ssh_key.with_suffix(".pub").read_text().strip(),
    }
    started = start_box(MAIN_BOX, env, MAIN_PORTS)
    try:
        wait_ready(started, JUPYTER_TOKEN)
        yield started
    finally:
        remove(started.name)


@pytest.fixture(scope="session")
def generated_box(request):
    _needs_the_image(request)
    env = {
        **NO_APP,
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


@pytest.fixture(scope="module")
def host(request, _testinfra_host):
    """
    The box the testinfra checks run against: testinfra's ``--hosts`` target when given,
    else the main box (started first).
    """
    if not request.config.red_live_target:
        request.getfixturevalue("box")
    return _testinfra_host


@pytest.fixture(scope="module")
def target_env(host) -> dict[str, str]:
    """The env of the target's PID 1, as ``ContainerEnvironment`` reads it."""
    raw = base64.b64decode(host.check_output("base64 -w0 /proc/1/environ"))
    env = {}
    for entry in raw.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep:
            env[name.decode(errors="replace")] = value.decode(errors="replace")
    return env


@pytest.fixture(scope="module")
def target_settings(target_env) -> settings.RuntimeSettings:
    """
    What the deploy resolves on the target without --data: the settings from the env of its
    PID 1 over group_data/all.py's defaults.
    """
    return settings._resolve(target_env, data=settings.DEFAULTS.get, cli=set())


@pytest.fixture(scope="module")
def target_door(target_env, target_settings) -> PortalSettings:
    """The front door's settings as the deploy resolves them on the target."""
    ports = {target_settings.sshd_port, target_settings.jupyter_port,
             target_settings.novnc_port, target_settings.vnc_port}
    return resolve_portal(target_env, settings.DEFAULTS.get, set(), ports)


@pytest.fixture(scope="module")
def target_ports(target_settings, target_door) -> dict[str, int]:
    """The target's service ports, named as in MAIN_PORTS (and the front door's)."""
    return {
        "ssh": target_settings.sshd_port,
        "jupyter": target_settings.jupyter_port,
        "novnc": target_settings.novnc_port,
        "vnc": target_settings.vnc_port,
        "portal": target_door.port,
    }
