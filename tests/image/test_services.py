"""
Supervisor, logs and what listens where: testinfra on a converged box.

By default the image's podman box; any box over SSH with testinfra's --hosts (see conftest):

    pytest tests/image/test_services.py --hosts=ssh://root@HOST:PORT

Ports are what the deploy resolves from the target's own env (PID 1's), so the same checks
hold for the podman box, the live tests' loopback boxes and a rented Vast box.
"""

import json
from pathlib import Path

import pytest

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


def test_only_ssh_and_the_front_door_listen_off_loopback(host, target_ports, target_door):
    listeners = host.check_output("ss -Hltn | awk '{print $4}'").split()
    public = {address.rsplit(":", 1)[1] for address in listeners
              if not address.startswith(("127.", "[::1]"))}
    ours = {str(port) for port in target_ports.values()}
    # PORTAL_DIRECT_PORTS=true (or no front door) keeps noVNC and Jupyter on their own ports.
    direct = ("novnc", "jupyter") if target_door.backend_listen != "127.0.0.1" else ()
    expected = ("ssh", "portal", *direct) if target_door.enabled else ("ssh", *direct)
    assert public & ours == {str(target_ports[name]) for name in expected}
    assert host.socket(f"tcp://127.0.0.1:{target_ports['vnc']}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{target_ports['vnc']}").is_listening


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
