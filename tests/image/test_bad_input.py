"""
Bad or missing settings: each gets one line in /logs/startup.log naming the variable and the
fallback, no secret is ever logged, and the services still come up.
"""

import pytest

from tests.boxes import TOKEN_FILE, VNC_PASSWORD_FILE, jupyter_status, wait_onstart
from tests.image.conftest import GENERATED_PORTS

STARTUP_LOG = "/logs/startup.log"


@pytest.fixture(scope="module")
def startup_log(generated_box):
    """What one converge of the box appends to the startup log (each converge decides again)."""
    # The boot's background flow converges too: let it finish, then converge once alone.
    wait_onstart(generated_box)
    before = int(generated_box.sh(f"stat -c %s {STARTUP_LOG}"))
    generated_box.converge_json()
    return generated_box.sh(f"tail -c +{before + 1} {STARTUP_LOG}")


@pytest.mark.parametrize(
    ("variable", "fallback"),
    [
        ("VNC_PORT='59o1' is not a port", "using 5901"),
        ("VNC_PW is shorter than 6 characters",
         f"using the generated secret kept in {VNC_PASSWORD_FILE}"),
        ("VNC_RESOLUTION=", "is not WIDTHxHEIGHT within 640x480..7680x4320: using 1920x1080"),
        ("JUPYTER_TOKEN unset", f"using the generated secret kept in {TOKEN_FILE}"),
        ("SSH_PUBLIC_KEY/PUBLIC_KEY unset", "keys already in /root/.ssh/authorized_keys are kept"),
    ],
)
def test_each_decision_is_one_log_line(startup_log, variable, fallback):
    lines = [line for line in startup_log.splitlines() if variable in line]
    assert len(lines) == 1, startup_log
    assert fallback in lines[0]


def test_generated_secrets_are_root_only_and_never_logged(generated_box):
    for path in (TOKEN_FILE, VNC_PASSWORD_FILE):
        assert generated_box.sh(f"stat -c '%a %U %s' {path}").split()[:2] == ["600", "root"]
    token = generated_box.sh(f"cat {TOKEN_FILE}")
    password = generated_box.sh(f"cat {VNC_PASSWORD_FILE}")
    assert len(token) == 32 and len(password) == 8
    for secret in (token, password):
        found = generated_box.exec("grep", "-rlF", secret, "/logs", "/etc/supervisor", check=False)
        assert found.stdout == "", f"a secret leaked into {found.stdout}"
    assert jupyter_status(GENERATED_PORTS["jupyter"], token) == 200


def test_injected_config_is_refused_and_services_still_run(generated_box):
    # Exit status 3: the on-demand visomaster program is STOPPED, as it should be.
    status = generated_box.sh("supervisorctl status", check=False)
    assert "evil" not in status
    assert generated_box.sh("test -e /tmp/evil && echo yes || echo no").strip() == "no"
    assert generated_box.sh("/opt/red/bin/red-healthcheck").strip() == "healthy"
    # The default resolution was used instead.
    geometry = generated_box.sh("DISPLAY=:1 xdpyinfo | awk '/dimensions:/ {print $2}'")
    assert geometry.strip() == "1920x1080"
