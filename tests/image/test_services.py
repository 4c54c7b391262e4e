"""
Supervisor, logs and what listens where: testinfra on a converged box.

By default the image's podman box; any box over SSH with testinfra's --hosts (see conftest):

    pytest tests/image/test_services.py --hosts=ssh://root@HOST:PORT

Ports are what the deploy resolves from the target's own env (PID 1's), so the same checks
hold for the podman box, the live tests' loopback boxes and a rented Vast box.
"""

import ipaddress
import json
from pathlib import Path

import pytest

from operations.portal import portal_settings
from tests.boxes import PROGRAMS


@pytest.mark.parametrize("program", PROGRAMS)
def test_program_running_and_logging(host, program):
    status = host.check_output(f"supervisorctl status {program}")
    assert " RUNNING " in status, status
    log = host.file(f"/logs/{program}.log")
    assert log.exists and log.size > 0, f"/logs/{program}.log is missing or empty"


def test_supervisorctl_works_for_root_over_a_root_only_socket(host):
    socket = host.file("/var/run/supervisor.sock")
    assert socket.is_socket and socket.user == "root" and socket.mode == 0o700
    assert not host.socket("tcp://0.0.0.0:9001").is_listening
    # `status` exits 3 while an on-demand program (autostart=false) is stopped: ask for the pid.
    assert host.check_output("supervisorctl pid").isdigit()


def test_health_check_reports_healthy(host):
    assert host.check_output("/opt/red/bin/red-healthcheck") == "healthy"


def _off_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]").split("%", 1)[0]
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*" (every address)
        return True


def test_nothing_but_our_authenticated_programs_listens_off_loopback(host, target_programs,
                                                                     target_settings):
    # Every TCP/UDP listener off 127.0.0.0/8 and ::1 whose process runs in this box. With host
    # networking (the podman boxes) ss also sees the host's sockets: those have no process
    # here and belong to the host, not to the box.
    public = {program.port for program in target_programs if program.public}
    # On a live box the way in (the box's own sshd, Vast's, that testinfra came through) is
    # the box's, not one of ours: the one listener allowed besides them.
    spec = getattr(host.backend, "host", None)
    access = {int(spec.port)} if getattr(spec, "port", None) else set()
    strays, ours = [], set()
    for line in host.check_output("ss -Hlntup").splitlines():
        fields = line.split()
        local = fields[4]
        if not _off_loopback(local) or "users:((" not in line:
            continue
        port = int(local.rsplit(":", 1)[1])
        if port in public:
            ours.add(port)
        elif port not in access:
            strays.append(line)
    assert strays == [], "listening off loopback, not one of our authenticated programs"
    assert ours == public
    # Behind the front door (on unless PORTAL_ENABLED=false; PORTAL_DIRECT_PORTS keeps the old
    # ports too), only SSH and the door itself.
    door = portal_settings(target_settings)
    if door.enabled and not door.direct_ports:
        assert {program.name for program in target_programs if program.public} == \
            {"sshd", "portal"}
    vnc = next(program.port for program in target_programs if program.name == "xvnc")
    assert host.socket(f"tcp://127.0.0.1:{vnc}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{vnc}").is_listening


def test_seed_directories_exist_with_sane_permissions(host):
    for path in ("/logs", "/notebooks", "/workspace"):
        directory = host.file(path)
        assert directory.is_directory and directory.mode == 0o755
    secrets = host.file("/etc/red/secrets")
    assert secrets.is_directory and secrets.mode == 0o700


def test_locale_is_utf8(host):
    assert "UTF-8" in host.file("/etc/default/locale").content_string
    encoding = host.check_output("python3 -c 'import sys; print(sys.getfilesystemencoding())'")
    assert encoding == "utf-8"


def test_app_venv_has_the_configured_python(host):
    # The configured version: RED_PYTHON_VERSION in the box's env (the image sets it: 3.11 on
    # the Debian 12 test base, 3.10 in production), else what the deploy named the kernel
    # after (a box converged over SSH with --data python_version=X.Y).
    environ = host.check_output("tr '\\0' '\\n' < /proc/1/environ").splitlines()
    from_env = [line.split("=", 1)[1] for line in environ
                if line.startswith("RED_PYTHON_VERSION=")]
    kernel = json.loads(host.file(
        "/opt/red/jupyter/share/jupyter/kernels/red-app/kernel.json").content_string)
    from_kernel = kernel["display_name"].split()[1]
    version = host.check_output(
        "/opt/red/venv/bin/python -c 'import sys; print(*sys.version_info[:2], sep=\".\")'")
    assert version == from_kernel
    if from_env:
        assert version == from_env[0]
    assert host.run("/opt/red/venv/bin/python -c 'import ipykernel'").rc == 0
    # JupyterLab stays out of the app's venv.
    assert host.run("/opt/red/venv/bin/python -c 'import jupyterlab'").rc != 0


def test_build_time_ca_certificates_stay_out_of_the_image(host):
    # `make test` builds with this machine's extra CAs (an intercepting proxy): they are a
    # build secret, so neither the trust store nor the image's env may carry them.
    bundle = "".join(host.file("/etc/ssl/certs/ca-certificates.crt").content_string.split())
    extra = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    for certificate in extra:
        body = "".join(certificate.read_text().split("-----")[2].split())
        assert body[:120] not in bundle, f"{certificate.name} was baked into the image"
    env = host.check_output("cat /proc/1/environ | tr '\\0' '\\n'")
    assert "PIP_CERT" not in env and "SSL_CERT_FILE" not in env
    assert not host.file("/run/secrets/extra_ca").exists
