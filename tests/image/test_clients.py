"""Real clients against the running container: ssh, a VNC client, noVNC in Chromium, Jupyter."""

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image

from tests.boxes import answers, jupyter_status, port_open
from tests.image.conftest import JUPYTER_TOKEN, MAIN_PORTS, VNC_PASSWORD

SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-p", str(MAIN_PORTS["ssh"])]


def lit_fraction(path: Path) -> float:
    """Share of pixels that are not black."""
    image = Image.open(path).convert("L")
    histogram = image.histogram()
    return sum(histogram[16:]) / sum(histogram)


def test_ssh_key_login(box, ssh_key):
    result = subprocess.run(["ssh", *SSH_OPTIONS, "-i", str(ssh_key), "root@127.0.0.1", "id -u"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_ssh_password_login_is_refused(box):
    result = subprocess.run(
        ["ssh", *SSH_OPTIONS, "-o", "PubkeyAuthentication=no",
         "-o", "PreferredAuthentications=password,keyboard-interactive", "root@127.0.0.1", "true"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr


def _non_loopback_address() -> str | None:
    output = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    return next((address for address in output if not address.startswith("127.")), None)


def test_xvnc_and_novnc_are_not_reachable_off_loopback(box):
    address = _non_loopback_address()
    assert answers(box, "vnc", MAIN_PORTS["vnc"]), "Xvnc should listen on loopback"
    # Behind the front door (the default) noVNC listens on loopback only too.
    assert port_open(MAIN_PORTS["novnc"], "127.0.0.1")
    if address:  # with host networking, the box's addresses are this machine's
        assert not port_open(MAIN_PORTS["vnc"], address)
        assert not port_open(MAIN_PORTS["novnc"], address)


def vncdo(password: str, target: Path) -> subprocess.CompletedProcess:
    vncdo_bin = Path(sys.executable).with_name("vncdo")
    return subprocess.run(
        [str(vncdo_bin), "-s", f"127.0.0.1::{MAIN_PORTS['vnc']}", "-p", password,
         "capture", str(target)],
        capture_output=True, text=True, timeout=60,
    )


# The desktop paints its background some seconds after Xvnc answers (longer on a busy box).
PAINT_TIMEOUT = 60


def test_vnc_client_captures_a_desktop_with_the_password(box, tmp_path):
    capture = tmp_path / "desktop.png"
    deadline = time.monotonic() + PAINT_TIMEOUT
    while True:
        result = vncdo(VNC_PASSWORD, capture)
        assert result.returncode == 0, result.stderr
        if lit_fraction(capture) > 0.5 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert Image.open(capture).size == (1280, 800)  # VNC_RESOLUTION given to the box
    assert lit_fraction(capture) > 0.5


def test_vnc_client_with_a_wrong_password_fails(box, tmp_path):
    result = vncdo("wrong-pw", tmp_path / "nothing.png")
    assert result.returncode != 0
    assert not (tmp_path / "nothing.png").exists()


def test_novnc_in_chromium_connects_and_shows_the_desktop(box, tmp_path):
    from playwright.sync_api import sync_playwright

    url = (f"http://127.0.0.1:{MAIN_PORTS['novnc']}/vnc.html?autoconnect=1"
           f"&password={VNC_PASSWORD}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-dev-shm-usage"],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url)
            page.wait_for_function(
                "document.getElementById('noVNC_status').textContent.includes('Connected')",
                timeout=30000,
            )
            status = page.text_content("#noVNC_status")
            shot = tmp_path / "novnc.png"
            deadline = time.monotonic() + PAINT_TIMEOUT
            while True:
                page.wait_for_timeout(1000)  # let framebuffer updates paint
                page.locator("#noVNC_container canvas").screenshot(path=str(shot))
                if lit_fraction(shot) > 0.5 or time.monotonic() > deadline:
                    break
        finally:
            browser.close()
    assert "Connected" in status
    assert lit_fraction(shot) > 0.5


def test_jupyter_needs_the_token(box):
    assert jupyter_status(MAIN_PORTS["jupyter"], JUPYTER_TOKEN) == 200
    assert jupyter_status(MAIN_PORTS["jupyter"], None) == 403
    assert jupyter_status(MAIN_PORTS["jupyter"], "wrong-token-123") == 403


def test_jupyter_lists_and_starts_the_app_kernel(box):
    base = f"http://127.0.0.1:{MAIN_PORTS['jupyter']}/jupyter"
    headers = {"Authorization": f"token {JUPYTER_TOKEN}", "Content-Type": "application/json"}

    def call(method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")

    _, specs = call("GET", "/api/kernelspecs")
    assert "red-app" in specs["kernelspecs"]
    assert specs["kernelspecs"]["red-app"]["spec"]["argv"][0] == "/opt/red/venv/bin/python"
    status, kernel = call("POST", "/api/kernels", {"name": "red-app"})
    assert status == 201
    try:
        _, state = call("GET", f"/api/kernels/{kernel['id']}")
        assert state["name"] == "red-app"
        assert state["execution_state"] in ("starting", "idle", "busy")
    finally:
        call("DELETE", f"/api/kernels/{kernel['id']}")


def test_token_with_shell_metacharacters_was_never_executed(host):
    assert not host.file("/tmp/pwned").exists
