"""Real clients against the running container: ssh, a VNC client, noVNC in Chromium, Jupyter."""

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image
from vncdotool.command import ExitStatus

from tests.boxes import JUPYTER_BASE_URL, answers, jupyter_status, port_open
from tests.image.conftest import JUPYTER_TOKEN, MAIN_PORTS, VNC_PASSWORD
from tests.screens import CHROMIUM, CHROMIUM_ARGS, PAINT_TIMEOUT, lit_fraction

SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-p", str(MAIN_PORTS["sshd"])]


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
    assert answers(box, "xvnc", MAIN_PORTS["xvnc"]), "Xvnc should listen on loopback"
    # Behind the front door (the default) noVNC listens on loopback only too.
    assert port_open(MAIN_PORTS["novnc"], "127.0.0.1")
    if address:  # with host networking, the box's addresses are this machine's
        assert not port_open(MAIN_PORTS["xvnc"], address)
        assert not port_open(MAIN_PORTS["novnc"], address)


def vncdo(password: str, target: Path) -> subprocess.CompletedProcess:
    vncdo_bin = Path(sys.executable).with_name("vncdo")
    return subprocess.run(
        [str(vncdo_bin), "-s", f"127.0.0.1::{MAIN_PORTS['xvnc']}", "-p", password,
         "capture", str(target)],
        capture_output=True, text=True, timeout=60,
    )


# Seconds a new kernel may take to import ipykernel and report idle (a busy 2-core box).
KERNEL_TIMEOUT = 60
# Run in the box's Jupyter venv: a kernel_info_request over the server's kernel websocket;
# prints the reply's language_info.
KERNEL_INFO = """
import json, sys, uuid
from tornado.httpclient import HTTPRequest
from tornado.ioloop import IOLoop
from tornado.websocket import websocket_connect


async def main(url, token):
    ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": "token " + token}))
    msg_id = uuid.uuid4().hex
    ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "kernel_info_request", "username": "red",
                   "session": uuid.uuid4().hex, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "content": {}, "channel": "shell"}))
    while True:
        message = json.loads(await ws.read_message())
        if (message.get("msg_type") == "kernel_info_reply"
                and message["parent_header"].get("msg_id") == msg_id):
            print(json.dumps(message["content"]["language_info"]))
            return


IOLoop.current().run_sync(lambda: main(sys.argv[1], sys.argv[2]), timeout=60)
"""


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
    # vncdo's own exit status for a refused password (not a connection or protocol error).
    assert result.returncode == ExitStatus.AUTHENTICATION_FAILED, result.stderr
    assert not (tmp_path / "nothing.png").exists()


def test_novnc_in_chromium_connects_and_shows_the_desktop(box, tmp_path):
    from playwright.sync_api import sync_playwright

    url = (f"http://127.0.0.1:{MAIN_PORTS['novnc']}/vnc.html?autoconnect=1"
           f"&password={VNC_PASSWORD}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
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
    base = f"http://127.0.0.1:{MAIN_PORTS['jupyter']}{JUPYTER_BASE_URL.rstrip('/')}"
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
        # Jupyter reports "starting" until a client talks to the kernel: ask it over the
        # server's websocket, as JupyterLab does, then the kernel must be idle.
        url = base.replace("http:", "ws:", 1) + f"/api/kernels/{kernel['id']}/channels"
        info = box.exec("/opt/red/jupyter/bin/python", "-c", KERNEL_INFO, url, JUPYTER_TOKEN,
                        timeout=KERNEL_TIMEOUT + 30)
        assert json.loads(info.stdout.strip().splitlines()[-1])["name"] == "python"
        deadline = time.monotonic() + KERNEL_TIMEOUT
        while True:
            _, state = call("GET", f"/api/kernels/{kernel['id']}")
            if state["execution_state"] == "idle" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert state["name"] == "red-app"
        assert state["execution_state"] == "idle", state
    finally:
        call("DELETE", f"/api/kernels/{kernel['id']}")


def test_token_with_shell_metacharacters_was_never_executed(host):
    assert not host.file("/tmp/pwned").exists
