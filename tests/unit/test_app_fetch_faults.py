"""
red-app-models with Red's fetcher, the faults of issue "The app at the network floor": a run
killed mid-download, two runs at once, no network, a full disk, GitHub's redirects. The tool
runs as a process (as the converge runs it) against a loopback server; every run is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from redbox.app import fetch, models
from tests.fixtures.models_repo import TOOL, Assets, blob, make_repo, run_tool

MB = 1_000_000


@pytest.fixture
def assets() -> Iterator[Assets]:
    with Assets() as server:
        yield server


def start_tool(repo: Path, state: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(TOOL), "--repo", str(repo), "--state", str(state), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, state: Path) -> tuple[int, dict, str]:
    _, err = proc.communicate(timeout=60)
    return proc.returncode, json.loads(state.read_text()), err


def wait_for(predicate, timeout: float = 20) -> None:
    ends = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < ends, "timed out"
        time.sleep(0.05)


def test_a_killed_run_leaves_nothing_that_passes_and_the_next_run_resumes(assets, tmp_path):
    repo = make_repo(tmp_path, assets, {"big": "x"}, size=2 * MB)
    assets.rate = 500_000  # four seconds
    model = repo / "model_assets" / "big.onnx"
    partial = Path(f"{model}{fetch.PARTIAL}")
    proc = start_tool(repo, tmp_path / "s.json")
    try:
        wait_for(lambda: partial.exists() and partial.stat().st_size >= 300_000)
    finally:
        proc.send_signal(signal.SIGKILL)  # the boot dies mid-download
        proc.wait(timeout=10)
    assert not model.exists()
    kept = partial.stat().st_size
    rc, state, _ = run_tool(repo, tmp_path / "s.json", "--check")
    assert rc == 3 and state["verified"] is False and state["downloads_run"] == 0
    assert [(f["file"], f["reason"]) for f in state["failed"]] == \
        [("model_assets/big.onnx", "missing")]
    assets.rate = None
    rc, state, _ = run_tool(repo, tmp_path / "s.json")
    assert rc == 0 and state["verified"] is True
    assert model.read_bytes() == blob("big", 2 * MB) and not partial.exists()
    assert assets.ranges("/assets/v1.0.0/big.onnx") == [None, f"bytes={kept}-"]


@pytest.mark.parametrize("same_state", [False, True], ids=["own-state-files", "one-state-file"])
def test_two_runs_at_once_fetch_each_file_once(assets, tmp_path, same_state):
    names = ["a", "b", "c", "lp_d"]
    repo = make_repo(tmp_path, assets, dict.fromkeys(names, "x"), size=300_000)
    assets.rate = 300_000  # a second a file
    first_state = tmp_path / "one" / "s.json"
    second_state = first_state if same_state else tmp_path / "two" / "s.json"
    first = start_tool(repo, first_state, "--streams", "2")
    wait_for(lambda: sum(assets.hits.values()) >= 1)
    second = start_tool(repo, second_state, "--streams", "2")
    rc1, _, _ = finish(first, first_state)
    rc2, state2, err2 = finish(second, second_state)
    assert rc1 == rc2 == 0 and state2["verified"] is True
    assert assets.hits == {f"/assets/v1.0.0/{n}.onnx": 1 for n in names}
    for name in names:
        sub = "liveportrait_onnx/" if name.startswith("lp_") else ""
        assert (repo / "model_assets" / f"{sub}{name}.onnx").read_bytes() == blob(name, 300_000)
    assert not list(repo.rglob(f"*{fetch.PARTIAL}"))
    if not same_state:
        # The second run waited for the files the first held, then took them as they were.
        assert "another run is fetching it; waiting" in err2
        assert "fetched and verified by another run" in err2


def test_offline_one_recorded_failure_then_backed_off_without_network(assets, tmp_path):
    repo = make_repo(tmp_path, assets, {"a": "x", "b": "x"})
    assets.close()  # nothing listens there any more: connections are refused
    state = tmp_path / "s.json"
    started = time.monotonic()
    rc, st, err = run_tool(repo, state, "--backoff", "600")
    assert time.monotonic() - started < 15
    assert rc == 3 and st["failures"] == 1 and st["in_backoff"] is True
    assert st["downloads_run"] == 3  # the rounds, then the record
    assert all("Connection refused" in f["download_error"] and f["url"] in f["download_error"]
               for f in st["failed"])
    assert st["cause"].startswith("2 of 2 model files failed verification after 3 download")
    started = time.monotonic()
    rc, st, err = run_tool(repo, state, "--backoff", "600")
    assert time.monotonic() - started < 5
    assert rc == 3 and st["downloads_run"] == 0 and st["failures"] == 1
    assert st["reason"].startswith("not downloaded: the download failed 1 time(s) (")
    assert "fetching" not in err


def test_a_full_disk_stops_with_one_line_and_no_model(assets, tmp_path, monkeypatch, capsys):
    repo = make_repo(tmp_path, assets, {"a": "x", "b": "x"}, size=200_000)
    monkeypatch.setattr(fetch.shutil, "disk_usage", lambda path: SimpleNamespace(free=10_000))
    state = tmp_path / "s.json"
    rc = models.main(["--repo", str(repo), "--state", str(state), "--streams", "1",
                      "--backoff", "600"])
    err = capsys.readouterr().err
    model = repo / "model_assets" / "a.onnx"
    line = (f"disk full: {model} needs 200000 more bytes (200.0 KB); 10.0 KB free there "
            f"(the partial download {model}{fetch.PARTIAL} is kept to resume)")
    assert rc == 3 and err.strip().splitlines()[-1] == f"red-app-models: NOT VERIFIED: {line}"
    st = json.loads(state.read_text())
    assert st["reason"] == line and st["downloads_run"] == 1  # no second round into a full disk
    assert st["failures"] == 1 and st["in_backoff"] is True
    assert not list((repo / "model_assets").iterdir())
    assert sum(assets.hits.values()) == 1


def test_githubs_release_urls_through_the_tool(assets, tmp_path):
    repo = make_repo(tmp_path, assets, {"inswapper_128": "x", "lp_motion": "x"}, github=True)
    rc, st, _ = run_tool(repo, tmp_path / "s.json")
    assert rc == 0 and st["verified"] is True
    hosts = {re.sub(r"^/([^/]+)/.*", r"\1", r["path"]) for r in assets.requests}
    assert hosts == {"github.com", "release-assets.githubusercontent.com",
                     "objects.githubusercontent.com"}


def test_the_streams_setting_is_bounded(tmp_path):
    proc = subprocess.run([sys.executable, str(TOOL), "--repo", str(tmp_path), "--streams", "17"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2 and "--streams must be 1..16" in proc.stderr


def test_models_already_verified_are_not_fetched_again(assets, tmp_path):
    repo = make_repo(tmp_path, assets, {"a": "x", "b": "x"})
    state = tmp_path / "s.json"
    assert run_tool(repo, state)[0] == 0
    (repo / "model_assets" / "b.onnx").unlink()
    rc, st, _ = run_tool(repo, state)
    assert rc == 0 and st["download_runs"][0]["files"] == 1
    assert assets.hits == {"/assets/v1.0.0/a.onnx": 1, "/assets/v1.0.0/b.onnx": 2}
    # What the round fetched was hashed on the way: its cache entry is the new file's.
    cache = st["cache"][str(repo / "model_assets" / "b.onnx")]
    assert cache["size"] == os.path.getsize(repo / "model_assets" / "b.onnx")
