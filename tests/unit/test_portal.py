"""
The front door below the image: its settings, the secrets include, and the real nginx of this
machine running the rendered config on loopback (with stub upstreams), asked with curl.
"""

from __future__ import annotations

import base64
import http.server
import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pyinfra.api.util import get_template

from operations import settings
from operations.ops import template
from operations.portal import portal_settings
from operations.programs import programs
from redbox.core.pids import alive, cmdline, group
from redbox.portal import door
from tests.conftest import ROOT, TOOLS
from tests.plan import plan as run_plan

TOKEN = "Tok-en_1.2~abcdefXYZ"
# Every character nginx could mistake for syntax or a variable.
JUPYTER_TOKEN = "j$up{y}t\"er\\;'tok$(id)"
VNC_PASSWORD = 'v$"\\nc;{x}'


def resolve(env=None, cli=None, **data):
    """The front door's settings for an env, data and --data keys (the registry's rule)."""
    values = {**settings.DEFAULTS, **data}
    runtime = settings._resolve(env or {}, values.get, set(cli or ()))
    door_settings = portal_settings(runtime)
    door_settings.decisions[:0] = runtime.decisions
    return door_settings


def test_defaults_put_the_door_on_8443_and_the_backends_on_loopback():
    door_settings = resolve()
    assert (door_settings.enabled, door_settings.port, door_settings.direct_ports) == \
        (True, 8443, False)
    assert door_settings.backend_listen == "127.0.0.1"
    assert door_settings.jupyter_base_url == "/jupyter/"
    assert door_settings.token is None
    # One line, naming the variable that was not set (not an empty name).
    assert [line for line in door_settings.decisions if "portal_token" in line] == [
        "OPEN_BUTTON_TOKEN unset: using the generated secret kept in "
        "/etc/red/secrets/portal_token (root-only; read it there)"]


def test_open_button_token_is_the_token_and_is_never_shown():
    door_settings = resolve({"OPEN_BUTTON_TOKEN": TOKEN})
    assert door_settings.token == TOKEN
    assert not any(TOKEN in line for line in door_settings.decisions)


@pytest.mark.parametrize("bad", ["short", "has space inside", "ünïcödé-token", "a&token=b-c",
                                 "x" * 257])
def test_a_token_a_url_cannot_carry_falls_back_to_the_generated_one(bad):
    door_settings = resolve({"OPEN_BUTTON_TOKEN": bad})
    assert door_settings.token is None
    lines = [line for line in door_settings.decisions if "portal_token" in line]
    assert lines == ["OPEN_BUTTON_TOKEN is not 8 to 256 characters of A-Z a-z 0-9 . _ ~ - "
                     "(what a URL carries as is): using the generated secret kept in "
                     "/etc/red/secrets/portal_token"]


def test_bad_port_and_flags_fall_back_with_one_line_each():
    door_settings = resolve({"PORTAL_PORT": "84x3", "PORTAL_DIRECT_PORTS": "maybe",
                             "PORTAL_ENABLED": "nope"})
    assert (door_settings.port, door_settings.direct_ports, door_settings.enabled) == \
        (8443, False, True)
    portal_lines = [line for line in door_settings.decisions if line.startswith("PORTAL_")]
    assert portal_lines == [
        "PORTAL_ENABLED='nope' is not true or false: using True",
        "PORTAL_PORT='84x3' is not a port (1-65535): using 8443",
        "PORTAL_DIRECT_PORTS='maybe' is not true or false: using False",
    ]
    taken = resolve({"PORTAL_PORT": "22"})
    assert taken.port == 8443
    assert "PORTAL_PORT=22 is already used by another service: using 8443" in taken.decisions


def test_direct_ports_and_no_door_put_the_backends_back_on_every_address():
    direct = resolve({"PORTAL_DIRECT_PORTS": "true"})
    assert direct.backend_listen == "0.0.0.0"
    assert direct.decisions[-1] == ("PORTAL_DIRECT_PORTS=true: noVNC (6080) and Jupyter (8888) "
                                    "listen off loopback on their own ports too")
    off = resolve({"PORTAL_ENABLED": "false"})
    assert off.backend_listen == "0.0.0.0" and off.jupyter_base_url == "/"
    assert off.decisions[-1].startswith("PORTAL_ENABLED=false: noVNC (6080)")


def test_data_wins_over_the_environment():
    door_settings = resolve({"PORTAL_PORT": "9443"}, cli={"portal_port"}, portal_port=7443)
    assert door_settings.port == 7443


@pytest.mark.parametrize(("env", "public", "listen", "base_url"), [
    ({}, {"sshd", "portal"}, "127.0.0.1", "/jupyter/"),
    ({"PORTAL_DIRECT_PORTS": "yes"}, {"sshd", "portal", "novnc", "jupyter"}, "0.0.0.0",
     "/jupyter/"),
    ({"PORTAL_ENABLED": "off"}, {"sshd", "novnc", "jupyter"}, "0.0.0.0", "/"),
])
def test_programs_listen_where_the_door_says(env, public, listen, base_url):
    runtime = settings._resolve(env)
    built = {program.name: program for program in programs(runtime, settings.DEFAULTS.get)}
    assert {name for name, program in built.items() if program.public} == public
    assert built["novnc"].environment["RED_NOVNC_LISTEN"] == listen
    assert built["jupyter"].environment["RED_JUPYTER_LISTEN"] == listen
    assert built["jupyter"].environment["RED_JUPYTER_BASE_URL"] == base_url
    assert built["portal"].autostart == built["status"].autostart == ("portal" in public)
    assert built["portal"].port_setting == "portal_port"
    # Named options, each a word of its own on supervisor's command line.
    assert built["portal"].command_line.endswith(
        "/opt/red/bin/red-portal serve --config /etc/red/portal/nginx.conf "
        "--secrets-conf /etc/red/portal/secrets.conf "
        "--token-file /etc/red/secrets/portal_token "
        "--vnc-password-file /etc/red/secrets/vnc_password "
        "--jupyter-token-file /etc/red/secrets/jupyter_token --cookie-name red_door_8443")
    assert f"--jupyter-path {base_url}" in built["status"].command_line


def test_literal_regex_is_exact_and_case_sensitive():
    import re

    pattern = door.literal_regex("Bearer a.b+c/=~-")[1:]  # nginx's "~" marks a regex
    assert re.match(pattern, "Bearer a.b+c/=~-")
    assert not re.match(pattern, "bearer a.b+c/=~-")
    assert not re.match(pattern, "Bearer aXb+c/=~-")


# -- the real nginx on loopback


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Echo(http.server.BaseHTTPRequestHandler):
    """A stub upstream: answers with the path and the Authorization header it got."""

    def do_GET(self):
        body = json.dumps({"path": self.path,
                           "authorization": self.headers.get("Authorization")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    if not Path(door.NGINX).exists():
        pytest.fail("nginx is not installed: `make deps` installs it")
    work = tmp_path_factory.mktemp("portal")
    upstreams = []
    for _ in range(2):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        upstreams.append(server)
    status_dir = work / "status"
    (status_dir / "logs").mkdir(parents=True)
    (status_dir / "status.json").write_text('{"ready": true}')
    (status_dir / "logs" / "sshd.txt").write_text("sshd line\n")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=t",
                    "-keyout", str(work / "key.pem"), "-out", str(work / "cert.pem")],
                   check=True, capture_output=True)
    port = free_port()
    config = get_template(template("portal", "/etc/red/portal/nginx.conf")).render(
        port=port, cert=work / "cert.pem", key=work / "key.pem",
        secrets_conf=work / "secrets.conf", www=ROOT / "files/portal/opt/red/portal/www",
        status_dir=status_dir, novnc_port=upstreams[0].server_address[1],
        jupyter_port=upstreams[1].server_address[1], jupyter_base_url="/jupyter/",
    )
    # Test-only: this machine's paths (pytest's temp dirs are root-only, so workers run as root).
    config = (config.replace("user www-data;", "user root;")
              .replace("/run/red-portal.pid", str(work / "nginx.pid"))
              .replace("/dev/stdout", str(work / "access.log")))
    (work / "nginx.conf").write_text(config)
    for name, value in (("token", TOKEN), ("vnc", VNC_PASSWORD), ("jupyter", JUPYTER_TOKEN)):
        (work / name).write_text(value + "\n")
    process = _serve_door(work, "nginx.conf", port, "error.log")
    yield {"port": port, "work": work}
    process.terminate()
    process.wait(10)
    for server in upstreams:
        server.shutdown()


def _serve_door(work: Path, config: str, port: int, log: str) -> subprocess.Popen:
    """red-portal serve with the test's files; returns once the door answers."""
    process = subprocess.Popen(
        [str(TOOLS / "red-portal"), "serve",
         "--config", str(work / config), "--secrets-conf", str(work / "secrets.conf"),
         "--token-file", str(work / "token"), "--vnc-password-file", str(work / "vnc"),
         "--jupyter-token-file", str(work / "jupyter"), "--cookie-name", f"red_door_{port}"],
        stdout=(work / log).open("w"), stderr=subprocess.STDOUT,
        # As supervisor starts a program: in a process group of its own.
        start_new_session=True,
        env={},
    )
    deadline = time.monotonic() + 10
    while curl(port, "/", check_alive=True) == "000":
        assert process.poll() is None, (work / log).read_text()
        assert time.monotonic() < deadline, (work / log).read_text()
        time.sleep(0.1)
    return process


def test_a_door_whose_master_was_killed_comes_back_on_its_port(nginx):
    # kill -9 of nginx's master leaves its workers holding the port; the next start clears them.
    work, port = nginx["work"], free_port()
    config = (work / "nginx.conf").read_text().replace(str(nginx["port"]), str(port)) \
        .replace(str(work / "nginx.pid"), str(work / "killed.pid"))
    (work / "killed.conf").write_text(config)
    first = _serve_door(work, "killed.conf", port, "killed-1.log")
    master = int((work / "killed.pid").read_text())
    assert master == first.pid  # red-portal became nginx's master (exec)
    first.kill()
    first.wait(5)
    workers = group(master)
    assert workers and all(cmdline(pid) == "nginx: worker process" for pid in workers)
    assert curl(port, "/", check_alive=True) != "000"  # the orphans still answer
    second = _serve_door(work, "killed.conf", port, "killed-2.log")
    try:
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers) or "starting nginx" not in (
                work / "killed-2.log").read_text():
            assert second.poll() is None, (work / "killed-2.log").read_text()
            assert time.monotonic() < deadline, (work / "killed-2.log").read_text()
            time.sleep(0.1)
        log = (work / "killed-2.log").read_text()
        assert f"the workers of a front door whose master died (pid {master})" in log
        deadline = time.monotonic() + 10
        while curl(port, "/red/status.json", "-H", f"Authorization: Bearer {TOKEN}") != "200":
            assert second.poll() is None and time.monotonic() < deadline, log
            time.sleep(0.1)
        assert group(second.pid)  # the new master's workers
    finally:
        second.terminate()
        second.wait(10)


def curl(port, path, *args, check_alive=False, scheme="https") -> str:
    """curl's status code; with ``-D -`` etc. in args, its whole output."""
    command = ["curl", "-sk", "--max-time", "5", *args, f"{scheme}://127.0.0.1:{port}{path}"]
    if not any(arg in ("-D", "-i") for arg in args):
        command[2:2] = ["-o", "/dev/null", "-w", "%{http_code}"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return result.stdout if result.stdout or not check_alive else "000"


def test_secrets_include_is_root_only(nginx):
    assert (nginx["work"] / "secrets.conf").stat().st_mode & 0o777 == 0o600


def test_no_token_wrong_token_and_forged_cookie_get_401_with_the_way_in(nginx):
    port = nginx["port"]
    for args in ([], ["-H", f"Cookie: red_door_{port}={'0' * 64}"],
                 ["-H", "Authorization: Bearer wrong-token-123"], ["-u", f"red:{TOKEN}x"]):
        assert curl(port, "/red/status.json", *args) == "401", args
    assert curl(port, "/?token=wrong-token-123") == "401"
    page = curl(port, "/desktop/", "-i")
    assert page.startswith("HTTP/1.1 401")
    assert 'WWW-Authenticate: Bearer realm="Red front door"' in page
    assert "?token=TOKEN" in page and "/etc/red/secrets/portal_token" in page
    # The token in another case is another token.
    assert curl(port, "/", "-H", f"Authorization: Bearer {TOKEN.lower()}") == "401"


def test_query_token_sets_a_cookie_and_redirects_without_it(nginx):
    port = nginx["port"]
    answer = curl(port, f"/desktop/vnc.html?a=1&token={TOKEN}&b=2", "-D", "-", "-o", "/dev/null")
    assert answer.startswith("HTTP/1.1 303")
    headers = dict(line.split(": ", 1) for line in answer.splitlines()[1:] if ": " in line)
    assert headers["Location"] == "/desktop/vnc.html?a=1&b=2"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"red_door_{port}={door.cookie_value(TOKEN)};")
    for flag in ("HttpOnly", "Secure", "SameSite=Lax", "Path=/"):
        assert flag in cookie
    assert TOKEN not in cookie
    only = curl(port, f"/?token={TOKEN}", "-D", "-", "-o", "/dev/null")
    assert "Location: /\n" in only
    value = cookie.split(";", 1)[0]
    assert curl(port, "/red/status.json", "-H", f"Cookie: {value}") == "200"
    # Never a redirect to another host.
    assert "Location: //" not in curl(port, f"//evil.example/?token={TOKEN}", "-D", "-")


def test_bearer_and_basic_auth_work_for_scripts(nginx):
    port = nginx["port"]
    assert curl(port, "/red/status.json", "-H", f"Authorization: Bearer {TOKEN}") == "200"
    assert curl(port, "/red/status.json", "-u", f"red:{TOKEN}") == "200"
    assert curl(port, "/red/logs/sshd.txt", "-u", f"vastai:{TOKEN}") == "200"


def test_vnc_password_endpoint_and_jupyter_token_are_handed_on_exactly(nginx):
    port = nginx["port"]
    auth = ["-s", "-k", "-H", f"Authorization: Bearer {TOKEN}"]
    password = subprocess.run(["curl", *auth, f"https://127.0.0.1:{port}/red/vnc-password"],
                              capture_output=True, text=True, check=True).stdout
    assert base64.b64decode(password).decode() == VNC_PASSWORD
    echo = json.loads(subprocess.run(
        ["curl", *auth, f"https://127.0.0.1:{port}/jupyter/api/status?x=1"],
        capture_output=True, text=True, check=True).stdout)
    assert echo == {"path": "/jupyter/api/status?x=1", "authorization": f"token {JUPYTER_TOKEN}"}
    novnc = json.loads(subprocess.run(
        ["curl", *auth, f"https://127.0.0.1:{port}/desktop/vnc.html"],
        capture_output=True, text=True, check=True).stdout)
    assert novnc["path"] == "/vnc.html"
    # The desktop page itself is ours.
    assert "vnc-password" in subprocess.run(
        ["curl", *auth, f"https://127.0.0.1:{port}/desktop/"],
        capture_output=True, text=True, check=True).stdout


def test_plain_http_on_the_port_is_sent_to_https(nginx):
    answer = curl(nginx["port"], "/x", "-D", "-", "-o", "/dev/null", scheme="http")
    assert answer.startswith("HTTP/1.1 307")
    assert f"Location: https://127.0.0.1:{nginx['port']}/x" in answer


def test_the_token_is_in_no_log(nginx):
    curl(nginx["port"], f"/?token={TOKEN}")
    curl(nginx["port"], "/?token=wrong-token-123")
    for name in ("access.log", "error.log"):
        text = (nginx["work"] / name).read_text()
        assert TOKEN not in text and "wrong-token-123" not in text
        assert JUPYTER_TOKEN not in text
    assert '"GET / HTTP/1.1" 303' in (nginx["work"] / "access.log").read_text()


# -- plan level: the same code path on Ubuntu 22.04 and Debian 12


@pytest.mark.parametrize("group", ["ubuntu_2204", "debian_12"])
def test_install_takes_nginx_from_the_distro_and_bakes_no_certificate(group):
    code, commands, output = run_plan(group, data=["red_phase=install"])
    assert code == 0, output
    assert any(" install --no-install-recommends " in command
               and command.endswith(" nginx openssl") for command in commands)
    assert not any("apt-add-repository" in c or "sources.list.d" in c for c in commands)
    held = next(i for i, c in enumerate(commands) if "policy-rc.d" in c and "exit 101" in c)
    nginx = next(i for i, c in enumerate(commands) if c.endswith("nginx openssl"))
    assert held < nginx
    assert not any("openssl req" in c or "portal_token" in c for c in commands)


@pytest.mark.parametrize("group", ["ubuntu_2204", "debian_12"])
def test_first_start_makes_the_token_and_the_certificate(group):
    code, commands, output = run_plan(group, data=["red_phase=configure"])
    assert code == 0, output
    assert any("/dev/urandom" in c and "/etc/red/secrets/portal_token" in c for c in commands)
    cert = next(c for c in commands if "openssl req -x509" in c)
    assert "subjectAltName=DNS:localhost,IP:127.0.0.1" in cert and cert.startswith("umask 077")
    assert any("/etc/red/portal/nginx.conf" in c for c in commands)


def test_config_without_a_jupyter_path_is_valid_too(nginx):
    # PORTAL_ENABLED=false renders Jupyter's base_url "/": nginx must still accept the file.
    work = nginx["work"]
    config = get_template(template("portal", "/etc/red/portal/nginx.conf")).render(
        port=free_port(), cert=work / "cert.pem", key=work / "key.pem",
        secrets_conf=work / "secrets.conf", www=work, status_dir=work, novnc_port=1,
        jupyter_port=2, jupyter_base_url="/",
    ).replace("/run/red-portal.pid", str(work / "other.pid"))
    assert "location / {" in config and "proxy_pass http://127.0.0.1:2" not in config
    (work / "other.conf").write_text(config)
    result = subprocess.run([door.NGINX, "-t", "-c", str(work / "other.conf")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
