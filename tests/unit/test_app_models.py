"""Tests for red-app-models (redbox.app.models; loopback HTTP only, no root).

A fixture app repository gets a models_data.py shaped like upstream VisoMaster's (f-strings over
module constants, a TensorRT list inside try, several lists) and a download_models.py that,
like upstream's, skips files whose SHA-256 is right, downloads the rest into place and exits 0
even when a download failed. A loopback http.server thread serves the model files and can be
told to answer a path with good bytes, corrupt bytes, a 404 or a truncated body, per request.
The tool fetches with Red's own fetcher by default (redbox.app.fetch: tests/unit/
test_app_fetch*.py); `--downloader app` runs the app's downloader, as before.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.models_repo import TOOL, Assets, blob, make_repo, run_tool, sha


@pytest.fixture
def assets() -> Iterator[Assets]:
    a = Assets()
    yield a
    a.close()


def assert_not_verified(rc: int, st: dict, err: str) -> None:
    assert rc == 3
    assert st["verified"] is False
    last = err.strip().splitlines()[-1]
    assert last.startswith("red-app-models: NOT VERIFIED: ") and st["reason"] in last


def test_tool_is_the_box_librarys_console_script() -> None:
    assert TOOL.stat().st_mode & 0o111
    assert "from redbox.app.models import main" in TOOL.read_text()


def test_good_file_is_downloaded_verified_and_not_refetched(assets: Assets,
                                                            tmp_path: Path) -> None:
    repo = make_repo(tmp_path, assets, {"good": "good", "lp_motion": "good"})
    state = tmp_path / "var" / "lib" / "red" / "models-state.json"
    rc, st, _ = run_tool(repo, state)
    assert rc == 0, st
    assert st["verified"] is True and st["checked"] == 2 and st["failed"] == []
    assert st["downloads_run"] == 1 and st["download_runs"][0]["fetched"] == 2
    assert st["downloader"] == "red" and st["download_cmd"] is None
    assert (repo / "model_assets" / "liveportrait_onnx" / "lp_motion.onnx").read_bytes() == \
        blob("lp_motion")
    assert st["time"].endswith("Z")
    hits = dict(assets.hits)
    rc, st, _ = run_tool(repo, state)  # already verified: the downloader is not run
    assert rc == 0 and st["downloads_run"] == 0 and assets.hits == hits
    rc, st, _ = run_tool(repo, state, "--rehash")
    assert rc == 0 and st["downloads_run"] == 0 and st["checked"] == 2


def test_the_hash_cache_on_the_workspace_outlives_the_state(assets: Assets,
                                                            tmp_path: Path) -> None:
    """
    A container re-created on the same volume: its state file is gone, the --cache beside the
    files is not, and the files are trusted without hashing them again while their size,
    times and inode hold (shown with a file changed behind the cache's back: trusted with
    the cache, hashed and refused without it).
    """
    import os

    from redbox.app.models import stat_key

    repo = make_repo(tmp_path, assets, {"good": "good"})
    cache = tmp_path / "workspace" / "red-cache" / "models-verified.json"
    rc, st, _ = run_tool(repo, tmp_path / "first" / "state.json", "--cache", str(cache))
    assert rc == 0 and st["verified"] and "cache" not in st
    saved = json.loads(cache.read_text())["cache"]
    (path,) = saved
    hits = dict(assets.hits)
    rc, st, _ = run_tool(repo, tmp_path / "recreated" / "state.json", "--cache", str(cache),
                         "--attempts", "0")
    assert rc == 0 and st["verified"] and assets.hits == hits
    Path(path).write_bytes(b"not the model")
    cache.write_text(json.dumps({"cache": {path: {**saved[path], **stat_key(os.stat(path))}}}))
    rc, st, _ = run_tool(repo, tmp_path / "third" / "state.json", "--cache", str(cache),
                         "--attempts", "0")
    assert rc == 0 and st["verified"]
    rc, st, _ = run_tool(repo, tmp_path / "fourth" / "state.json", "--attempts", "0")
    assert rc == 3 and st["failed"][0]["reason"] == "sha256 mismatch"


def test_corrupt_download_is_retried_until_verified(assets: Assets, tmp_path: Path) -> None:
    repo = make_repo(tmp_path, assets, {"flaky": "x", "good": "x"})
    assets.plan["/assets/v1.0.0/flaky.onnx"] = ["corrupt", "good"]
    rc, st, _ = run_tool(repo, tmp_path / "state.json")
    assert rc == 0, st
    # Red's fetcher fetches a wrong download once more in the same round (the app's
    # downloader needed a second run: test_the_apps_downloader_still_retries_by_runs).
    assert st["verified"] and st["downloads_run"] == 1
    assert assets.hits["/assets/v1.0.0/flaky.onnx"] == 2
    assert assets.hits["/assets/v1.0.0/good.onnx"] == 1  # skipped once it verified


def test_always_corrupt_is_reported(assets: Assets, tmp_path: Path) -> None:
    repo = make_repo(tmp_path, assets, {"bad": "x"})
    assets.plan["/assets/v1.0.0/bad.onnx"] = ["corrupt"]
    rc, st, err = run_tool(repo, tmp_path / "state.json", "--attempts", "2")
    assert_not_verified(rc, st, err)
    [f] = st["failed"]
    assert f["file"] == "model_assets/bad.onnx" and f["reason"] == "sha256 mismatch"
    assert f["expected"] == sha(blob("bad")) and f["actual"] != f["expected"]
    # Fetched twice (once more after the wrong hash), then a failure for this run: no round 2.
    assert st["downloads_run"] == 1 and assets.hits["/assets/v1.0.0/bad.onnx"] == 2
    url = f"{assets.base}/assets/v1.0.0/bad.onnx"
    assert f["url"] == url and url in f["download_error"]
    assert f"model_assets/bad.onnx (sha256 mismatch: sha256 mismatch twice: got {f['actual']}" \
        in st["reason"]
    assert not (tmp_path / "VisoMaster" / "model_assets" / "bad.onnx").exists()


def test_404_is_reported_missing(assets: Assets, tmp_path: Path) -> None:
    repo = make_repo(tmp_path, assets, {"good": "x", "gone": "x"})
    assets.plan["/assets/v1.0.0/gone.onnx"] = ["404"]
    rc, st, err = run_tool(repo, tmp_path / "state.json")
    assert_not_verified(rc, st, err)
    assert st["checked"] == 2 and st["ok"] == 1
    url = f"{assets.base}/assets/v1.0.0/gone.onnx"
    assert st["failed"] == [{"file": "model_assets/gone.onnx", "reason": "missing",
                             "path": str(repo / "model_assets" / "gone.onnx"), "model": "gone",
                             "expected": sha(blob("gone")), "actual": None, "size": None,
                             "url": url, "download_error": f"HTTP 404 Not Found from {url}"}]
    # A 404 is not asked again in the same run (the app's downloader asked 3 times).
    assert st["downloads_run"] == 1 and assets.hits["/assets/v1.0.0/gone.onnx"] == 1
    assert f"model_assets/gone.onnx (missing: HTTP 404 Not Found from {url})" in \
        err.strip().splitlines()[-1]


def test_interrupted_transfer_is_retried_until_verified(assets: Assets, tmp_path: Path) -> None:
    repo = make_repo(tmp_path, assets, {"big": "x"})
    assets.plan["/assets/v1.0.0/big.onnx"] = ["truncate", "truncate", "good"]
    rc, st, _ = run_tool(repo, tmp_path / "state.json")
    # Each cut is resumed at once, in the same round (the app's downloader needed 3 runs).
    assert rc == 0 and st["verified"] and st["downloads_run"] == 1
    assert (repo / "model_assets" / "big.onnx").read_bytes() == blob("big")
    assert assets.ranges("/assets/v1.0.0/big.onnx") == [None, "bytes=2500-", "bytes=3750-"]


def test_interrupted_transfer_every_time_is_reported(assets: Assets, tmp_path: Path) -> None:
    repo = make_repo(tmp_path, assets, {"big": "x"})
    assets.plan["/assets/v1.0.0/big.onnx"] = ["truncate"]
    rc, st, err = run_tool(repo, tmp_path / "state.json", "--attempts", "2")
    assert_not_verified(rc, st, err)
    [f] = st["failed"]
    assert f["reason"] in ("sha256 mismatch", "missing")
    assert f["file"] == "model_assets/big.onnx"
    assert st["downloads_run"] == 2


def test_mixed_cases_in_one_run(assets: Assets, tmp_path: Path) -> None:
    repo = make_repo(tmp_path, assets, {"good": "x", "corrupt1": "x", "trunc1": "x",
                                        "lp_gone": "x"})
    assets.plan["/assets/v1.0.0/corrupt1.onnx"] = ["corrupt", "good"]
    assets.plan["/assets/v1.0.0/trunc1.onnx"] = ["truncate", "good"]
    assets.plan["/assets/v1.0.0/lp_gone.onnx"] = ["404"]
    state = tmp_path / "state.json"
    rc, st, err = run_tool(repo, state)
    assert_not_verified(rc, st, err)
    assert [f["file"] for f in st["failed"]] == ["model_assets/liveportrait_onnx/lp_gone.onnx"]
    assert st["checked"] == 4 and st["ok"] == 3
    # the server gets fixed: the next run converges and re-downloads only what is missing
    assets.plan["/assets/v1.0.0/lp_gone.onnx"] = ["good"]
    before = dict(assets.hits)
    rc, st, _ = run_tool(repo, state)
    assert rc == 0 and st["verified"] and st["downloads_run"] == 1
    changed = {p for p in assets.hits if assets.hits[p] != before.get(p)}
    assert changed == {"/assets/v1.0.0/lp_gone.onnx"}


def test_file_corrupted_after_verification_is_noticed(assets: Assets, tmp_path: Path) -> None:
    repo = make_repo(tmp_path, assets, {"good": "x"})
    state = tmp_path / "state.json"
    assert run_tool(repo, state)[0] == 0
    target = repo / "model_assets" / "good.onnx"
    target.write_bytes(b"garbage")  # size and mtime change: the cache is not trusted
    rc, st, _ = run_tool(repo, state, "--attempts", "0")
    assert rc == 3 and st["failed"][0]["reason"] == "sha256 mismatch"
    rc, st, _ = run_tool(repo, state)
    assert rc == 0 and target.read_bytes() == blob("good")


def test_model_list_is_read_without_importing(assets: Assets, tmp_path: Path) -> None:
    """Fusion-style paths, no-url and unevaluable entries; importing would fail (numpy)."""
    repo = tmp_path / "Fusion"
    (repo / "app" / "processors").mkdir(parents=True)
    good = blob("fusion")
    src = textwrap.dedent(f'''\
        import os
        from pathlib import Path
        import numpy as np
        import torch

        models_dir = Path(__file__).resolve().parent.parent.parent / "model_assets"
        os.makedirs(models_dir, exist_ok=True)
        ARCFACE_DST = np.array([[1.0, 2.0]], dtype=np.float32)
        other_dir = os.path.join(str(models_dir), "other")
        models_list = [
            {{
                "model_name": "Fusion",
                "local_path": f"{{models_dir}}/fusion.onnx",
                "url": "http://127.0.0.1:1/never-needed",
                "hash": "{sha(good).upper()}",
            }},
            {{"model_name": "NoUrl", "local_path": f"{{models_dir}}/nourl.onnx",
              "hash": "{"1" * 64}"}},
            {{"model_name": "Dynamic", "local_path": torch.path(), "hash": "{"2" * 64}",
              "url": "x"}},
            {{"model_name": "Other", "local_path": other_dir + "/o.bin",
              "hash": "{sha(b"o")}", "url": "x"}},
        ]
        ''')
    (repo / "app" / "processors" / "models_data.py").write_text(src)
    (repo / "model_assets" / "other").mkdir(parents=True)
    (repo / "model_assets" / "fusion.onnx").write_bytes(good)
    (repo / "model_assets" / "other" / "o.bin").write_bytes(b"o")
    rc, st, err = run_tool(repo, tmp_path / "state.json", "--download-cmd", "false")
    assert rc == 0, err
    assert st["checked"] == 2 and st["downloads_run"] == 0
    reasons = {s["model"]: s["reason"] for s in st["skipped"]}
    assert reasons["NoUrl"].startswith("no url")
    assert reasons["Dynamic"].startswith("cannot evaluate")


@pytest.mark.parametrize("content", ["models_list = [\n", "x = 1\n"])
def test_unreadable_or_empty_model_list_is_not_verified(tmp_path: Path, content: str) -> None:
    repo = tmp_path / "VisoMaster"
    (repo / "app" / "processors").mkdir(parents=True)
    (repo / "app" / "processors" / "models_data.py").write_text(content)
    rc, st, err = run_tool(repo, tmp_path / "state.json", "--download-cmd", "false")
    assert_not_verified(rc, st, err)
    assert st["error"] and st["downloads_run"] == 0


def test_download_command_is_an_argv_not_a_shell(assets: Assets, tmp_path: Path) -> None:
    repo = make_repo(tmp_path, assets, {"good": "x"})
    marker = tmp_path / "pwned"
    cmd = f"{sys.executable} download_models.py '$(touch {marker})' ; touch {marker}"
    rc, st, _ = run_tool(repo, tmp_path / "state.json", "--download-cmd", cmd)
    assert rc == 0 and st["verified"]
    assert not marker.exists()
    assert st["download_cmd"][-3:] == [";", "touch", str(marker)]


def test_missing_downloader_and_timeout_are_reported(assets: Assets, tmp_path: Path) -> None:
    repo = make_repo(tmp_path, assets, {"good": "x"})
    rc, st, err = run_tool(repo, tmp_path / "a.json", "--download-cmd", "/nonexistent/dl")
    assert_not_verified(rc, st, err)
    assert "cannot run the downloader" in st["reason"] and st["downloads_run"] == 1
    slow = f"{sys.executable} -c 'import time; time.sleep(60)'"
    rc, st, err = run_tool(repo, tmp_path / "b.json", "--download-cmd", slow, "--timeout",
                           "0.5", "--attempts", "1", timeout=30)
    assert_not_verified(rc, st, err)
    assert "killed after" in st["download_runs"][0]["output_tail"][-1]
    assert st["failed"][0]["reason"] == "missing"


def test_state_file_unwritable_still_reports(assets: Assets, tmp_path: Path) -> None:
    repo = make_repo(tmp_path, assets, {"good": "x"})
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    proc = subprocess.run([sys.executable, str(TOOL), "--repo", str(repo), "--state",
                           str(blocker / "state.json"), "--python", sys.executable],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["verified"] is True
    assert "cannot write state file" in proc.stderr


@pytest.mark.parametrize(("plan", "runs", "hits", "reason"), [
    (["corrupt", "good"], 2, 2, None),
    (["truncate", "truncate", "good"], 3, 3, None),
    (["404"], 3, 3, "missing"),
    (["corrupt"], 3, 3, "sha256 mismatch"),
])
def test_the_apps_downloader_still_retries_by_runs(assets: Assets, tmp_path: Path,
                                                   plan: list[str], runs: int, hits: int,
                                                   reason: str | None) -> None:
    """--downloader app: what the tool did before Red's fetcher (the assertions it had)."""
    repo = make_repo(tmp_path, assets, {"big": "x"})
    assets.plan["/assets/v1.0.0/big.onnx"] = plan
    rc, st, _ = run_tool(repo, tmp_path / "state.json", "--downloader", "app")
    assert st["downloader"] == "app" and st["download_cmd"] == [sys.executable,
                                                                "download_models.py"]
    assert st["downloads_run"] == runs and assets.hits["/assets/v1.0.0/big.onnx"] == hits
    assert [r["exit_code"] for r in st["download_runs"]] == [0] * runs
    assert set(assets.ranges("/assets/v1.0.0/big.onnx")) == {None}
    if reason is None:
        assert rc == 0 and (repo / "model_assets" / "big.onnx").read_bytes() == blob("big")
    else:
        assert rc == 3 and [f["reason"] for f in st["failed"]] == [reason]
