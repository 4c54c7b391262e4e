"""
The front door with real clients: Chromium from the Open-button URL to a connected desktop and a
JupyterLab cell in the app kernel, curl for the auth rules, openssl for the certificates, and
the logs and listeners of the box.

Two boxes: ``door_box`` as Vast starts one (only OPEN_BUTTON_TOKEN given: the token, the VNC
password and Jupyter's token all come from it; PUBLIC_IPADDR set), and ``second_door`` with
nothing given (a generated token), later handed a Vast instance certificate.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.boxes import NO_APP, PROGRAMS, podman, ports, ports_env, remove, start_box, wait_ready
from tests.conftest import ROOT
from tests.screens import CHROMIUM, CHROMIUM_ARGS, PAINT_TIMEOUT, lit_fraction

TOKEN = "d0or-T0ken_for.the~test-5a1f9c"
PUBLIC_IP = "203.0.113.7"  # only written into the certificate; nothing is sent there
# Clear of the other image tests' and the bench's ports.
DOOR_PORTS = ports(27020)
SECOND_PORTS = ports(27120)
ARTIFACTS = ROOT / "tests" / "artifacts"


def wait_status(box, predicate, timeout: float = 90) -> dict:
    """The box's status.json once ``predicate`` holds for it."""
    deadline = time.monotonic() + timeout
    status = {}
    while time.monotonic() < deadline:
        text = box.sh("cat /var/lib/red/status/status.json 2>/dev/null", check=False)
        try:
            status = json.loads(text)
        except ValueError:
            status = {}
        if status and predicate(status):
            return status
        time.sleep(0.5)
    raise AssertionError(f"status.json never satisfied the check: {status}")


def all_running(status: dict) -> bool:
    states = {program["name"]: program["state"] for program in status["programs"]}
    return all(states.get(name) == "RUNNING" for name in PROGRAMS)


@pytest.fixture(scope="module")
def door_box():
    box = start_box("red-test-door", {
        **NO_APP,
        **ports_env(DOOR_PORTS),
        "OPEN_BUTTON_TOKEN": TOKEN, "PUBLIC_IPADDR": PUBLIC_IP, "VNC_RESOLUTION": "1280x800",
    }, DOOR_PORTS)
    try:
        wait_ready(box, TOKEN)
        wait_status(box, all_running)
        yield box
    finally:
        remove(box.name)


@pytest.fixture(scope="module")
def second_door():
    box = start_box("red-test-door2", {**NO_APP, **ports_env(SECOND_PORTS)}, SECOND_PORTS)
    try:
        wait_ready(box)
        yield box
    finally:
        remove(box.name)


def curl(port: int, path: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sk", "--max-time", "10", *args,
                           f"https://127.0.0.1:{port}{path}"],
                          capture_output=True, text=True, timeout=30, check=False)


def code(port: int, path: str, *args: str) -> str:
    return curl(port, path, "-o", "/dev/null", "-w", "%{http_code}", *args).stdout


def served_certificate(port: int) -> str:
    """The PEM certificate the door serves, read with openssl s_client."""
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
         "-showcerts"], input="", capture_output=True, text=True, timeout=30, check=False)
    match = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
                      result.stdout, re.DOTALL)
    assert match, result.stdout + result.stderr
    return match.group(0)


def fingerprint(pem: str) -> str:
    return subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"], input=pem,
                          capture_output=True, text=True, check=True).stdout.strip()


def chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def novnc_frame(page):
    """noVNC's frame inside our /desktop/ page."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        frames = [frame for frame in page.frames if frame.url.split("#")[0].endswith("vnc.html")]
        if frames:
            return frames[0]
        page.wait_for_timeout(100)
    raise AssertionError(f"no noVNC frame in {page.url}: {[f.url for f in page.frames]}")


def wait_painted(frame, shot: Path) -> float:
    deadline = time.monotonic() + PAINT_TIMEOUT
    while True:
        frame.locator("#noVNC_container canvas").screenshot(path=str(shot))
        lit = lit_fraction(shot)
        if lit > 0.5 or time.monotonic() > deadline:
            return lit
        frame.page.wait_for_timeout(500)


# JupyterLab's own REST API and kernel websocket, from the page (the browser's cookie is what
# passes the door): start the app kernel, execute one cell, return its stdout.
RUN_CELL_JS = """async (code) => {
  const post = await fetch('/jupyter/api/kernels', {method: 'POST',
    headers: {'Content-Type': 'application/json'}, body: JSON.stringify({name: 'red-app'})});
  if (post.status !== 201) return 'kernel start: HTTP ' + post.status;
  const kernel = await post.json();
  const socket = new WebSocket(`wss://${location.host}/jupyter/api/kernels/${kernel.id}/channels`);
  const msgId = 'red-test-' + Date.now();
  const output = await new Promise((resolve) => {
    let text = '';
    const timer = setTimeout(() => resolve('timeout: ' + text), 60000);
    socket.onopen = () => socket.send(JSON.stringify({
      header: {msg_id: msgId, msg_type: 'execute_request', username: 'test', session: msgId,
               version: '5.3', date: new Date().toISOString()},
      parent_header: {}, metadata: {}, channel: 'shell', buffers: [],
      content: {code, silent: false, store_history: false, user_expressions: {},
                allow_stdin: false, stop_on_error: true}}));
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.parent_header.msg_id !== msgId) return;
      if (message.msg_type === 'stream') text += message.content.text;
      if (message.msg_type === 'error') text += 'ERROR ' + message.content.evalue;
      if (message.msg_type === 'status' && message.content.execution_state === 'idle'
          && text) { clearTimeout(timer); resolve(text); }
    };
    socket.onerror = () => resolve('websocket error');
  });
  socket.close();
  await fetch('/jupyter/api/kernels/' + kernel.id, {method: 'DELETE'});
  return output;
}"""


def test_open_button_url_to_status_page_desktop_and_jupyter(door_box):
    from playwright.sync_api import sync_playwright

    port = DOOR_PORTS["portal"]
    base = f"https://127.0.0.1:{port}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = chromium(playwright)
        try:
            context = browser.new_context(ignore_https_errors=True,
                                          viewport={"width": 1280, "height": 800})
            page = context.new_page()
            started = time.monotonic()
            page.goto(f"{base}/?token={TOKEN}")
            # Redirected to the same URL without the token; the cookie carries it on.
            assert page.url == f"{base}/"
            page.wait_for_selector("#programs tbody tr")
            at_status = time.monotonic()
            page.goto(f"{base}/desktop/")
            frame = novnc_frame(page)
            frame.wait_for_selector("#noVNC_status", state="attached", timeout=30000)
            frame.wait_for_function(
                "document.getElementById('noVNC_status').textContent.includes('Connected')",
                timeout=30000)
            connected = time.monotonic()
            lit = wait_painted(frame, ARTIFACTS / "portal-desktop-canvas.png")
            painted = time.monotonic()
            print(f"\nbench: Open-button URL -> status page {at_status - started:.1f} s, "
                  f"-> noVNC connected {connected - started:.1f} s, "
                  f"-> desktop painted {painted - started:.1f} s")
            # No password asked: neither noVNC 1.3's nor 1.0's dialog opened.
            assert frame.evaluate("""() => !['noVNC_credentials_dlg', 'noVNC_password_dlg']
                .some((id) => document.getElementById(id)?.classList.contains('noVNC_open'))""")
            assert lit > 0.5
            page.screenshot(path=str(ARTIFACTS / "portal-desktop.png"))

            page.goto(f"{base}/")
            page.wait_for_function(
                """(names) => names.every((name) => document.querySelector(
                     `tr[data-program="${name}"] .state`)?.textContent === 'RUNNING')""",
                arg=list(PROGRAMS), timeout=60000)
            banner = page.text_content("#banner")
            assert "Every service is running" in banner
            assert page.get_attribute("#jupyter-link", "href") == "/jupyter/"
            steps = page.locator("#steps li").all_text_contents()
            page.screenshot(path=str(ARTIFACTS / "portal-status.png"), full_page=True)
            assert any("VisoMaster checkout" in step and "skipped" in step
                       for step in steps), steps
            assert any("VisoMaster packages" in step and "no checkout in" in step
                       for step in steps), steps
            assert "/etc/red/secrets/vnc_password" in page.text_content("#secrets")
            page.click('tr[data-program="portal"] button.log')
            page.wait_for_function(
                "document.getElementById('log').textContent.includes('starting nginx')")
            page.screenshot(path=str(ARTIFACTS / "portal-status.png"), full_page=True)
            phone = context.new_page()
            phone.set_viewport_size({"width": 390, "height": 844})
            phone.goto(f"{base}/")
            phone.wait_for_selector('tr[data-program="status"]')
            assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            phone.screenshot(path=str(ARTIFACTS / "portal-status-phone.png"), full_page=True)

            page.goto(f"{base}/jupyter/")
            page.wait_for_selector(".jp-LabShell", timeout=60000)
            assert "/jupyter/lab" in page.url
            output = page.evaluate(RUN_CELL_JS, "import sys; print(sys.executable, 6 * 7)")
            assert output.strip() == "/opt/red/venv/bin/python 42"
        finally:
            browser.close()


def test_no_token_wrong_token_and_tampered_cookie_get_401(door_box):
    port = DOOR_PORTS["portal"]
    login = curl(port, f"/?token={TOKEN}", "-D", "-", "-o", "/dev/null").stdout
    assert login.startswith("HTTP/1.1 303")
    cookie = re.search(r"Set-Cookie: ([^;]+);", login).group(1)
    name, value = cookie.split("=", 1)
    assert name == f"red_door_{port}" and TOKEN not in value
    tampered = f"{name}={value[:-1]}{'0' if value[-1] != '0' else '1'}"
    assert code(port, "/red/status.json", "-H", f"Cookie: {cookie}") == "200"
    for args in ([], ["-H", f"Cookie: {tampered}"], ["-H", "Authorization: Bearer not-the-token"],
                 ["-u", "red:not-the-token"]):
        assert code(port, "/red/status.json", *args) == "401", args
    assert code(port, "/?token=not-the-token") == "401"
    page = curl(port, "/desktop/").stdout
    assert "needs its token" in page and "/etc/red/secrets/portal_token" in page


def test_bearer_and_basic_auth_work_for_scripts(door_box):
    port = DOOR_PORTS["portal"]
    status = json.loads(curl(port, "/red/status.json", "-H", f"Authorization: Bearer {TOKEN}",
                             "--fail").stdout)
    assert status["ready"] and not status["problems"]
    assert code(port, "/red/status.json", "-u", f"red:{TOKEN}") == "200"
    assert code(port, "/jupyter/api/status", "-u", f"red:{TOKEN}") == "200"


def test_plain_http_is_sent_to_https(door_box):
    port = DOOR_PORTS["portal"]
    result = subprocess.run(["curl", "-s", "-D", "-", "-o", "/dev/null", "--max-time", "10",
                             f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                            check=False)
    assert result.stdout.startswith("HTTP/1.1 307"), result.stdout
    assert f"Location: https://127.0.0.1:{port}/" in result.stdout


def test_the_served_certificate_is_the_containers_own(door_box):
    served = served_certificate(DOOR_PORTS["portal"])
    on_box = door_box.sh("cat /etc/red/portal/tls/cert.pem")
    assert fingerprint(served) == fingerprint(on_box)
    names = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=served,
                           capture_output=True, text=True, check=True).stdout
    assert f"IP Address:{PUBLIC_IP}" in names and "DNS:localhost" in names
    assert "IP Address:127.0.0.1" in names
    modes = door_box.sh("stat -c '%a %U' /etc/red/portal /etc/red/portal/tls "
                        "/etc/red/portal/tls/key.pem /etc/red/portal/secrets.conf")
    assert modes.split() == ["700", "root", "700", "root", "600", "root", "600", "root"]
    # Made at the container's first start: the image has none.
    image = podman("inspect", "-f", "{{.ImageName}}", door_box.name).stdout.strip()
    baked = podman("run", "--rm", "--entrypoint", "ls", image, "/etc/red/portal",
                   check=False)
    assert "tls" not in baked.stdout


def test_two_containers_have_different_certificates_and_a_mounted_one_wins(door_box,
                                                                           second_door,
                                                                           tmp_path):
    port = SECOND_PORTS["portal"]
    own = served_certificate(port)
    assert fingerprint(own) != fingerprint(served_certificate(DOOR_PORTS["portal"]))
    # A generated token: root-only, and it opens the door.
    token = second_door.sh("cat /etc/red/secrets/portal_token")
    assert second_door.sh("stat -c %a /etc/red/secrets/portal_token").strip() == "600"
    assert len(token) == 32 and code(port, "/", "-H", f"Authorization: Bearer {token}") == "200"
    # Vast's instance certificate appears: the next converge serves it.
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=vast instance", "-keyout", str(tmp_path / "instance.key"),
                    "-out", str(tmp_path / "instance.crt")], check=True, capture_output=True)
    for name in ("instance.crt", "instance.key"):
        podman("cp", str(tmp_path / name), f"{second_door.name}:/etc/{name}")
    report = second_door.converge_json()
    assert report["results"]["totals"]["error"] == 0
    deadline = time.monotonic() + 30
    while fingerprint(served_certificate(port)) != fingerprint(
            (tmp_path / "instance.crt").read_text()):
        assert time.monotonic() < deadline, "the instance certificate is not served"
        time.sleep(0.5)


def test_vast_jupyter_mode_links_to_vasts_jupyter(door_box):
    door_box.sh("echo jupyter > /.launch")
    try:
        status = wait_status(door_box, lambda status: status["jupyter"]["vast"], timeout=20)
        assert status["jupyter"]["port"] == 8080
        # The desktop and the status page are still served.
        auth = ["-H", f"Authorization: Bearer {TOKEN}"]
        assert code(DOOR_PORTS["portal"], "/desktop/", *auth) == "200"
        assert code(DOOR_PORTS["portal"], "/", *auth) == "200"
    finally:
        door_box.sh("rm -f /.launch")


def test_second_converge_changes_nothing(door_box):
    totals = door_box.converge_json()["results"]["totals"]
    assert totals["success"] == 0 and totals["error"] == 0, totals


def test_only_ssh_and_the_door_listen_off_loopback(door_box):
    # Host networking shows the host's sockets too: those of this container's processes are
    # the ones with a process name.
    lines = door_box.sh("ss -Hltnp").splitlines()
    ours = [line.split()[3] for line in lines if "users:" in line]
    public = {address.rsplit(":", 1)[1] for address in ours
              if not address.startswith(("127.", "[::1]", "[::ffff:127."))}
    assert public == {str(DOOR_PORTS["sshd"]), str(DOOR_PORTS["portal"])}, lines


def test_the_token_is_in_no_log(door_box):
    # Runs last: after the browser, curl and the converges above.
    files = door_box.sh(f"grep -rlF -- '{TOKEN}' /logs /var/log /var/lib/red/status || true")
    assert files.strip() == ""
    assert TOKEN not in podman("logs", door_box.name).stdout + podman(
        "logs", door_box.name).stderr
    # The proxy's access log has the requests, without their query strings.
    access = door_box.sh("cat /logs/portal.log")
    assert '"GET / HTTP/1.1" 303' in access and "token=" not in access
