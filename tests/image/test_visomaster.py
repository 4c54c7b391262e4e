"""
VisoMaster in the real container, driven through the real deploy
(``pyinfra @local deploy.py -y --json --data ...`` inside the box):

- the checkout's conflict matrix (cases 1-9 of issue 3), git's "dubious ownership" and a
  network failure, each against fixture repositories made inside the box (bare repos over
  file://, one over dumb HTTP on loopback); every pre-existing user file is asserted byte for
  byte at the path the log names;
- the requirements installed for real from PyPI into the app venv (two small packages), again
  only when the requirements change, and a second converge making 0 changes;
- the models: a loopback server in the box answering good, corrupt, 404 and truncated;
- the launcher: the fixture app's window on display :1, in a VNC capture, started by autostart
  and by the desktop entry.

One box (``red-vm-main``), on ports of its own. This machine's extra CA certificates are copied
into the box for pip (an intercepting proxy); they never go into the image.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.boxes import Box, podman, ports, ports_env, remove, start_box, wait_ready
from tests.fixtures.app_downloader import DOWNLOADER
from tests.fixtures.visomaster_app import MAIN_PY, TITLE

pytestmark = pytest.mark.image

PORTS = ports(23020)
GIT_HTTP_PORT = 17991
MODELS_PORT = 17992
# The repository the box boots with: loopback, where nothing listens, so the boot's checkout
# fails the same way on a machine with internet as on one without.
UNREACHABLE_PORT = 17993
BOOT_URL = f"http://127.0.0.1:{UNREACHABLE_PORT}/VisoMaster.git"
VNC_PASSWORD = "Red-vm-1"
FIX = "/srv/red-fixtures"
APP_URL = f"file://{FIX}/app.git"
OTHER_URL = f"file://{FIX}/other.git"
CASES = "/workspace/cases"
CHECKOUT_LOG = "/logs/visomaster-checkout.log"
STARTUP_LOG = "/logs/startup.log"
MODELS_STATE = "/var/lib/red/models-state.json"
CA_BUNDLE = "/tmp/red-test-ca.pem"
# The app's install op (red-app-pip with uv), whatever flavor and venv it names.
INSTALL_OP = "(requirements_cu124.txt) into"
# Where xfdesktop puts the VisoMaster launcher on the default 1920x1080 desktop: third in the
# first column, after File System and Home.
DESKTOP_ICON = (71, 300)
# Steps each conflict case leaves out: they are tested on their own below.
CHECKOUT_ONLY = ("visomaster_install_requirements=false", "visomaster_download_models=false",
                 "visomaster_checkout_backoff=0.2")
TIMINGS: dict[str, float] = {}

MODEL_SERVER = """\
import hashlib, http.server, json, sys

PLAN = sys.argv[2]


def blob(name, size=200_000):
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        with open(PLAN) as fh:
            how = json.load(fh).get(name, "404")
        data = blob(name)
        if how == "404":
            self.send_error(404)
            return
        if how == "corrupt":
            data = bytes(b ^ 0xFF for b in data)
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if how == "truncate":
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        self.wfile.write(data)


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""
MODEL_NAMES = ("good", "corrupt", "missing", "truncated")


def blob(name: str, size: int = 200_000) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def models_data() -> str:
    entries = "\n".join(
        f'    {{"model_name": "{name}", "local_path": f"{{models_dir}}/{name}.onnx",\n'
        f'     "hash": "{hashlib.sha256(blob(name + ".onnx")).hexdigest()}",\n'
        f'     "url": f"{{assets_repo}}/{name}.onnx"}},'
        for name in MODEL_NAMES
    )
    return (f'models_dir = "./model_assets"\n'
            f'assets_repo = "http://127.0.0.1:{MODELS_PORT}/assets"\n\n'
            f"models_list = [\n{entries}\n]\n")


FIXTURE_SCRIPT = f"""\
set -euo pipefail
export GIT_AUTHOR_NAME=Fixture GIT_AUTHOR_EMAIL=f@example.com
export GIT_COMMITTER_NAME=Fixture GIT_COMMITTER_EMAIL=f@example.com
src={FIX}/src
cd "$src/app"
git init -q -b main . && git add -A && git commit -qm v1 && git tag v1
cp -r "$src/app-v2/." . && git add -A && git commit -qm v2 && git tag v2
git clone -q --bare . {FIX}/app.git
git clone -q --bare . {FIX}/http/app.git && git -C {FIX}/http/app.git update-server-info
cd "$src/other"
git init -q -b main . && git add -A && git commit -qm other && git tag v1 && git tag v2
git clone -q --bare . {FIX}/other.git
cat /etc/ssl/certs/ca-certificates.crt {FIX}/extra-ca.crt > {CA_BUNDLE}
"""


def fixture_tree(root: Path) -> Path:
    """The fixture sources: app v1, what v2 changes, an unrelated repo, the model server."""
    files = {
        "src/app/main.py": MAIN_PY,
        "src/app/requirements_cu124.txt": "tomli-w==1.0.0\ntext-unidecode==1.3\n",
        "src/app/README.md": "VisoMaster fixture v1\n",
        "src/app/app/ui/style.qss": "QWidget { color: black; }\n",
        "src/app/app/processors/models_data.py": models_data(),
        "src/app/download_models.py": DOWNLOADER,
        "src/app-v2/README.md": "VisoMaster fixture v2: upstream edited this\n",
        "src/app-v2/requirements_cu124.txt": "tomli-w==1.1.0\ntext-unidecode==1.3\n",
        "src/app-v2/app/new_in_v2.py": "NEW = 2\n",
        "src/other/README.md": "another project\n",
        "model_server.py": MODEL_SERVER,
        "pip_index.py": (Path(__file__).parents[1] / "pip_index.py").read_text(),
        "setup.sh": FIXTURE_SCRIPT,
        "http/.keep": "",
    }
    for rel, text in files.items():
        path = root / "red-fixtures" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    ca = "".join(p.read_text() for p in sorted(Path("/usr/local/share/ca-certificates").glob(
        "*.crt")))
    (root / "red-fixtures" / "extra-ca.crt").write_text(ca)
    archive = root / "fixtures.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root / "red-fixtures", arcname="red-fixtures")
    return archive


# ---------------------------------------------------------------------------------------------
# driving the box


def converge(box: Box, *data: str, check: bool = True, env: dict | None = None) -> dict:
    """The real deploy inside the box, as the entrypoint runs it; pyinfra's JSON report."""
    args = ["cd /opt/red/deploy && /opt/red/tool/bin/pyinfra @local deploy.py -y --json"]
    for item in data:
        args.append(f"--data {shlex.quote(item)}")
    started = time.monotonic()
    more_env = [arg for name, value in (env or {}).items() for arg in ("-e", f"{name}={value}")]
    result = podman("exec", "-e", f"PIP_CERT={CA_BUNDLE}", "-e", f"SSL_CERT_FILE={CA_BUNDLE}",
                    *more_env, box.name, "bash", "-c",
                    " ".join(args), check=False, timeout=600)
    report = json.loads(result.stdout) if result.stdout.strip() else {}
    report["seconds"] = time.monotonic() - started
    report["stderr"] = result.stderr
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return report


def op(report: dict, text: str) -> str:
    """'success', 'error' or 'no_change': what one operation did on the box."""
    matches = [o for o in report["results"]["operations"] if text in o["name"]]
    assert len(matches) == 1, [o["name"] for o in report["results"]["operations"]]
    for outcome in ("success", "error", "no_change"):
        if matches[0][outcome]:
            return outcome
    raise AssertionError(matches[0])


def checkout(box: Box, dest: str, ref: str = "v1", url: str = APP_URL, *more: str) -> dict:
    return converge(box, f"visomaster_repo_url={url}", f"visomaster_ref={ref}",
                    f"visomaster_dir={dest}", *CHECKOUT_ONLY, *more)


def log_size(box: Box, path: str = CHECKOUT_LOG) -> int:
    return int(box.sh(f"stat -c %s {path} 2>/dev/null || echo 0").strip())


def log_since(box: Box, offset: int, path: str = CHECKOUT_LOG) -> str:
    return box.sh(f"tail -c +{offset + 1} {path}")


def seed(box: Box, dest: str, files: dict[str, bytes]) -> dict[str, str]:
    """Write user files (bytes) under dest; their SHA-256 by relative path."""
    for rel, data in files.items():
        path = f"{dest}/{rel}"
        box.sh(f"mkdir -p {shlex.quote(os.path.dirname(path))} && "
               f"echo {base64.b64encode(data).decode()} | base64 -d > {shlex.quote(path)}")
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}


def sha(box: Box, path: str) -> str | None:
    out = box.sh(f"sha256sum {shlex.quote(path)} 2>/dev/null || true").split()
    return out[0] if out else None


def head(box: Box, dest: str) -> str:
    return box.sh(f"git -c safe.directory='*' -C {dest} rev-parse HEAD").strip()


def tag(box: Box, name: str, repo: str = f"{FIX}/app.git") -> str:
    return box.sh(f"git -C {repo} rev-parse {name}^{{commit}}").strip()


def user_bytes(name: str) -> bytes:
    """Distinct binary content per file: a byte-for-byte check notices any change."""
    return name.encode() + b"\x00\xff" + hashlib.sha256(name.encode()).digest() * 8


def moved_aside_to(log: str, dest: str) -> str:
    [aside] = re.findall(rf"moved existing {re.escape(dest)} aside to (\S+): nothing in it", log)
    return aside


def assert_files_at(box: Box, root: str, hashes: dict[str, str]) -> None:
    for rel, digest in hashes.items():
        assert sha(box, f"{root}/{rel}") == digest, f"{root}/{rel} is not the user's file"


def assert_in_state(box: Box, dest: str, ref: str, url: str = APP_URL) -> None:
    result = box.exec("/opt/red/bin/red-app-checkout", "--check", "--url", url, "--ref", ref,
                      "--dest", dest, check=False)
    assert result.returncode == 0, result.stdout


# ---------------------------------------------------------------------------------------------
# the box


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    env = {**ports_env(PORTS), "VNC_PW": VNC_PASSWORD, "VISOMASTER_REPO_URL": BOOT_URL,
           # OpenAI's CDN is not for tests: one test fetches the weights from loopback.
           "VISOMASTER_DOWNLOAD_CLIP": "false"}
    started = start_box("red-vm-main", env, PORTS)
    try:
        TIMINGS["boot_to_ready"] = wait_ready(started, timeout=180)
        # The boot's background provisioning converges once more: let it finish first.
        started.sh("for _ in $(seq 1 600); do [ -x /opt/red/bin/red-onstart ] || break; "
                   "grep -qs '\"finished\"' /var/lib/red/provisioning/onstart.json && break; "
                   "sleep 0.2; done", timeout=150)
        archive = fixture_tree(tmp_path_factory.mktemp("vm"))
        podman("cp", str(archive), f"{started.name}:/tmp/fixtures.tar")
        started.sh(f"mkdir -p /srv && tar -C /srv -xf /tmp/fixtures.tar && bash {FIX}/setup.sh",
                   timeout=120)
        started.exec("mkdir", "-p", CASES)
        yield started
    finally:
        print(f"\nVisoMaster timings (s): {json.dumps(TIMINGS, sort_keys=True)}")
        remove(started.name)


# ---------------------------------------------------------------------------------------------
# boot


def test_boot_with_an_unreachable_repo_still_serves_and_says_why(box):
    log = box.sh(f"cat {STARTUP_LOG}")
    assert re.search(rf"visomaster: checkout of {re.escape(BOOT_URL)} at v0.1.6 into "
                     r"/workspace/VisoMaster FAILED: git clone .* failed after \d+ attempts", log)
    assert "converge done" in log
    assert box.sh("ls -d /workspace/VisoMaster* 2>/dev/null || true").strip() == ""


def test_small_shm_gets_a_warning_line_with_the_fix(box):
    # One line per converge (the boot may converge more than once).
    lines = [line for line in box.sh(f"cat {STARTUP_LOG}").splitlines() if "/dev/shm is" in line]
    assert lines
    for line in lines:
        assert "visomaster: /dev/shm is 512 MB, less than the 1024 MB" in line
        assert "docker run --shm-size=2g" in line


# ---------------------------------------------------------------------------------------------
# the checkout's conflict matrix


def test_case1_missing_directory_is_cloned_at_ref(box):
    dest = f"{CASES}/c1"
    report = checkout(box, dest, "v1")
    assert op(report, "Check out v1") == "success"
    assert head(box, dest) == tag(box, "v1")
    assert box.sh(f"cat {dest}/README.md") == "VisoMaster fixture v1\n"
    assert f"visomaster: {dest} cloned to v1" in box.sh(f"cat {STARTUP_LOG}")


def test_case2_clean_clone_at_ref_changes_nothing(box):
    dest = f"{CASES}/c2"
    checkout(box, dest, "v1")
    before = log_size(box)
    report = checkout(box, dest, "v1")
    assert op(report, "Check out v1") == "no_change"
    assert log_since(box, before) == ""  # the --check fact writes nothing


def test_case3_older_ref_and_moved_upstream_are_brought_to_ref(box):
    dest = f"{CASES}/c3"
    checkout(box, dest, "v1")
    assert op(checkout(box, dest, "v2"), "Check out v2") == "success"
    assert head(box, dest) == tag(box, "v2")
    # A branch ref follows upstream: a new commit on main is fetched and checked out.
    checkout(box, dest, "main")
    box.sh(f"cd {FIX}/src/app && echo moved > moved.txt && git add moved.txt && "
           "GIT_AUTHOR_NAME=F GIT_AUTHOR_EMAIL=f@e GIT_COMMITTER_NAME=F GIT_COMMITTER_EMAIL=f@e "
           f"git commit -qm moved && git push -q {FIX}/app.git main")
    assert op(checkout(box, dest, "main"), "Check out main") == "success"
    assert head(box, dest) == tag(box, "main")
    assert box.sh(f"cat {dest}/moved.txt") == "moved\n"
    assert op(checkout(box, dest, "main"), "Check out main") == "no_change"


def test_case4_edits_and_untracked_files_are_kept(box):
    dest = f"{CASES}/c4"
    checkout(box, dest, "v1")
    files = {
        "README.md": user_bytes("README.md"),  # upstream changes it in v2: a collision
        "app/ui/style.qss": user_bytes("style"),  # upstream leaves it alone
        "my_notes.txt": user_bytes("notes"),  # untracked
        "workspace/result.png": user_bytes("png"),  # untracked, in a new directory
        "app/new_in_v2.py": user_bytes("in the way"),  # untracked, but v2 adds this file
    }
    hashes = seed(box, dest, files)
    before = log_size(box)
    assert op(checkout(box, dest, "v2"), "Check out v2") == "success"
    assert head(box, dest) == tag(box, "v2")
    log = log_since(box, before)
    saved = dict(re.findall(r"saved (\S+) -> (\S+)", log))
    assert set(saved) == set(files)
    for rel, digest in hashes.items():
        assert sha(box, saved[rel]) == digest  # every file, byte for byte, where the log says
    # Kept in the tree where upstream did not change them...
    for rel in ("app/ui/style.qss", "my_notes.txt", "workspace/result.png"):
        assert sha(box, f"{dest}/{rel}") == hashes[rel]
    # ...upstream's version where it did, the user's named in the startup log.
    assert box.sh(f"cat {dest}/README.md").startswith("VisoMaster fixture v2")
    backup = os.path.dirname(saved["my_notes.txt"])
    assert f"copied to {backup} before moving to v2; v2 replaced your version of" in box.sh(
        f"cat {STARTUP_LOG}")


def test_case5_local_commits_are_kept_on_a_backup_branch(box):
    dest = f"{CASES}/c5"
    checkout(box, dest, "v1")
    hashes = seed(box, dest, {"mine.py": user_bytes("mine.py")})
    box.sh(f"cd {dest} && git add mine.py && GIT_AUTHOR_NAME=U GIT_AUTHOR_EMAIL=u@e "
           "GIT_COMMITTER_NAME=U GIT_COMMITTER_EMAIL=u@e git commit -qm 'my work'")
    mine = head(box, dest)
    before = log_size(box)
    assert op(checkout(box, dest, "v2"), "Check out v2") == "success"
    assert head(box, dest) == tag(box, "v2")
    [branch] = re.findall(r"kept on branch (red-backup/\S+)", log_since(box, before))
    assert box.sh(f"git -C {dest} rev-parse {branch}").strip() == mine
    shown = box.sh(f"git -C {dest} show {branch}:mine.py | sha256sum").split()[0]
    assert shown == hashes["mine.py"]
    assert f"kept on branch {branch}" in box.sh(f"cat {STARTUP_LOG}")


def test_case6_empty_directory_is_cloned_into(box):
    dest = f"{CASES}/c6"
    box.exec("mkdir", "-p", dest)
    inode = box.sh(f"stat -c %i {dest}")
    assert op(checkout(box, dest, "v1"), "Check out v1") == "success"
    assert head(box, dest) == tag(box, "v1")
    assert box.sh(f"stat -c %i {dest}") == inode  # the same directory (it may be a mount)


def test_case7_files_without_git_are_moved_aside_then_cloned(box):
    dest = f"{CASES}/c7"
    hashes = seed(box, dest, {"main.py": user_bytes("main"), "data/clip.mp4": user_bytes("mp4")})
    before = log_size(box)
    assert op(checkout(box, dest, "v1"), "Check out v1") == "success"
    aside = moved_aside_to(log_since(box, before), dest)
    assert re.fullmatch(rf"{re.escape(dest)}\.moved-aside-\d{{8}}-\d{{6}}(-\d+)?", aside)
    assert_files_at(box, aside, hashes)
    assert head(box, dest) == tag(box, "v1")
    assert f"moved aside to {aside}" in box.sh(f"cat {STARTUP_LOG}")


def test_case8_broken_git_is_moved_aside_and_recloned(box):
    dest = f"{CASES}/c8"
    # An interrupted clone: .git without a HEAD, and a file the user added meanwhile.
    box.sh(f"mkdir -p {dest}/.git/objects && echo garbage > {dest}/.git/config")
    hashes = seed(box, dest, {"keep.txt": user_bytes("keep")})
    before = log_size(box)
    assert op(checkout(box, dest, "v1"), "Check out v1") == "success"
    aside = moved_aside_to(log_since(box, before), dest)
    assert_files_at(box, aside, hashes)
    assert box.sh(f"cat {aside}/.git/config") == "garbage\n"
    assert head(box, dest) == tag(box, "v1")


def test_case9_a_different_remote_is_moved_aside_not_repointed(box):
    dest = f"{CASES}/c9"
    box.sh(f"git clone -q {OTHER_URL} {dest}")
    hashes = seed(box, dest, {"untracked.txt": user_bytes("other")})
    before = log_size(box)
    assert op(checkout(box, dest, "v1"), "Check out v1") == "success"
    aside = moved_aside_to(log_since(box, before), dest)
    assert_files_at(box, aside, hashes)
    assert box.sh(f"git -C {aside} remote get-url origin").strip() == OTHER_URL
    assert box.sh(f"git -C {dest} remote get-url origin").strip() == APP_URL
    assert head(box, dest) == tag(box, "v1")


def test_dubious_ownership_is_handled_without_trusting_everything(box):
    dest = f"{CASES}/owned"
    checkout(box, dest, "v1")
    box.sh(f"chown -R 65534:65534 {dest}")
    hashes = seed(box, dest, {"notes.txt": user_bytes("owned")})
    assert op(checkout(box, dest, "v2"), "Check out v2") == "success"
    assert head(box, dest) == tag(box, "v2")
    assert_files_at(box, dest, hashes)
    assert op(checkout(box, dest, "v2"), "Check out v2") == "no_change"
    assert box.sh("git config --global --get-all safe.directory || true").strip() == ""


def test_network_failure_is_reported_leaves_nothing_behind_and_the_next_run_converges(box):
    dest = f"{CASES}/net"
    url = f"http://127.0.0.1:{GIT_HTTP_PORT}/app.git"
    started = time.monotonic()
    report = checkout(box, dest, "v1", url)  # nothing listens there yet
    assert op(report, "Check out v1") == "error"
    assert report["results"]["totals"]["error"] == 1
    assert op(report, "Upload /etc/supervisor/conf.d/visomaster.conf") == "success"
    TIMINGS["network_failure_converge"] = time.monotonic() - started
    assert box.sh(f"ls -d {dest}* 2>/dev/null || true").strip() == ""  # no half clone
    assert re.search(rf"visomaster: checkout of {re.escape(url)} at v1 into {dest} FAILED: git "
                     r"clone .* failed after 4 attempts", box.sh(f"cat {STARTUP_LOG}"))
    server = box.exec("bash", "-c", f"cd {FIX}/http && setsid python3 -m http.server "
                      f"{GIT_HTTP_PORT} --bind 127.0.0.1 >/dev/null 2>&1 & echo $!").stdout.strip()
    try:
        deadline = time.monotonic() + 15
        while box.sh(f"curl -sf http://127.0.0.1:{GIT_HTTP_PORT}/app.git/HEAD || true") == "":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert op(checkout(box, dest, "v1", url), "Check out v1") == "success"
        assert head(box, dest) == tag(box, "v1")
    finally:
        box.exec("kill", server, check=False)


# ---------------------------------------------------------------------------------------------
# the app's environment, the launcher


APP = f"{CASES}/app"
APP_DATA = (f"visomaster_repo_url={APP_URL}", f"visomaster_dir={APP}",
            "visomaster_download_models=false", "visomaster_extra_index_urls=[]")


def venv_version(box: Box, package: str) -> str:
    return box.sh(f"/opt/red/venv/bin/python -c 'import importlib.metadata as m; "
                  f"print(m.version(\"{package}\"))' 2>/dev/null || true").strip()


@pytest.fixture(scope="module")
def app(box):
    """The fixture app checked out at v1 with its requirements installed for real."""
    report = converge(box, *APP_DATA, "visomaster_ref=v1")
    TIMINGS["first_converge_with_app"] = report["seconds"]
    assert op(report, "Check out v1") == "success"
    assert op(report, INSTALL_OP) == "success"
    return report


def test_requirements_are_installed_into_the_app_venv(box, app):
    assert venv_version(box, "tomli_w") == "1.0.0"
    assert venv_version(box, "text-unidecode") == "1.3"
    assert "pip install -r /workspace/cases/app/requirements_cu124.txt" in box.sh(
        "cat /logs/visomaster-pip.log")


def test_second_converge_with_the_app_present_changes_nothing(box, app):
    seconds = []
    for _ in range(3):
        report = converge(box, *APP_DATA, "visomaster_ref=v1")
        seconds.append(report["seconds"])
        totals = report["results"]["totals"]
        assert totals["success"] == 0, [o["name"] for o in report["results"]["operations"]
                                        if o["success"]]
        assert totals["error"] == 0
        assert "pip install" not in report["stderr"]
    TIMINGS["noop_converge_with_app_median"] = sorted(seconds)[1]


def test_pip_runs_again_when_the_requirements_change(box, app):
    report = converge(box, *APP_DATA, "visomaster_ref=v2")
    assert op(report, INSTALL_OP) == "success"
    assert venv_version(box, "tomli_w") == "1.1.0"
    # A new ref whose requirements file is the same still records the new ref (no pip run
    # when it is back to v2 afterwards).
    assert op(converge(box, *APP_DATA, "visomaster_ref=v2"),
              INSTALL_OP) == "no_change"


def test_pip_failure_is_reported_and_the_rest_carries_on(box, app):
    box.sh(f"cp -a {APP} {CASES}/badpip && echo 'no-such-package-red-test==0.0.1' >> "
           f"{CASES}/badpip/requirements_cu124.txt")
    report = converge(box, f"visomaster_dir={CASES}/badpip", "visomaster_checkout=false",
                      "visomaster_download_models=false", "visomaster_extra_index_urls=[]")
    assert op(report, INSTALL_OP) == "error"
    assert op(report, "Upload /etc/supervisor/conf.d/visomaster.conf") == "success"
    assert re.search(r"visomaster: installing /workspace/cases/badpip/requirements_cu124.txt "
                     r"into /opt/red/venv FAILED \(exit 1\): .*no solution: Because "
                     r"no-such-package-red-test was not found",
                     box.sh(f"cat {STARTUP_LOG}"))
    # The next converge with the same inputs is inside the failure's backoff: not repeated.
    again = converge(box, f"visomaster_dir={CASES}/badpip", "visomaster_checkout=false",
                     "visomaster_download_models=false", "visomaster_extra_index_urls=[]")
    assert op(again, INSTALL_OP) == "no_change"
    assert "skipped: it failed 1 time(s) with these inputs" in box.sh(f"cat {STARTUP_LOG}")


# ---------------------------------------------------------------------------------------------
# models


def serve_models(box: Box, plan: dict[str, str]) -> None:
    box.sh(f"echo {shlex.quote(json.dumps({f'{n}.onnx': h for n, h in plan.items()}))} "
           f"> {FIX}/models-plan.json")


@pytest.fixture(scope="module")
def model_server(box):
    serve_models(box, dict.fromkeys(MODEL_NAMES, "good"))
    pid = box.exec("bash", "-c", f"setsid python3 {FIX}/model_server.py {MODELS_PORT} "
                   f"{FIX}/models-plan.json >/dev/null 2>&1 & echo $!").stdout.strip()
    yield
    box.exec("kill", pid, check=False)


def models_converge(box: Box, *more: str) -> dict:
    # No backoff between these cases: each serves the models anew and converges at once.
    return converge(box, f"visomaster_repo_url={APP_URL}", "visomaster_ref=v1",
                    f"visomaster_dir={CASES}/models", "visomaster_install_requirements=false",
                    "visomaster_models_attempts=2", "visomaster_models_backoff=0", *more)


def test_models_good_corrupt_404_and_truncated_are_reported(box, model_server):
    serve_models(box, {"good": "good", "corrupt": "corrupt", "missing": "404",
                       "truncated": "truncate"})
    report = models_converge(box)
    assert op(report, "Download and verify") == "error"
    assert op(report, "Upload /etc/supervisor/conf.d/visomaster.conf") == "success"
    state = json.loads(box.sh(f"cat {MODELS_STATE}"))
    assert state["verified"] is False and state["checked"] == 4 and state["ok"] == 1
    assert state["downloads_run"] == 2
    reasons = {item["model"]: item["reason"] for item in state["failed"]}
    # Red's fetcher puts a file in place only when it is whole: a body cut every time (by a
    # server that ignores Range) never reaches the model's path.
    assert reasons == {"corrupt": "sha256 mismatch", "missing": "missing",
                       "truncated": "missing"}
    line = box.sh(f"grep 'models NOT verified' {STARTUP_LOG} | tail -n 1")
    assert f"(state in {MODELS_STATE})" in line
    assert "3 of 4 model files failed verification after 2 download run(s)" in line


def test_models_verify_once_served_right_and_then_change_nothing(box, model_server):
    serve_models(box, dict.fromkeys(MODEL_NAMES, "good"))
    assert op(models_converge(box), "Download and verify") == "success"
    state = json.loads(box.sh(f"cat {MODELS_STATE}"))
    assert state["verified"] is True and state["ok"] == 4
    for name in MODEL_NAMES:
        digest = hashlib.sha256(blob(f"{name}.onnx")).hexdigest()
        assert sha(box, f"{CASES}/models/model_assets/{name}.onnx") == digest
    assert "model files in /workspace/cases/models downloaded and verified" in box.sh(
        f"cat {STARTUP_LOG}")
    report = models_converge(box)
    assert op(report, "Download and verify") == "no_change"
    assert report["results"]["totals"]["success"] == 0


def test_the_clip_weights_are_fetched_verified_and_linked_where_clip_looks(box, model_server):
    box.sh(f"echo '{json.dumps({'ViT-B-16.pt': 'good'})}' > {FIX}/models-plan.json")
    url = f"http://127.0.0.1:{MODELS_PORT}/clip/ViT-B-16.pt"
    data = ("visomaster_download_clip=true", f"visomaster_clip_url={url}",
            f"visomaster_clip_sha256={hashlib.sha256(blob('ViT-B-16.pt')).hexdigest()}",
            "visomaster_download_models=false")
    report = models_converge(box, *data)
    assert op(report, "Download and verify the CLIP weights") == "success"
    cached = "/workspace/red-cache/clip/ViT-B-16.pt"
    assert sha(box, cached) == hashlib.sha256(blob("ViT-B-16.pt")).hexdigest()
    assert box.sh("readlink /root/.cache/clip").strip() == "/workspace/red-cache/clip"
    assert "ViT-B-16.pt: 200000 of 200000 bytes (100%)" in box.sh(
        "cat /logs/visomaster-models.log")
    assert op(models_converge(box, *data), "Download and verify the CLIP weights") == \
        "no_change"
    box.sh(f"echo '{{}}' > {FIX}/models-plan.json")


def test_an_offline_box_fetches_clip_once_then_backs_off_without_an_error(box, model_server):
    # Nothing listens on the URL's port (discard, 9): the box is offline for the weights.
    state = f"{CASES}/offline/clip-state.json"
    data = ("visomaster_download_clip=true",
            "visomaster_clip_url=http://127.0.0.1:9/clip/ViT-B-16.pt",
            f"visomaster_clip_dir={CASES}/offline/clip", "visomaster_download_models=false",
            f"visomaster_models_state={CASES}/offline/models-state.json",
            "visomaster_models_backoff=600")
    first = models_converge(box, *data)
    assert op(first, "Download and verify the CLIP weights") == "error"
    recorded = json.loads(box.sh(f"cat {state}"))
    assert recorded["failures"] == 1 and recorded["next_try_after"], recorded
    again = models_converge(box, *data)
    # Held off: no attempt (the record is the first one's), no error, one line saying when.
    assert op(again, "Download and verify the CLIP weights") == "no_change"
    assert again["results"]["totals"]["error"] == 0
    assert json.loads(box.sh(f"cat {state}")) == recorded
    TIMINGS["offline no-op converge, CLIP held off"] = again["seconds"]


def test_models_on_disk_without_a_state_file_verify_without_a_download(box, model_server):
    # A new container on an old workspace volume: the models are there, their record is not.
    box.exec("rm", MODELS_STATE)
    serve_models(box, dict.fromkeys(MODEL_NAMES, "404"))
    report = models_converge(box)
    assert op(report, "Download and verify") == "no_change"
    state = json.loads(box.sh(f"cat {MODELS_STATE}"))
    assert state["verified"] is True and state["downloads_run"] == 0
    # The hashes lie on the workspace with the files (visomaster_models_cache), trusted while
    # the files are unchanged: a re-created container does not hash them again.
    cache = json.loads(box.sh("cat /workspace/red-cache/models-verified.json"))["cache"]
    assert len(cache) == 4 and "cache" not in state


# ---------------------------------------------------------------------------------------------
# the launcher


def window(box: Box) -> dict[str, int] | None:
    """The fixture app's window on display :1: its absolute geometry, or None."""
    tree = box.exec("xwininfo", "-display", ":1", "-root", "-tree", check=False).stdout
    if f'"{TITLE}"' not in tree:
        return None
    info = box.exec("xwininfo", "-display", ":1", "-name", TITLE, check=False).stdout
    numbers = dict(re.findall(r"^\s*(Absolute upper-left [XY]|Width|Height):\s+(-?\d+)", info,
                              re.MULTILINE))
    return {key: int(value) for key, value in numbers.items()} if len(numbers) == 4 else None


def wait_window(box: Box, present: bool = True, timeout: float = 60) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = window(box)
        if bool(found) == present:
            return found
        time.sleep(0.3)
    raise AssertionError(f"window present={not present} after {timeout} s:\n"
                         + box.sh("supervisorctl status; tail -n 20 /logs/visomaster.log",
                                  check=False))


def capture(tmp_path: Path) -> Image.Image:
    target = tmp_path / "vnc.png"
    vncdo("capture", str(target))
    return Image.open(target).convert("L")


def white_share(image: Image.Image, geometry: dict[str, int]) -> float:
    x, y = geometry["Absolute upper-left X"], geometry["Absolute upper-left Y"]
    region = image.crop((x, y, x + geometry["Width"], y + geometry["Height"]))
    histogram = region.histogram()
    return sum(histogram[240:]) / sum(histogram)


def test_autostart_runs_the_app_on_the_desktop_and_it_shows_over_vnc(box, app, tmp_path):
    box.exec("supervisorctl", "stop", "visomaster", check=False)
    desktop = capture(tmp_path)
    report = converge(box, *APP_DATA, "visomaster_ref=v2", "visomaster_autostart=true")
    assert op(report, "Apply the changed supervisor program visomaster") == "success"
    conf = box.sh("cat /etc/supervisor/conf.d/visomaster.conf")
    assert (f"command=/usr/bin/env RED_APP_DIR={APP} RED_APP_PYTHON=/opt/red/venv/bin/python "
            "DISPLAY=:1 QT_X11_NO_MITSHM=1 XDG_RUNTIME_DIR=/run/user/0 ") in conf
    assert conf.split("command=", 1)[1].split("\n", 1)[0].endswith(" /opt/red/bin/red-visomaster")
    assert "autostart=true" in conf and "autorestart=unexpected" in conf
    assert " PYTHONUNBUFFERED=1 " in conf.split("command=", 1)[1].split("\n", 1)[0]
    geometry = wait_window(box)
    shown = capture(tmp_path)
    # The window's area is white on the VNC framebuffer, and was not before.
    assert white_share(shown, geometry) > 0.6
    assert white_share(desktop, geometry) < 0.3
    log = box.sh("cat /logs/visomaster.log")
    assert "red-visomaster: :1 and its window manager are up" in log
    assert box.sh("stat -c %a /run/user/0").strip() == "700"


def wait_status(box: Box, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while status not in box.sh("supervisorctl status visomaster", check=False):
        assert time.monotonic() < deadline, box.sh("supervisorctl status visomaster; "
                                                   "tail -n 5 /logs/visomaster.log", check=False)
        time.sleep(0.3)


def vncdo(*actions: str) -> None:
    vncdo_bin = Path(sys.executable).with_name("vncdo")
    result = subprocess.run([str(vncdo_bin), "-s", f"127.0.0.1::{PORTS['xvnc']}", "-p",
                             VNC_PASSWORD, *actions], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_double_clicking_the_desktop_icon_over_vnc_starts_it(box, app):
    converge(box, *APP_DATA, "visomaster_ref=v2", "visomaster_autostart=false")
    box.exec("supervisorctl", "stop", "visomaster", check=False)
    wait_window(box, present=False)
    x, y = DESKTOP_ICON
    vncdo("move", str(x), str(y), "click", "1", "pause", "0.05", "click", "1")
    wait_window(box, timeout=30)
    wait_status(box, "RUNNING")
    box.exec("supervisorctl", "stop", "visomaster")


def test_desktop_entries_are_valid_and_starting_twice_is_fine(box, app):
    for entry in ("/usr/share/applications/red-visomaster.desktop",
                  "/root/Desktop/red-visomaster.desktop"):
        validate = box.exec("desktop-file-validate", entry, check=False)
        assert validate.returncode == 0, validate.stdout + validate.stderr
        assert "Exec=/opt/red/bin/red-visomaster-start" in box.sh(f"cat {entry}")
    # xfdesktop runs a desktop launcher only when it is executable.
    assert box.sh("stat -c %a /root/Desktop/red-visomaster.desktop").strip() == "755"
    box.exec("bash", "-c", "DISPLAY=:1 /opt/red/bin/red-visomaster-start")
    wait_status(box, "RUNNING")
    box.exec("bash", "-c", "DISPLAY=:1 /opt/red/bin/red-visomaster-start")  # a second click
    box.exec("supervisorctl", "stop", "visomaster")


def test_a_missing_checkout_is_explained_not_retried_forever(box):
    converge(box, f"visomaster_dir={CASES}/nothing-here", "visomaster_checkout=false",
             "visomaster_install_requirements=false", "visomaster_download_models=false")
    result = box.exec("bash", "-c", "DISPLAY=:1 /opt/red/bin/red-visomaster-start", check=False)
    assert result.returncode == 1
    wait_status(box, "FATAL")  # three quick failures, then supervisor gives up
    assert "no VisoMaster checkout in /workspace/cases/nothing-here" in box.sh(
        "tail -n 5 /logs/visomaster.log")
    # The reason is shown on the desktop, in a window.
    deadline = time.monotonic() + 15
    while '"VisoMaster did not start"' not in box.exec(
            "xwininfo", "-display", ":1", "-root", "-tree", check=False).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.3)


# ---------------------------------------------------------------------------------------------
# hostile networks, progress, a well-behaved app (issue 10)

INDEX_PORT, DEAD_PORT, HOLE_PORT = 17993, 17994, 17995
QUERIES = f"{FIX}/queries.log"
PIP_STATE = "/var/lib/red/visomaster-pip.json"
STATUS = "/var/lib/red/visomaster-status.json"
PIP_LOG = "/logs/visomaster-pip.log"


@pytest.fixture(scope="module")
def indexes(box):
    """In the box: a serving index (its query log), a blackholed one; DEAD_PORT refuses."""
    box.sh(f"python3 {FIX}/pip_index.py wheel {FIX}/wheels red-fixture-a 1.0 && "
           f"python3 {FIX}/pip_index.py wheel {FIX}/wheels red-fixture-b 2.0 && : > {QUERIES}")
    pids = [box.exec("bash", "-c", f"setsid python3 {FIX}/pip_index.py {args} >/dev/null 2>&1 "
                     "& echo $!").stdout.strip()
            for args in (f"serve {INDEX_PORT} {FIX}/wheels {QUERIES}", f"blackhole {HOLE_PORT}")]
    box.sh(f"for _ in $(seq 50); do curl -sf http://127.0.0.1:{INDEX_PORT}/simple/red-fixture-a/"
           " >/dev/null && exit 0; sleep 0.2; done; exit 1")
    yield
    box.exec("kill", *pids, check=False)


def close_window(box: Box, title: str) -> None:
    """Close every window with this title, as a user would (the window manager's close)."""
    box.sh(f"while DISPLAY=:1 wmctrl -F -c {shlex.quote(title)} 2>/dev/null; do sleep 0.2; done")


def app_copy(box: Box, name: str, requirements: str) -> str:
    dest = f"{CASES}/{name}"
    box.sh(f"rm -rf {dest} && cp -a {APP} {dest} && printf %s {shlex.quote(requirements)} "
           f"> {dest}/requirements_cu124.txt")
    return dest


def pip_converge(box: Box, dest: str, *data: str, main_index: int = DEAD_PORT) -> dict:
    """The app's install alone, with uv's default index on loopback (PyPI out of the way)."""
    return converge(box, f"visomaster_dir={dest}", "visomaster_checkout=false",
                    "visomaster_download_models=false", *data,
                    env={"UV_DEFAULT_INDEX": f"http://127.0.0.1:{main_index}/simple"})


def test_the_install_uses_the_files_index_line_and_the_requirement_lines_with_progress(
        box, app, indexes):
    dest = app_copy(box, "idx", f"--extra-index-url http://127.0.0.1:{INDEX_PORT}/simple\n"
                    "red-fixture-a==1.0\n"
                    f"red-fixture-b==2.0 --extra-index-url http://127.0.0.1:{INDEX_PORT}/other\n")
    # uv asks every index (the flavors' strategy): the default one is the serving one too.
    report = pip_converge(box, dest, "visomaster_extra_index_urls=[]", main_index=INDEX_PORT)
    assert op(report, INSTALL_OP) == "success"
    assert venv_version(box, "red-fixture-a") == "1.0"
    assert venv_version(box, "red-fixture-b") == "2.0"
    queries = box.sh(f"cat {QUERIES}").splitlines()
    assert f"{INDEX_PORT} /simple/red-fixture-a/" in queries  # the file's own index line
    # The requirement line's (uv refuses the line), passed on the command line, asked too.
    assert any(line.startswith(f"{INDEX_PORT} /other/") for line in queries), queries
    state = json.loads(box.sh(f"cat {PIP_STATE}"))
    assert state["result"] == "installed"
    # uv's progress in its log, the step in the status JSON and what `status` prints
    log = box.sh(f"cat {PIP_LOG}")
    assert re.search(r"Resolved \d+ packages", log) and "+ red-fixture-b==2.0" in log
    status = json.loads(box.sh(f"cat {STATUS}"))
    assert (status["step"], status["state"], status["percent"]) == ("pip", "done", 100)
    shown = box.sh(f"/opt/red/bin/red-progress {STATUS}")
    assert shown.startswith("visomaster: pip done 100%: ")


def test_a_refused_index_fails_fast_with_its_cause_and_is_backed_off(box, app, indexes):
    # Not installed yet (an installed one is "already satisfied" without asking any index).
    dest = app_copy(box, "refused", "red-absent-a==1.0\n")
    started = time.monotonic()
    report = pip_converge(box, dest, f"visomaster_extra_index_urls=http://127.0.0.1:{DEAD_PORT}/x")
    TIMINGS["pip_refused_index_converge"] = time.monotonic() - started
    assert op(report, INSTALL_OP) == "error"
    state = json.loads(box.sh(f"cat {PIP_STATE}"))
    assert state["result"] == "failed" and state["failures"] == 1
    assert f"index 127.0.0.1:{DEAD_PORT}: connection refused" in state["cause"]
    line = box.sh(f"grep 'installing {dest}/requirements_cu124.txt' {STARTUP_LOG} | tail -n 1")
    assert "connection refused" in line and "--retry-now" in line
    again = pip_converge(box, dest, f"visomaster_extra_index_urls=http://127.0.0.1:{DEAD_PORT}/x")
    assert op(again, INSTALL_OP) == "no_change"
    # The documented command tries at once.
    forced = box.exec("env", f"UV_DEFAULT_INDEX=http://127.0.0.1:{DEAD_PORT}/simple",
                      "/opt/red/bin/red-app-pip", "--retry-now", check=False)
    assert forced.returncode == 1 and "FAILED after" in forced.stdout
    assert json.loads(box.sh(f"cat {PIP_STATE}"))["failures"] == 2


def test_a_blackholed_index_ends_within_the_deadline_and_the_icon_says_installing(
        box, app, indexes):
    from concurrent.futures import ThreadPoolExecutor
    dest = app_copy(box, "hole", "red-absent-b==1.0\nred-absent-c==1.0\n")
    close_window(box, "VisoMaster is being installed")
    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        # uv's own timeout above the deadline: the deadline is what ends it.
        running = pool.submit(pip_converge, box, dest, "visomaster_pip_deadline=60",
                              "visomaster_pip_timeout=100", "visomaster_extra_index_urls=[]",
                              main_index=HOLE_PORT)
        deadline = time.monotonic() + 40
        while '"running"' not in box.sh(f"cat {STATUS} 2>/dev/null || true"):
            assert time.monotonic() < deadline, box.sh(f"cat {STATUS}", check=False)
            time.sleep(0.5)
        box.exec("bash", "-c", "DISPLAY=:1 /opt/red/bin/red-visomaster-start")
        titles = ""
        for _ in range(30):
            titles = box.exec("xwininfo", "-display", ":1", "-root", "-tree", check=False).stdout
            if '"VisoMaster is being installed"' in titles:
                break
            time.sleep(0.3)
        assert '"VisoMaster is being installed"' in titles
        assert "RUNNING" not in box.sh("supervisorctl status visomaster", check=False)
        report = running.result(timeout=300)
    seconds = time.monotonic() - started
    TIMINGS["pip_blackholed_index_converge"] = seconds
    close_window(box, "VisoMaster is being installed")
    assert op(report, INSTALL_OP) == "error"
    assert seconds < 60 + 50, seconds  # the deadline, uv's stop and the rest of the converge
    state = json.loads(box.sh(f"cat {PIP_STATE}"))
    assert "deadline of 60 s reached, uv stopped" in state["cause"]


def test_stop_closes_the_window_so_the_app_saves_its_workspace(box, app):
    converge(box, *APP_DATA, "visomaster_ref=v2", "visomaster_autostart=false")
    box.sh(f"rm -f {APP}/last_workspace.json; : > /var/lib/red/visomaster-crashes")
    box.exec("supervisorctl", "start", "visomaster")
    wait_window(box)
    started = time.monotonic()
    box.exec("supervisorctl", "stop", "visomaster")
    TIMINGS["graceful_stop"] = time.monotonic() - started
    assert json.loads(box.sh(f"cat {APP}/last_workspace.json")) == {"saved_by": "closeEvent"}
    log = box.sh("tail -n 20 /logs/visomaster.log")
    assert "stop requested: closing the app's window" in log
    assert "the app closed its window and exited" in log
    assert "SIGTERM" not in log.split("stop requested")[-1]
    # Its output came through unbuffered, in order.
    assert "fixture app: window closed, workspace saved" in log


def test_a_crash_loop_backs_off_and_ends_fatal(box, app):
    dest = f"{CASES}/crashy"
    box.sh(f"rm -rf {dest} && cp -a {APP} {dest} && printf '%s\\n' 'import time' "
           f"'print(\"crashing soon\")' 'time.sleep(6)' 'raise SystemExit(3)' > {dest}/main.py")
    converge(box, f"visomaster_dir={dest}", "visomaster_checkout=false",
             "visomaster_install_requirements=false", "visomaster_download_models=false",
             "visomaster_autostart=false")
    box.sh(": > /var/lib/red/visomaster-crashes")
    box.exec("supervisorctl", "start", "visomaster")
    wait_status(box, "FATAL", timeout=120)
    log = box.sh("tail -n 40 /logs/visomaster.log")
    assert "crashed 1 time(s) in the last 300 s: waiting 2 s" in log
    assert "crashed 2 time(s) in the last 300 s: waiting 4 s" in log
    assert "FATAL: VisoMaster crashed 3 times within 300 s: not restarting it" in log
    status = json.loads(box.sh(f"cat {STATUS}"))
    assert status["step"] == "app" and status["state"] == "failed"
    assert "FATAL" in status["detail"]
    # The desktop icon is a fresh start: it runs again (and crashes again, later).
    box.exec("bash", "-c", "DISPLAY=:1 /opt/red/bin/red-visomaster-start")
    wait_status(box, "RUNNING", timeout=30)
    box.exec("supervisorctl", "stop", "visomaster")
