"""
red-app-clip on Red's fetcher, the faults of issue "The app at the network floor": a connection
dropped mid-file, a server ignoring Range, a wrong hash, no network (recorded, backed off, the
next run without a request), --retry-now, a run killed mid-download, two runs at once, GitHub's
redirects. The tool runs as a process (as the converge runs it) against a loopback server
(tests/fixtures/models_repo.py's Assets); every run is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from redbox.app import fetch, weights
from redbox.core import progress
from tests import pip_index
from tests.conftest import TOOLS
from tests.fixtures.models_repo import Assets, blob, sha

TOOL = TOOLS / "red-app-clip"
PATH = "/clip/ViT-B-16.pt"
SIZE = 1_000_000
DATA = blob("clip", SIZE)


@pytest.fixture
def assets() -> Iterator[Assets]:
    with Assets() as server:
        server.files[PATH] = DATA
        yield server


def arguments(tmp_path: Path, url: str, *more: str) -> list[str]:
    return [str(TOOL), "--url", url, "--sha256", sha(DATA), "--dir", str(tmp_path / "cache"),
            "--link", str(tmp_path / "home" / ".cache" / "clip"),
            "--state", str(tmp_path / "clip.json"), "--status", str(tmp_path / "status.json"),
            "--attempts", "2", "--backoff", "0.1", "--connect-timeout", "5",
            "--failure-backoff", "600", *more]


def clip(tmp_path: Path, url: str, *more: str) -> tuple[int, dict, str, float]:
    """Run the tool; (exit code, its last JSON line, its output, seconds)."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, *arguments(tmp_path, url, *more)],
                          capture_output=True, text=True, timeout=120, check=False)
    seconds = time.monotonic() - started
    return proc.returncode, json.loads(proc.stdout.splitlines()[-1]), proc.stdout, seconds


def check(tmp_path: Path, url: str) -> tuple[dict, float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, *arguments(tmp_path, url, "--check")],
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(proc.stdout), time.monotonic() - started


def state(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "clip.json").read_text())


def step(tmp_path: Path) -> dict:
    return progress.read(str(tmp_path / "status.json"))["steps"]["clip"]


def cached(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "ViT-B-16.pt"


def partial(tmp_path: Path) -> Path:
    return Path(f"{cached(tmp_path)}{fetch.PARTIAL}")


def wait_for(predicate, timeout: float = 20) -> None:
    ends = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < ends, "timed out"
        time.sleep(0.05)


def test_a_dropped_connection_resumes_where_it_was(assets, tmp_path):
    assets.plan[PATH] = ["drop", "good"]
    rc, report, out, _ = clip(tmp_path, f"{assets.base}{PATH}")
    assert rc == 0 and report["verified"] is True
    assert assets.ranges(PATH) == [None, f"bytes={SIZE // 2}-"]
    assert report["received"] == SIZE  # nothing fetched twice
    assert cached(tmp_path).read_bytes() == DATA and not partial(tmp_path).exists()
    assert "resuming at 500.0 KB" in out
    assert "ViT-B-16.pt: 1000000 of 1000000 bytes (100%)" in out
    assert step(tmp_path)["state"] == "done"
    assert state(tmp_path)["failures"] == 0 and state(tmp_path)["in_backoff"] is False
    # CLIP's loader looks in ~/.cache/clip: the cache, linked.
    link = tmp_path / "home" / ".cache" / "clip"
    assert link.is_symlink() and (link / "ViT-B-16.pt").read_bytes() == DATA


def test_a_server_ignoring_range_restarts_the_file(assets, tmp_path):
    assets.plan[PATH] = ["drop", "norange"]
    rc, report, out, _ = clip(tmp_path, f"{assets.base}{PATH}")
    assert rc == 0 and report["verified"] is True and report["how"] == "restarted"
    assert [r["status"] for r in assets.requests] == [200, 200]
    assert assets.ranges(PATH) == [None, f"bytes={SIZE // 2}-"]
    assert "the server ignored the resume at 500.0 KB (HTTP 200): starting the file over" in out
    assert cached(tmp_path).read_bytes() == DATA and not partial(tmp_path).exists()


def test_a_wrong_hash_is_fetched_once_more_then_recorded_naming_file_and_url(assets, tmp_path):
    assets.plan[PATH] = ["corrupt"]
    url = f"{assets.base}{PATH}"
    rc, report, _, _ = clip(tmp_path, url)
    assert rc == 1 and report["verified"] is False
    assert assets.hits == {PATH: 2}  # once more, and no second round: it would not help
    assert report["error"].startswith("ViT-B-16.pt: sha256 mismatch twice: got ")
    assert f"expected {sha(DATA)}, from {url}" in report["error"]
    recorded = state(tmp_path)
    assert recorded["failures"] == 1 and recorded["cause"] == report["error"]
    assert recorded["in_backoff"] is True and recorded["next_try_after"]
    assert not cached(tmp_path).exists() and not partial(tmp_path).exists()
    assert step(tmp_path)["state"] == "failed"


def test_offline_recorded_then_backed_off_without_the_network_until_retry_now(tmp_path):
    port = pip_index.free_port()  # nothing listens: every connection is refused
    url = f"http://127.0.0.1:{port}{PATH}"
    rc, report, _, seconds = clip(tmp_path, url)
    assert rc == 1 and report["verified"] is False and seconds < 15
    recorded = state(tmp_path)
    assert recorded["failures"] == 1 and recorded["in_backoff"] is True
    assert "Connection refused" in recorded["cause"] and recorded["cause"].count(url) == 1
    assert recorded["cause"].endswith("(after 2 attempts)")
    assert 590 <= recorded["next_try_epoch"] - time.time() <= 601
    # Inside the backoff: a listener there now sees no connection at all.
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(8)
        listener.setblocking(False)
        rc, report, _, seconds = clip(tmp_path, url)
        assert rc == weights.EXIT_HELD_OFF == 3 and seconds < 3, seconds
        assert report["error"] == (
            f"not downloaded: the download failed 1 time(s) ({recorded['cause']}); next try "
            f"after {recorded['next_try_after']}; `red-app-clip --retry-now` tries now")
        found, seconds = check(tmp_path, url)
        assert seconds < 3, seconds
        assert found == {"tool": "red-app-clip", "path": str(cached(tmp_path)), "linked": True,
                         "verified": False, "in_backoff": True, "failures": 1,
                         "cause": recorded["cause"],
                         "next_try_after": recorded["next_try_after"]}
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert state(tmp_path)["failures"] == 1  # carried on, not counted again
    assert step(tmp_path)["state"] == "backoff"
    # The network is back: --retry-now fetches at once, with the recorded arguments.
    with Assets(port=port) as back:
        back.files[PATH] = DATA
        proc = subprocess.run([sys.executable, str(TOOL), "--retry-now", "--state",
                               str(tmp_path / "clip.json")],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert back.hits == {PATH: 1}
    assert cached(tmp_path).read_bytes() == DATA
    recorded = state(tmp_path)
    assert recorded["verified"] is True and recorded["failures"] == 0
    assert recorded["in_backoff"] is False
    assert check(tmp_path, url)[0]["verified"] is True


def test_retry_now_without_a_record_is_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, str(TOOL), "--retry-now", "--state",
                           str(tmp_path / "none.json")],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2 and "no CLIP download recorded in" in proc.stderr


def test_failures_double_the_backoff_and_another_url_is_not_held_off(assets, tmp_path):
    url = f"http://127.0.0.1:{pip_index.free_port()}{PATH}"
    assert clip(tmp_path, url, "--attempts", "1", "--failure-backoff", "1")[0] == 1
    first = state(tmp_path)
    wait_for(lambda: time.time() > first["next_try_epoch"] + 0.1, timeout=5)
    assert clip(tmp_path, url, "--attempts", "1", "--failure-backoff", "1")[0] == 1
    second = state(tmp_path)
    assert second["failures"] == 2
    assert 1 <= second["next_try_epoch"] - time.time() <= 2.1  # 1 s, doubled
    # A mirror (another URL) is another download: not held off by this one's failures.
    rc, report, _, _ = clip(tmp_path, f"{assets.base}{PATH}")
    assert rc == 0 and report["verified"] is True and report["failures"] == 0


def test_a_killed_run_leaves_nothing_that_passes_and_the_next_run_resumes(assets, tmp_path):
    data = blob("clip-big", 2 * SIZE)
    assets.files[PATH] = data
    assets.rate = 500_000  # four seconds
    url = f"{assets.base}{PATH}"
    args = [a if a != sha(DATA) else sha(data) for a in arguments(tmp_path, url)]
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: partial(tmp_path).exists() and partial(tmp_path).stat().st_size
                 >= 300_000)
    finally:
        proc.send_signal(signal.SIGKILL)  # the boot dies mid-download
        proc.wait(timeout=10)
    assert not cached(tmp_path).exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [partial(tmp_path).name]
    kept = partial(tmp_path).stat().st_size
    check_args = [*args, "--check"]
    found = json.loads(subprocess.run([sys.executable, *check_args], capture_output=True,
                                      text=True, timeout=60, check=True).stdout)
    assert found["verified"] is False and found["in_backoff"] is False
    assert step(tmp_path)["state"] == "interrupted"  # its pid is gone
    assets.rate = None
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout
    assert cached(tmp_path).read_bytes() == data and not partial(tmp_path).exists()
    assert assets.ranges(PATH) == [None, f"bytes={kept}-"]


def test_two_runs_on_one_state_file_fetch_once_and_the_second_finds_it_verified(assets,
                                                                                tmp_path):
    assets.rate = 1_000_000  # a second
    url = f"{assets.base}{PATH}"
    first = subprocess.Popen([sys.executable, *arguments(tmp_path, url)],
                             stdout=subprocess.PIPE, text=True)
    wait_for(lambda: assets.hits.get(PATH))
    rc, report, out, _ = clip(tmp_path, url)  # the converge's foreground call
    first_out, _ = first.communicate(timeout=60)
    assert first.returncode == 0 and rc == 0 and report["verified"] is True
    assert assets.hits == {PATH: 1}
    assert "another run is fetching the CLIP weights (same state file): waiting for it" in out
    assert report["downloaded"] is False and report["received"] == 0
    assert json.loads(first_out.splitlines()[-1])["received"] == SIZE


def test_githubs_redirects_are_followed(assets, tmp_path):
    assets.files["/assets/v1/ViT-B-16.pt"] = DATA
    url = assets.github("/assets/v1/ViT-B-16.pt")
    rc, report, _, _ = clip(tmp_path, url)
    assert rc == 0 and report["verified"] is True
    hosts = [re.sub(r"^/([^/]+)/.*", r"\1", r["path"]) for r in assets.requests]
    assert hosts == ["github.com", "release-assets.githubusercontent.com",
                     "objects.githubusercontent.com"]


def test_a_partial_from_the_old_downloader_is_resumed(assets, tmp_path):
    (tmp_path / "cache").mkdir()
    Path(f"{cached(tmp_path)}.part").write_bytes(DATA[:300_000])
    rc, report, _, _ = clip(tmp_path, f"{assets.base}{PATH}")
    assert rc == 0 and report["received"] == SIZE - 300_000
    assert assets.ranges(PATH) == ["bytes=300000-"]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["ViT-B-16.pt"]


def test_a_wrong_file_in_the_cache_is_moved_aside_not_deleted(assets, tmp_path):
    (tmp_path / "cache").mkdir()
    cached(tmp_path).write_bytes(b"someone else's weights")
    rc, _, out, _ = clip(tmp_path, f"{assets.base}{PATH}")
    assert rc == 0 and cached(tmp_path).read_bytes() == DATA
    [aside] = [p for p in (tmp_path / "cache").iterdir() if ".moved-aside-" in p.name]
    assert aside.read_bytes() == b"someone else's weights"
    assert f"has the wrong SHA-256: moved aside to {aside}" in out


def test_a_verified_file_is_not_hashed_again_while_unchanged(assets, tmp_path, monkeypatch,
                                                            capsys):
    assert clip(tmp_path, f"{assets.base}{PATH}")[0] == 0
    hashed = []
    monkeypatch.setattr(weights, "sha256_of", lambda path: hashed.append(path) or sha(DATA))
    args = arguments(tmp_path, f"{assets.base}{PATH}", "--check")[1:]
    assert weights.main(args) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is True and hashed == []
    os.utime(cached(tmp_path), (1, 1))  # changed: hashed again, once
    for _ in range(2):
        assert weights.main(args) == 0
        assert json.loads(capsys.readouterr().out)["verified"] is True
    assert hashed == [str(cached(tmp_path))]
    assert state(tmp_path)["verified"] is True  # the run's record, kept
