"""
make bench-app's parts, without a namespace (bench/app): the last line, the figures read from
uv and the servers, Red's steps read from the deploy's plan, the stand-ins, and the servers
(rate cap, first-byte delay, GitHub's redirects, ranges, git's smart HTTP) on loopback.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from redbox.app.models import read_models
from tests import flavor_indexes as fi
from tests.conftest import ROOT


def _package(name: str, directory: Path):
    """bench/app as a package of its own name: tests/unit/test_bench.py imports bench/bench.py
    as the module ``bench``, so ``bench.app`` cannot be imported in the same session."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, directory / "__init__.py", submodule_search_locations=[str(directory)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_package("bench_app", ROOT / "bench" / "app")
from bench_app import converge, data, netns, report, servers, standins  # noqa: E402

STAND_IN_URLS = standins.Urls.at("10.9.9.1", {"git": 1, fi.PYPI: 2, fi.PYTORCH_CU124: 3,
                                              fi.NVIDIA: 4, "github": 5, "cdn": 6, "clip": 7})


def test_the_last_line_has_issue_23s_words_and_two_decimals():
    line = report.last_line(red=150.04, plain=400.0, floor=129.5, recreated=12.345)
    assert line == ("app ready: Red 150.0 s, plain 400.0 s, floor 129.5 s, Red/floor 1.16, "
                    "Red/plain 0.38, recreated/first 0.08")
    assert report.goals(150.0, 400.0, 129.5, 30.0) == [
        "Red/floor 1.16 (goal <= 1.3): met", "Red/plain 0.38 (goal <= 0.45): met",
        "recreated/first 0.20 (goal <= 0.15): NOT met"]


def test_uvs_summary_lines_become_phases_in_seconds():
    log = ("Using CPython 3.10.13\nResolved 72 packages in 1.58s\n"
           "Prepared 72 packages in 1m 02s\nInstalled 72 packages in 834ms\n + torch==2.4.1\n")
    assert report.uv_phases(log) == {"resolved": (72, 1.58), "prepared": (72, 62.0),
                                     "installed": (72, 0.834)}
    assert report.uv_seconds("2m") == 120 and report.uv_seconds("soon") is None


def test_a_file_sent_twice_is_named_and_a_resume_is_not():
    stats = {"cdn": {"files": {"/a.onnx": [2, 200, 100], "/b.onnx": [2, 100, 100]}},
             "git": {"files": {"/git-upload-pack": [2, 50, 25]}}}
    assert report.duplicates(stats) == ["cdn/a.onnx: 2 answers, 200 bytes of 100"]


def test_the_links_idle_spans_are_found():
    rate, sample = 1000.0, 0.5  # 500 bytes a sample is a full link
    samples = [500, 500, 0, 0, 0, 100, 500, 0, 0, 0]
    assert report.low_spans(samples, sample, rate) == [(1.0, 3.0), (3.5, 5.0)]
    use = report.link_use(samples, sample, rate, 5.0)
    assert use["average"] == pytest.approx(1600 / 5000)
    assert use["busy"] == pytest.approx(0.3)
    steps = report.label_steps([{"name": "pip", "start": 0.0, "end": 2.0},
                                {"name": "models", "background": True, "start": 0, "end": 5}])
    assert report.running_at(steps, 3.0, 4.0) == ["models (background)"]


def test_tbf_gets_a_rate_a_burst_and_a_queue():
    assert netns.tbf_arguments(1.25e6) == ["rate", "10000000bit", "burst", "5000",
                                           "limit", "262144"]


def test_reds_steps_come_from_the_deploys_plan_in_its_order():
    commands = converge.plan_commands([
        f"visomaster_repo_url={STAND_IN_URLS.git}",
        f"visomaster_extra_index_urls={STAND_IN_URLS.indexes[fi.NVIDIA]}",
        "visomaster_clip_url=http://10.9.9.1:7/clip/models/x/ViT-B-16.pt",
        f"visomaster_clip_sha256={'a' * 64}"])
    steps = converge.app_steps(commands)
    names = [(name, background) for name, background, _ in steps]
    assert names[0] == ("checkout", False)
    # The models' fetch starts in the background before the install, and its step after it.
    assert names.index(("models", True)) < names.index(("pip", False)) \
        < names.index(("models", False))
    assert {name for name, _ in names} == {"checkout", "models", "pip", "clip"}
    pip = next(script for name, _, script in steps if name == "pip")
    local = converge.localize(pip, lambda path: "/R" + path.replace("/workspace", "/WS", 1)
                              if path.startswith("/workspace") else "/R" + path, "/V/bin")
    assert "/V/bin/red-app-pip --venv /R/opt/red/venv --requirements " \
        "/R/WS/VisoMaster/requirements_cu124.txt" in local
    assert "--also" not in local and "ipykernel" not in local
    assert f"--extra-index-url {STAND_IN_URLS.indexes[fi.NVIDIA]}" in local
    assert ">> /R/logs/visomaster-pip.log" in local


def test_a_stand_in_wheel_has_the_size_and_files_asked_and_the_real_metadata(tmp_path):
    dist = next(d for d in fi.distributions() if d.name == "scipy" and d.version == "1.15.3")
    path, members = standins.write_wheel(tmp_path, dist, scale=0.01)
    megabytes, files = data.wheel_size("scipy")
    assert members == files
    # Its padding is what the other members and the zip's headers leave of its size.
    assert path.stat().st_size == pytest.approx(megabytes * 1e6 * 0.01, rel=0.05)
    with zipfile.ZipFile(path) as archive:
        assert len(archive.namelist()) == files
        init = archive.read("scipy/__init__.py").decode()
        assert "__version__ = VERSION = '1.15.3'" in init
    assert Path(f"{path}.metadata").read_text() == dist.metadata()


def test_the_model_list_reads_like_upstreams(tmp_path):
    built = standins.Built(root=tmp_path, scale=1e-6)
    standins.build_models(built, STAND_IN_URLS)
    source = tmp_path / "models_data.py"
    source.write_text(standins.models_data_py(built.models, STAND_IN_URLS.assets_repo))
    entries, skipped = read_models(str(source))
    assert len(entries) == len(data.MODELS) == 57 and not skipped
    assert entries[0]["model"] == "Inswapper128"
    assert entries[0]["url"] == f"{STAND_IN_URLS.assets_repo}/v0.1.0/inswapper_128.fp16.onnx"
    assert sum(data.model_sizes()) == pytest.approx(data.MODELS_TOTAL)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-app")
    names = ["git", fi.PYPI, "github", "cdn", "clip"]
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    urls = standins.Urls.at("127.0.0.1", {**ports, fi.PYTORCH_CU124: 0, fi.NVIDIA: 0})
    built = standins.Built(root=root, scale=1e-4)
    standins.build_models(built, urls)
    standins.build_clip(built, urls)
    (root / "indexes" / fi.PYPI).mkdir(parents=True)
    dist = next(d for d in fi.distributions() if d.name == "numpy" and d.version == "1.26.4")
    standins.write_wheel(root / "indexes" / fi.PYPI, dist, scale=1e-4)
    standins.build_repo(built, urls)
    config = {"root": str(root), "host": "127.0.0.1", "ports": ports, "indexes": [fi.PYPI],
              "assets_path": standins.ASSETS_PATH, "latency_ms": 100,
              "stream_bytes_per_s": 400_000}
    running = servers.Servers(config)
    yield running, built, urls, dist
    running.stop()


def settled(running: servers.Servers, server: str, path: str, answers: int = 1) -> dict:
    """The counters once the server has counted a body it sent (after the client has it)."""
    for _ in range(100):
        stats = running.snapshot()["servers"]
        if stats[server]["files"].get(path, [0])[0] >= answers:
            return stats
        time.sleep(0.02)
    return stats


def test_a_model_comes_through_githubs_redirects_paced_and_delayed(served):
    running, built, urls, _ = served
    running.reset()
    model = max(built.models, key=lambda found: found["size"])  # ~91 kB here
    started = time.monotonic()
    with urllib.request.urlopen(model["url"], timeout=10) as response:
        body = response.read()
    seconds = time.monotonic() - started
    assert len(body) == model["size"]
    # Three connections (github, release-assets, the CDN), each 100 ms to its first byte;
    # the body at 400 kB/s.
    assert seconds >= 0.3 + model["size"] / 400_000 * 0.9
    path = f"/github-production-release-asset/v0.1.0/{Path(model['path']).name}"
    stats = settled(running, "cdn", path)
    assert stats["github"]["requests"] == 2 and stats["cdn"]["requests"] == 1
    assert stats["cdn"]["files"][path] == [1, model["size"], model["size"]]
    assert report.duplicates(stats) == []
    # A resume (of another file) is answered 206 from where it asked and is no second fetch;
    # the whole file after it is.
    other = next(found for found in built.models if found["size"] > 1000
                 and found["tag"] == "v0.1.0" and found is not model)
    path = f"/github-production-release-asset/v0.1.0/{Path(other['path']).name}"
    request = urllib.request.Request(f"{urls.cdn}{path}", headers={"Range": "bytes=100-"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 206 and len(response.read()) == other["size"] - 100
    assert report.duplicates(settled(running, "cdn", path)) == []
    with urllib.request.urlopen(other["url"], timeout=10) as response:
        response.read()
    assert report.duplicates(settled(running, "cdn", path, 2)) == [
        f"cdn{path}: 2 answers, {2 * other['size'] - 100} bytes of {other['size']}"]


def test_the_index_hides_pep_658_metadata_from_pip_only(served):
    _running, _built, urls, dist = served
    page = f"{urls.indexes[fi.PYPI]}/numpy/"
    with urllib.request.urlopen(urllib.request.Request(
            page, headers={"User-Agent": "uv/0.13.9"}), timeout=10) as response:
        assert "data-dist-info-metadata" in response.read().decode()
    with urllib.request.urlopen(urllib.request.Request(
            page, headers={"User-Agent": "pip/23.0.1 {}"}), timeout=10) as response:
        text = response.read().decode()
    assert "data-dist-info-metadata" not in text and dist.filename in text


def test_the_app_clones_over_smart_http(served, tmp_path):
    _running, _built, urls, _ = served
    done = subprocess.run(["git", "clone", "-q", "--branch", data.REF, urls.git,
                           str(tmp_path / "app")], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "app" / "download_models.py").exists()
    files = subprocess.run(["git", "-C", str(tmp_path / "app"), "ls-files"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert len(files) == data.REPO_FILES
    requirements = (tmp_path / "app" / "requirements_cu124.txt").read_text()
    assert requirements.startswith(f"--extra-index-url {urls.indexes[fi.PYTORCH_CU124]}")
    entries = json.dumps(read_models(str(tmp_path / "app" / "app/processors/models_data.py"))[0])
    assert urls.assets_repo in entries
