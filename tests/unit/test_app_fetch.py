"""
Red's model fetcher (redbox.app.fetch), in process, against a loopback server (tests/fixtures/
models_repo.py's Assets: per-request behaviours, Range, GitHub-like redirects, a per-connection
rate cap, concurrent bodies counted). Every fetch gets a deadline; the server stops with the test.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from redbox.app import fetch
from tests.fixtures.models_repo import Assets, blob, sha

DEADLINE = 60


@pytest.fixture
def assets() -> Iterator[Assets]:
    with Assets() as server:
        yield server


def serve(assets: Assets, tmp_path: Path, names: list[str], size: int = 200_000,
          github: bool = False) -> list[fetch.Item]:
    items = []
    for name in names:
        path = f"/assets/v1.0.0/{name}.onnx"
        assets.files[path] = blob(name, size)
        url = assets.github(path) if github else f"{assets.base}{path}"
        items.append(fetch.Item(url, str(tmp_path / "models" / f"{name}.onnx"),
                                sha(blob(name, size))))
    return items


def run(items: list[fetch.Item], **kwargs) -> tuple[fetch.Result, list[str]]:
    lines: list[str] = []
    kwargs.setdefault("deadline", DEADLINE)
    result = fetch.fetch(items, say=lines.append, **kwargs)
    return result, lines


def in_place(item: fetch.Item, name: str, size: int = 200_000) -> bool:
    return Path(item.dest).read_bytes() == blob(name, size) and \
        not os.path.exists(item.dest + fetch.PARTIAL)


def test_streams_overlap_up_to_the_bound(assets, tmp_path):
    names = [f"m{n}" for n in range(6)]
    items = serve(assets, tmp_path, names)
    assets.rate = 400_000  # half a second a file
    result, _ = run(items, streams=4)
    assert [o.ok for o in result.outcomes] == [True] * 6
    assert assets.max_active == 4  # overlapping, never more than the streams
    assert all(in_place(item, name) for item, name in zip(items, names, strict=True))
    assert result.received == 6 * 200_000


def test_one_stream_fetches_one_file_at_a_time(assets, tmp_path):
    items = serve(assets, tmp_path, ["a", "b", "c"])
    assets.rate = 1_000_000
    result, _ = run(items, streams=1)
    assert all(o.ok for o in result.outcomes) and assets.max_active == 1


def test_streams_are_bounded_1_to_16():
    assert fetch.Fetcher([], streams=0).streams == 1
    assert fetch.Fetcher([], streams=64).streams == 16


def test_a_dropped_connection_resumes_where_it_was(assets, tmp_path):
    [item] = serve(assets, tmp_path, ["big"])
    assets.plan["/assets/v1.0.0/big.onnx"] = ["drop", "good"]
    result, lines = run([item])
    [outcome] = result.outcomes
    assert outcome.ok and outcome.how == "fetched" and outcome.requests == 2
    assert assets.ranges("/assets/v1.0.0/big.onnx") == [None, "bytes=100000-"]
    assert assets.sent == 200_000  # half, then the other half: nothing sent twice
    assert in_place(item, "big")
    assert any("resuming at 100.0 KB" in line for line in lines)


def test_a_server_ignoring_range_restarts_that_file_only(assets, tmp_path):
    items = serve(assets, tmp_path, ["cut", "fine"])
    assets.plan["/assets/v1.0.0/cut.onnx"] = ["drop", "norange"]
    assets.plan["/assets/v1.0.0/fine.onnx"] = ["good"]
    result, lines = run(items, streams=2)
    cut, fine = result.outcomes
    assert cut.ok and cut.how == "restarted" and fine.ok and fine.how == "fetched"
    assert assets.ranges("/assets/v1.0.0/cut.onnx") == [None, "bytes=100000-"]
    assert [r["status"] for r in assets.requests if r["path"].endswith("cut.onnx")] == [200, 200]
    assert assets.hits["/assets/v1.0.0/fine.onnx"] == 1
    assert in_place(items[0], "cut") and in_place(items[1], "fine")
    assert any("the server ignored the resume at 100.0 KB (HTTP 200): starting the file over"
               in line for line in lines)


def test_githubs_redirects_are_followed_with_the_range_kept(assets, tmp_path):
    [item] = serve(assets, tmp_path, ["inswapper_128"], github=True)
    assert "/github.com/visomaster/visomaster-assets/releases/download/v1.0.0/" in item.url
    cdn = "/objects.githubusercontent.com/github-production-release-asset-2e65be/" \
          "inswapper_128.onnx"
    assets.plan[cdn] = ["drop", "good"]
    result, _ = run([item])
    assert result.outcomes[0].ok and in_place(item, "inswapper_128")
    # Each try starts again at github.com (a CDN URL is signed and expires), Range kept.
    release = item.url.removeprefix(assets.base)
    assert assets.ranges(release) == [None, "bytes=100000-"]
    assert assets.ranges(cdn) == [None, "bytes=100000-"]
    assert [r["status"] for r in assets.requests] == [302, 302, 200, 302, 302, 206]


def test_a_wrong_hash_is_fetched_once_more(assets, tmp_path):
    [item] = serve(assets, tmp_path, ["flaky"])
    assets.plan["/assets/v1.0.0/flaky.onnx"] = ["corrupt", "good"]
    result, lines = run([item])
    assert result.outcomes[0].ok and assets.hits["/assets/v1.0.0/flaky.onnx"] == 2
    assert assets.ranges("/assets/v1.0.0/flaky.onnx") == [None, None]  # all of it again
    assert in_place(item, "flaky")
    assert any("sha256 mismatch (got " in line and "fetching it once more" in line
               for line in lines)


def test_a_wrong_hash_twice_fails_naming_the_file_and_the_url(assets, tmp_path):
    [item] = serve(assets, tmp_path, ["bad"])
    assets.plan["/assets/v1.0.0/bad.onnx"] = ["corrupt"]
    result, lines = run([item])
    [outcome] = result.outcomes
    wrong = sha(bytes(b ^ 0xFF for b in blob("bad", 200_000)))
    assert not outcome.ok and outcome.final and outcome.sha256 == wrong
    assert outcome.error == (f"sha256 mismatch twice: got {wrong}, expected {item.sha256}, "
                             f"from {item.url}")
    assert lines[-1] == f"bad.onnx: {outcome.error}"
    assert assets.hits["/assets/v1.0.0/bad.onnx"] == 2
    assert not os.listdir(tmp_path / "models")  # neither the model nor a partial


def test_http_4xx_is_final_5xx_is_tried_again(assets, tmp_path):
    gone, busy = serve(assets, tmp_path, ["gone", "busy"])
    assets.plan["/assets/v1.0.0/gone.onnx"] = ["404"]
    assets.plan["/assets/v1.0.0/busy.onnx"] = ["503", "good"]
    result, _ = run([gone, busy], streams=2)
    assert result.outcomes[0].final and result.outcomes[0].error == \
        f"HTTP 404 Not Found from {gone.url}"
    assert assets.hits["/assets/v1.0.0/gone.onnx"] == 1
    assert result.outcomes[1].ok and assets.hits["/assets/v1.0.0/busy.onnx"] == 2
    assert in_place(busy, "busy")


def test_a_complete_partial_is_put_in_place_without_a_request(assets, tmp_path):
    # A run killed between the last byte and the rename.
    [item] = serve(assets, tmp_path, ["done"])
    os.makedirs(os.path.dirname(item.dest))
    Path(item.dest + fetch.PARTIAL).write_bytes(blob("done", 200_000))
    result, _ = run([item])
    assert result.outcomes[0].ok and not assets.hits and in_place(item, "done")


def test_a_partial_with_wrong_bytes_is_fetched_again_whole(assets, tmp_path):
    [item] = serve(assets, tmp_path, ["old"])
    os.makedirs(os.path.dirname(item.dest))
    Path(item.dest + fetch.PARTIAL).write_bytes(b"x" * 1000)  # another release's bytes
    result, _ = run([item])
    assert result.outcomes[0].ok and in_place(item, "old")
    assert assets.ranges("/assets/v1.0.0/old.onnx") == ["bytes=1000-", None]


def test_no_room_before_a_file_stops_everything_with_one_line(assets, tmp_path, monkeypatch):
    items = serve(assets, tmp_path, ["a", "b", "c"])
    monkeypatch.setattr(fetch.shutil, "disk_usage", lambda path: SimpleNamespace(free=50_000))
    result, _ = run(items, streams=1)
    first = items[0].dest
    assert result.stopped == (
        f"disk full: {first} needs 200000 more bytes (200.0 KB); 50.0 KB free there "
        f"(the partial download {first}{fetch.PARTIAL} is kept to resume)")
    assert [o.how for o in result.outcomes] == ["stopped"] * 3
    assert sum(assets.hits.values()) == 1  # the others were not even asked for
    assert not os.listdir(tmp_path / "models")  # no model, and no empty partial


def test_enospc_mid_write_stops_keeps_the_partial_and_the_next_run_resumes(assets, tmp_path,
                                                                           monkeypatch):
    [item] = serve(assets, tmp_path, ["big"], size=3 << 20)
    assets.rate = 4 << 20
    write = fetch._write
    written = {"bytes": 0}

    def filling(fd: int, data: bytes, offset: int) -> None:
        if written["bytes"] + len(data) > 1 << 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        written["bytes"] += len(data)
        write(fd, data, offset)

    monkeypatch.setattr(fetch, "_write", filling)
    result, _ = run([item])
    kept = os.path.getsize(item.dest + fetch.PARTIAL)
    assert kept == written["bytes"] and 0 < kept <= 1 << 20
    assert result.stopped.startswith(f"disk full: {item.dest} needs {(3 << 20) - kept} more "
                                     "bytes (")
    assert len(result.stopped.splitlines()) == 1
    assert not os.path.exists(item.dest)
    monkeypatch.setattr(fetch, "_write", write)  # room made
    result, _ = run([item])
    assert result.outcomes[0].ok and in_place(item, "big", 3 << 20)
    assert assets.ranges("/assets/v1.0.0/big.onnx")[-1] == f"bytes={kept}-"


def test_the_deadline_cuts_a_slow_transfer_and_keeps_what_came(assets, tmp_path):
    [item] = serve(assets, tmp_path, ["slow"], size=1_000_000)
    assets.rate = 200_000  # five seconds
    result, _ = run([item], deadline=1.5)
    assert result.deadline_reached and result.outcomes[0].how == "stopped"
    assert result.seconds < 3
    assert 0 < os.path.getsize(item.dest + fetch.PARTIAL) < 1_000_000
    assert not os.path.exists(item.dest)
