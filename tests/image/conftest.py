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
from operations.programs import programs
from tests.boxes import NO_APP, ports, ports_env, remove, start_box, wait_onstart, wait_ready

VNC_PASSWORD = "Red-vnc1"
# Shell metacharacters: the token must reach Jupyter as data, never run.
JUPYTER_TOKEN = "tok$(touch${IFS}/tmp/pwned)`id`;'\"-0123456789"
MAIN_BOX = "red-test-main"
MAIN_PORTS = ports(22020)
# Its VNC_PORT is bad: Xvnc falls back to the default port.
GENERATED_PORTS = {**ports(22120), "xvnc": settings.DEFAULTS["vnc_port"]}
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
        **ports_env(MAIN_PORTS),
        "VNC_PW": VNC_PASSWORD,
        "JUPYTER_TOKEN": JUPYTER_TOKEN,
        "VNC_RESOLUTION": "1280x800",
        "SSH_PUBLIC_KEY": ssh_key.with_suffix(".pub").read_text().strip(),
    }
    started = start_box(MAIN_BOX, env, MAIN_PORTS)
    try:
        wait_ready(started, JUPYTER_TOKEN)
        # The boot's full converge behind the services is done too: a test's own converge
        # never races it.
        wait_onstart(started)
        yield started
    finally:
        remove(started.name)


@pytest.fixture(scope="session")
def generated_box(request):
    _needs_the_image(request)
    env = {
        **NO_APP,
        **ports_env(GENERATED_PORTS),
        # Bad on purpose: each falls back with one line in /logs/startup.log.
        "VNC_PORT": "59o1",
        "VNC_PW": "abc",
        "VNC_RESOLUTION": INJECTION,
    }
    started = start_box("red-test-generated", env, GENERATED_PORTS)
    try:
        wait_ready(started)
        wait_onstart(started)
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
def target_settings(host) -> settings.RuntimeSettings:
    """
    What the deploy resolves on the target without --data: the settings from the env of its
    PID 1 (as ``ContainerEnvironment`` reads it) over group_data/all.py's defaults.
    """
    raw = base64.b64decode(host.check_output("base64 -w0 /proc/1/environ"))
    env = {}
    for entry in raw.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep:
            env[name.decode(errors="replace")] = value.decode(errors="replace")
    return settings._resolve(env, data=settings.DEFAULTS.get, cli=set())


@pytest.fixture(scope="module")
def target_programs(target_settings):
    """The deploy's programs as the target's settings make them (operations/programs.py)."""
    return programs(target_settings, data=settings.DEFAULTS.get)

