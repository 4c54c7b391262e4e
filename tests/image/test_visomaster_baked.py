"""
The app baked into the image (``--build-arg VISOMASTER_IN_IMAGE=1``), on the Debian base with a
fixture app: the real Dockerfile built again from the test image's cached layers, with the
fixture repository (dumb HTTP), its package index and its models served on this machine's
loopback (the build and the boxes share the host network). Then the first boot of the baked
image against the first boot of the lean one, each to "app ready" (the app's window on the
desktop): the baked boot changes nothing app-related, the models are still verified at boot.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests import pip_index
from tests.boxes import Box, image, podman, remove, wait_ready
from tests.conftest import ROOT
from tests.fixtures.app_downloader import DOWNLOADER
from tests.fixtures.visomaster_app import MAIN_PY, TITLE

pytestmark = pytest.mark.image

GIT_PORT, INDEX_PORT, MODELS_PORT = 17891, 17892, 17893
PORTS = {"ssh": 23122, "jupyter": 19988, "novnc": 17180, "vnc": 17981}
APP_DIR = "/workspace/VisoMaster"
MODEL_NAMES = ("face", "lips")
TIMINGS: dict[str, float] = {}


def blob(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest() * 4000


def app_files() -> dict[str, str]:
    entries = "\n".join(
        f'    {{"model_name": "{name}", "local_path": f"{{models_dir}}/{name}.onnx",\n'
        f'     "hash": "{hashlib.sha256(blob(name)).hexdigest()}",\n'
        f'     "url": f"{{assets_repo}}/{name}.onnx"}},' for name in MODEL_NAMES)
    return {
        "main.py": MAIN_PY,
        # pip asks only loopback: the file's own index line.
        "requirements_cu124.txt": f"--index-url http://127.0.0.1:{INDEX_PORT}/simple\n"
                                  "red-fixture-a==1.0\n",
        "download_models.py": DOWNLOADER,
        "app/processors/models_data.py": (
            'models_dir = "./model_assets"\n'
            f'assets_repo = "http://127.0.0.1:{MODELS_PORT}/assets"\n\n'
            f"models_list = [\n{entries}\n]\n"),
        ".gitignore": "*.onnx\n*.json\n__pycache__/\n",
    }


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_args):
        pass


def _serve_dir(port: int, directory: Path) -> http.server.ThreadingHTTPServer:
    def handler(*args, **kwargs):
        return _Files(*args, directory=str(directory), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The fixture app's repository, package index and models, on this machine's loopback."""
    root = tmp_path_factory.mktemp("baked")
    src = root / "src"
    for rel, text in app_files().items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    git = {**os.environ, "GIT_AUTHOR_NAME": "F", "GIT_AUTHOR_EMAIL": "f@e",
           "GIT_COMMITTER_NAME": "F", "GIT_COMMITTER_EMAIL": "f@e"}
    for command in (["git", "init", "-q", "-b", "main", "."], ["git", "add", "-A"],
                    ["git", "commit", "-qm", "v1"], ["git", "tag", "v1"],
                    ["git", "clone", "-q", "--bare", ".", str(root / "http" / "app.git")]):
        subprocess.run(command, cwd=src, env=git, check=True)
    subprocess.run(["git", "update-server-info"], cwd=root / "http" / "app.git", check=True)
    (root / "http" / "clip").mkdir()
    (root / "http" / "clip" / "ViT-B-16.pt").write_bytes(blob("clip"))
    for name in MODEL_NAMES:
        (root / "http" / "assets").mkdir(exist_ok=True)
        (root / "http" / "assets" / f"{name}.onnx").write_bytes(blob(name))
    pip_index.make_wheel(str(root / "wheels"), "red-fixture-a", "1.0")
    queries = root / "queries.log"
    queries.touch()
    servers = [_serve_dir(GIT_PORT, root / "http"), _serve_dir(MODELS_PORT, root / "http"),
               pip_index.serve(INDEX_PORT, str(root / "wheels"), str(queries))]
    commit = subprocess.run(["git", "rev-parse", "v1"], cwd=src, capture_output=True,
                            text=True, check=True).stdout.strip()
    yield {"commit": commit, "queries": queries}
    for server in servers:
        server.shutdown()


APP_ENV = {
    "VISOMASTER_REPO_URL": f"http://127.0.0.1:{GIT_PORT}/app.git",
    "VISOMASTER_REF": "v1",
    "VISOMASTER_EXTRA_INDEX_URLS": f"http://127.0.0.1:{INDEX_PORT}/simple",
}


@pytest.fixture(scope="module")
def baked_image(served):
    """The real Dockerfile with the app baked in, from the test image's cached layers."""
    tag = f"{image()}-baked"
    base = os.environ.get("RED_BASE", "localhost/red-base:bookworm")
    args = ["build", "--isolation", "chroot", "--network", "host", "--format", "docker",
            "--build-arg", f"BASE_IMAGE={base}",
            "--build-arg", "PYTHON_VERSION=3.11", "--build-arg", "VISOMASTER_IN_IMAGE=1"]
    for name, value in APP_ENV.items():
        args += ["--build-arg", f"{name}={value}"]
    cas = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    if cas:  # the same secret as `make image`: the cached layers match
        bundle = ROOT / ".build" / "extra-ca.pem"
        bundle.parent.mkdir(exist_ok=True)
        bundle.write_text("".join(ca.read_text() for ca in cas))
        args += ["--secret", f"id=extra_ca,src={bundle}"]
    before = served["queries"].read_text()
    started = time.monotonic()
    result = podman(*args, "-t", tag, str(ROOT), check=False, timeout=1800)
    TIMINGS["baked_build_extra_seconds"] = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-4000:]
    # The build itself asked the loopback index for the app's package.
    assert f"{INDEX_PORT} /simple/red-fixture-a/" in served["queries"].read_text()[len(before):]
    yield tag
    podman("rmi", "-f", tag, check=False)


def window_up(box: Box) -> bool:
    tree = box.exec("xwininfo", "-display", ":1", "-root", "-tree", check=False).stdout
    return f'"{TITLE}"' in tree


def first_boot(name: str, tag: str) -> tuple[Box, float]:
    """Start a container of tag; seconds from `podman run` to the app's window on display :1."""
    env = {"SSH_PORT": str(PORTS["ssh"]), "JUPYTER_PORT": str(PORTS["jupyter"]),
           "NOVNC_PORT": str(PORTS["novnc"]), "VNC_PORT": str(PORTS["vnc"]),
           "VISOMASTER_AUTOSTART": "true", **({} if tag.endswith("-baked") else APP_ENV),
           # The CLIP weights from loopback (a mirror), verified at boot like the models.
           "VISOMASTER_CLIP_URL": f"http://127.0.0.1:{MODELS_PORT}/clip/ViT-B-16.pt",
           "VISOMASTER_CLIP_SHA256": hashlib.sha256(blob("clip")).hexdigest()}
    started = time.monotonic()
    podman("rm", "-f", name, check=False)
    podman("run", "-d", "--name", name, "--shm-size", "512m", "--runtime", "runc",
           "--network", "host", "--ulimit", "nofile=1024:1024", "--ulimit",
           "nproc=1024:1024", *(f"-e{key}={value}" for key, value in env.items()), tag)
    box = Box(name, env, PORTS)
    deadline = started + 600
    while not window_up(box):
        assert time.monotonic() < deadline, box.sh("tail -n 30 /logs/startup.log", check=False)
        time.sleep(0.5)
    return box, time.monotonic() - started


def test_the_baked_image_boots_to_the_app_changing_nothing_app_related(baked_image, served):
    box, seconds = first_boot("red-vm-baked", baked_image)
    try:
        TIMINGS["baked_first_boot_to_app_window"] = seconds
        wait_ready(box, timeout=120)
        assert box.sh(f"git -C {APP_DIR} rev-parse HEAD").strip() == served["commit"]
        # Nothing app-related at boot: no pip run, no clone; the baked stamp was current.
        assert box.sh("cat /logs/visomaster-pip.log 2>/dev/null || true") == ""
        startup = box.sh("cat /logs/startup.log")
        assert "cloned to" not in startup and "updated to" not in startup
        assert box.sh("/opt/red/venv/bin/python -c 'import red_fixture_a as m; "
                      "print(m.VERSION)'").strip() == "1.0"
        # The models are the boot's: downloaded and verified (by the background flow, after
        # the services are up).
        deadline = time.monotonic() + 120
        while f"model files in {APP_DIR} downloaded and verified" not in box.sh(
                "cat /logs/startup.log"):
            assert time.monotonic() < deadline, box.sh("tail -n 20 /logs/startup.log")
            time.sleep(1)
        state = json.loads(box.sh("cat /var/lib/red/models-state.json"))
        assert state["verified"] is True and state["ok"] == len(MODEL_NAMES)
        # The boot's own background converge first, then ours: nothing left to change.
        box.sh("for _ in $(seq 1 600); do grep -qs '\"finished\"' "
               "/var/lib/red/provisioning/onstart.json && break; sleep 0.5; done", timeout=320)
        report = box.converge_json()
        assert report["results"]["totals"]["success"] == 0
    finally:
        remove(box.name)


def test_the_lean_image_does_the_app_at_first_boot(served):
    box, seconds = first_boot("red-vm-lean", image())
    try:
        TIMINGS["lean_first_boot_to_app_window"] = seconds
        assert box.sh(f"git -C {APP_DIR} rev-parse HEAD").strip() == served["commit"]
        assert "red-app-pip: installed" in box.sh("cat /logs/visomaster-pip.log")
    finally:
        remove(box.name)
        print(f"\nbaked vs lean (s): {json.dumps(TIMINGS, sort_keys=True)}")
