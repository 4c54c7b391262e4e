"""
red-app-clip (redbox.app.weights): the CLIP weights fetched, verified, resumed, bounded, against a
loopback server; ~/.cache/clip linked to the cache without losing what was there.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from redbox.settings import registry
from tests import pip_index
from tests.conftest import TOOLS

TOOL = TOOLS / "red-app-clip"
WEIGHTS = hashlib.sha256(b"clip").digest() * 40_000  # 1.28 MB
SHA = hashlib.sha256(WEIGHTS).hexdigest()


def test_the_registry_has_openais_url_and_the_hash_it_embeds():
    assert registry.CLIP_URL == ("https://openaipublic.azureedge.net/clip/models/5806e77cd80f8b5"
                                 "9890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt")
    assert registry.CLIP_URL.split("/")[-2] == registry.DEFAULTS["visomaster_clip_sha256"]


@pytest.fixture(scope="module")
def server():
    """/good, /corrupt, /cut (the first answer stops halfway; a Range request resumes)."""
    seen: list[tuple[str, str | None]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_args):
            pass

        def do_GET(self):
            name = self.path.rsplit("/", 2)[-2]
            seen.append((name, self.headers.get("Range")))
            data = bytes(b ^ 1 for b in WEIGHTS) if name == "corrupt" else WEIGHTS
            start = int(self.headers["Range"][6:-1]) if self.headers.get("Range") else 0
            if name == "missing":
                self.send_error(404)
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if name == "cut" and not start:
                self.wfile.write(data[: len(data) // 2])
                self.close_connection = True
                return
            self.wfile.write(data[start:])

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()


def run(tmp_path: Path, url: str, *more: str, sha: str = SHA) -> tuple[dict, str]:
    result = subprocess.run(
        [sys.executable, str(TOOL), "--url", url, "--sha256", sha, "--dir",
         str(tmp_path / "cache"), "--link", str(tmp_path / "home" / ".cache" / "clip"),
         "--status", str(tmp_path / "status.json"), "--state", str(tmp_path / "clip.json"),
         "--backoff", "0.1", *more],
        capture_output=True, text=True, timeout=120, check=False)
    return json.loads(result.stdout.splitlines()[-1]), result.stdout


@pytest.mark.parametrize(("name", "ok", "error"), [
    ("good", True, None),
    ("cut", True, None),  # resumed with a Range request
    # Red's fetcher: a wrong SHA-256 is fetched once more, then fails naming file and URL; a
    # 4xx fails at once. Neither is tried by a second round.
    ("corrupt", False, "ViT-B-16.pt: sha256 mismatch twice: got "),
    ("missing", False, "ViT-B-16.pt: HTTP 404 Not Found from "),
])
def test_fetch_verify_resume(server, tmp_path, name, ok, error):
    base, seen = server
    report, out = run(tmp_path, f"{base}/{name}/ViT-B-16.pt", "--attempts", "2")
    assert report["verified"] is ok
    cached = tmp_path / "cache" / "ViT-B-16.pt"
    assert cached.exists() is ok
    assert not (tmp_path / "cache" / "ViT-B-16.pt.red-partial").exists()
    if error:
        assert report["error"].startswith(error), report["error"]
        assert report["error"].endswith(f"/{name}/ViT-B-16.pt (after 1 attempts)")
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["step"] == "clip" and status["state"] == ("done" if ok else "failed")
    if name == "cut":
        assert ("cut", "bytes=640000-") in seen
        assert "resuming at 640.0 KB" in out
    if ok:
        assert "ViT-B-16.pt: 1280000 of 1280000 bytes (100%)" in out
        link = tmp_path / "home" / ".cache" / "clip"
        assert link.is_symlink() and (link / "ViT-B-16.pt").read_bytes() == WEIGHTS


def test_a_blackholed_server_ends_within_the_deadline(tmp_path):
    port = pip_index.free_port()
    hole = pip_index.blackhole(port)
    started = time.monotonic()
    report, _ = run(tmp_path, f"http://127.0.0.1:{port}/w/ViT-B-16.pt", "--attempts", "5",
                    "--deadline", "4", "--connect-timeout", "1.5")
    seconds = time.monotonic() - started
    hole.close()
    assert report["verified"] is False and seconds < 8, seconds
    assert "deadline of 4 s reached" in report["error"] or "after 5 attempts" in report["error"]


def test_an_old_cache_dir_in_home_is_kept_and_its_verified_file_used(server, tmp_path):
    base, seen = server
    old = tmp_path / "home" / ".cache" / "clip"
    old.mkdir(parents=True)
    (old / "ViT-B-16.pt").write_bytes(WEIGHTS)
    (old / "notes.txt").write_text("mine")
    before = len(seen)
    report, out = run(tmp_path, f"{base}/good/ViT-B-16.pt")
    assert report["verified"] is True and len(seen) == before  # no download
    [aside] = [p for p in old.parent.iterdir() if p.name.startswith("clip.moved-aside-")]
    assert (aside / "notes.txt").read_text() == "mine"
    assert old.is_symlink() and (tmp_path / "cache" / "ViT-B-16.pt").read_bytes() == WEIGHTS
    assert f"moved aside to {aside}" in out
    check = subprocess.run([sys.executable, str(TOOL), "--url", f"{base}/good/ViT-B-16.pt",
                            "--sha256", SHA, "--dir", str(tmp_path / "cache"), "--link",
                            str(old), "--state", str(tmp_path / "clip.json"), "--check"],
                           capture_output=True, text=True, check=True)
    assert json.loads(check.stdout) == {"tool": "red-app-clip", "linked": True, "verified": True,
                                        "in_backoff": False,
                                        "path": str(tmp_path / "cache" / "ViT-B-16.pt")}
    os.unlink(old)
