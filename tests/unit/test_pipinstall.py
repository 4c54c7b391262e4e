"""
red-app-pip (redbox.app.install): the requirements file's index lines, pip's failure causes and
progress, read table-driven; then real pip in a real venv against loopback indexes: one that
serves (and logs what pip asks it), one refused, one blackholed, each bounded and recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from redbox.app import install as pipinstall
from redbox.core import progress
from tests import pip_index
from tests.conftest import ROOT, TOOLS

TOOL = TOOLS / "red-app-pip"
LIB = ROOT / "files" / "lib" / "opt" / "red" / "lib"


@pytest.mark.parametrize(("text", "used", "ignored"), [
    ("torch==2.4.1\n", [], []),
    # upstream's file: a file-level line pip honours itself
    ("--extra-index-url https://download.pytorch.org/whl/cu124\ntorch==2.4.1+cu124\n",
     ["https://download.pytorch.org/whl/cu124"], []),
    ("-i http://127.0.0.1:1/simple\n--index-url=http://a/simple\n",
     ["http://127.0.0.1:1/simple", "http://a/simple"], []),
    # on a requirement line pip ignores it: it goes on the command line
    ("tensorrt==10.6.0 --extra-index-url https://pypi.nvidia.com\n", [],
     ["https://pypi.nvidia.com"]),
    ("# --extra-index-url http://commented/simple\nx==1  # --index-url http://c/simple\n",
     [], []),
])
def test_index_lines_of_the_file(text, used, ignored):
    assert pipinstall.index_options(text) == (used, ignored)


REFUSED_LOG = (
    "2026-12-01T22:54:50,713 Fetching project page and analyzing links: "
    "http://127.0.0.1:17998/simple/tomli-w/\n"
    "2026-12-01T22:54:50,718 Could not fetch URL http://127.0.0.1:17998/simple/tomli-w/: "
    "connection error: HTTPConnectionPool(host='127.0.0.1', port=17998): Max retries exceeded "
    "(Caused by NewConnectionError('...: [Errno 111] Connection refused')) - skipping\n"
    "2026-12-01T22:54:50,732 Fetching project page and analyzing links: "
    "https://pypi.nvidia.com/tomli-w/\n"
    "2026-12-01T22:54:56,743 Could not fetch URL https://pypi.nvidia.com/tomli-w/: connection "
    "error: HTTPSConnectionPool(host='pypi.nvidia.com', port=443): Read timed out. - skipping\n"
    "2026-12-01T22:54:57,000 ERROR: No matching distribution found for tomli-w==1.0.0\n"
)


def test_causes_name_the_index_and_why():
    found = pipinstall.causes(REFUSED_LOG)
    assert found == {
        "queried": {"127.0.0.1:17998": 1, "pypi.nvidia.com": 1},
        "failed_hosts": {"127.0.0.1:17998": {"connection refused": 1},
                         "pypi.nvidia.com": {"read timed out": 1}},
        "not_found": ["tomli-w==1.0.0"],
    }
    assert pipinstall.cause_text(found, None, 1) == (
        "index 127.0.0.1:17998: connection refused x1; index pypi.nvidia.com: read timed out x1;"
        " no matching distribution for tomli-w==1.0.0")
    assert pipinstall.cause_text(pipinstall.causes(""), 60, None) == \
        "deadline of 60 s reached, pip stopped"


def test_progress_from_pip_lines():
    bar = pipinstall.PipProgress(expected=2)
    steps = []
    for line in ["Looking in indexes: x", "Collecting torch==2.4.1", "  Downloading "
                 "torch-2.4.1-cp310-none-any.whl (797.1 MB)", "Collecting numpy==1.26.4",
                 "Collecting filelock (from torch)", "Installing collected packages: a, b, c",
                 "Successfully installed a b c"]:
        if bar.feed(line):
            steps.append((round(bar.percent()), bar.detail()))
    assert steps == [
        (40, "collecting torch==2.4.1 (1 packages so far)"),
        (40, "collecting torch==2.4.1 (1 packages so far, 0.80 GB announced)"),
        (53, "collecting numpy==1.26.4 (2 packages so far, 0.80 GB announced)"),
        (60, "collecting filelock (3 packages so far, 0.80 GB announced)"),
        (90, "installing 3 packages"),
        (100, "installed 3 packages"),
    ]


@pytest.mark.parametrize(("failures", "seconds"), [(1, 600), (2, 1200), (4, 4800), (9, 21600)])
def test_backoff_doubles_and_is_capped(failures, seconds):
    assert pipinstall.backoff_seconds(failures, 600) == seconds


def test_progress_status_file_roundtrip(tmp_path):
    path = str(tmp_path / "status.json")
    assert progress.line(progress.read(path)) == "visomaster: no step has run yet"
    progress.write(path, "checkout", "done", 100, "cloned")
    progress.write(path, "pip", "running", 41.6, "collecting torch")
    status = progress.read(path)
    assert status["step"] == "pip" and status["percent"] == 42
    assert progress.running(path)["detail"] == "collecting torch"
    shown = progress.lines(status)
    assert shown[0].startswith("visomaster: pip running 42%: collecting torch (at ")
    assert shown[1].startswith("  last: checkout done 100%: cloned")
    # A running step whose process is gone is not running any more.
    data = json.loads(Path(path).read_text())
    data["pid"] = data["steps"]["pip"]["pid"] = 2 ** 22 + 7
    Path(path).write_text(json.dumps(data))
    assert progress.read(path)["state"] == "interrupted"
    assert progress.running(path) is None


# ---------------------------------------------------------------------------------------------
# real pip, loopback indexes


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipvenv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """A serving index with two fixture wheels; its query log."""
    root = tmp_path_factory.mktemp("index")
    wheels = root / "wheels"
    pip_index.make_wheel(str(wheels), "red-fixture-a", "1.0")
    pip_index.make_wheel(str(wheels), "red-fixture-b", "2.0")
    port = pip_index.free_port()
    log = root / "queries.log"
    log.touch()
    server = pip_index.serve(port, str(wheels), str(log))
    yield f"http://127.0.0.1:{port}/simple", log, port
    server.shutdown()


def pip_env() -> dict[str, str]:
    """This machine's pip configuration left out: only the indexes a test names."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PYTHONPATH": str(LIB)}


def run_tool(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          env={**pip_env(), **(env or {})}, timeout=120, check=False)


def tool_args(venv: Path, tmp_path: Path, requirements: Path, *more: str) -> list[str]:
    return ["--venv", str(venv), "--requirements", str(requirements), "--state",
            str(tmp_path / "pip.json"), "--status", str(tmp_path / "status.json"),
            "--timeout", "2", "--retries", "1", *more]


def test_installs_from_the_files_index_line_and_a_requirement_lines_index(venv, index,
                                                                         tmp_path):
    url, log, port = index
    requirements = tmp_path / "requirements.txt"
    # The file's own --extra-index-url line, and an index written on a requirement line (which
    # pip would ignore: the tool passes it on the command line; here it is a dead one). The
    # main index is a dead loopback one too (PyPI out of the way).
    dead, main = pip_index.free_port(), pip_index.free_port()
    requirements.write_text(f"--extra-index-url {url}\nred-fixture-a==1.0\n"
                            f"red-fixture-b==2.0 --extra-index-url http://127.0.0.1:{dead}/s\n")
    args = tool_args(venv, tmp_path, requirements, "--key", "ref=v1")
    assert json.loads(run_tool(*args, "--check").stdout)["state"] == "needed"
    result = run_tool(*args, env={"PIP_INDEX_URL": f"http://127.0.0.1:{main}/simple"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"from requirement lines pip ignores: http://127.0.0.1:{dead}/s" in result.stdout
    assert f"--extra-index-url=http://127.0.0.1:{dead}/s" in result.stdout
    queried = log.read_text().splitlines()
    assert f"{port} /simple/red-fixture-a/" in queried
    assert f"{port} /simple/red-fixture-b/" in queried
    record = json.loads((tmp_path / "pip.json").read_text())
    assert record["result"] == "installed"
    assert record["queried"][f"127.0.0.1:{port}"] >= 2
    # the command line's index was asked (and the main one), and their failures recorded
    assert record["queried"][f"127.0.0.1:{dead}"] >= 1
    assert record["queried"][f"127.0.0.1:{main}"] >= 1
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["step"] == "pip" and status["state"] == "done" and status["percent"] == 100
    assert json.loads(run_tool(*args, "--check").stdout)["state"] == "installed"
    assert "already has" in run_tool(*args).stdout


@pytest.mark.parametrize(("kind", "timeout", "cause"), [
    ("refused", 2, "index 127.0.0.1:PORT: connection refused x1"),
    # pip's own socket timeout ends it (2 s x 2 tries) ...
    ("blackholed", 2, "index 127.0.0.1:PORT: read timed out x1"),
    # ... or, with pip's timeout above the deadline, the deadline does.
    ("blackholed", 30, "deadline of 8 s reached, pip stopped"),
])
def test_an_unreachable_index_fails_bounded_recorded_and_backed_off(venv, tmp_path, kind,
                                                                    timeout, cause):
    port = pip_index.free_port()
    listener = pip_index.blackhole(port) if kind == "blackholed" else None
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("".join(f"red-missing-{n}==1.0\n" for n in range(6)))
    args = [*tool_args(venv, tmp_path, requirements), "--timeout", str(timeout),
            "--extra-index-url", f"http://127.0.0.1:{port}/simple", "--deadline", "8",
            "--backoff", "300"]
    # PyPI itself out of the way: only the loopback index is asked.
    (tmp_path / "pip.conf").write_text(f"[global]\nindex-url = http://127.0.0.1:{port}/simple\n")
    started = time.monotonic()
    env = {**pip_env(), "PIP_CONFIG_FILE": str(tmp_path / "pip.conf")}
    result = subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                            env=env, timeout=120, check=False)
    seconds = time.monotonic() - started
    print(f"\n{kind} index (pip timeout {timeout} s): red-app-pip gave up after {seconds:.1f} s")
    assert result.returncode == 1, result.stdout
    assert seconds < 8 + pipinstall.STOP_GRACE + 5
    record = json.loads((tmp_path / "pip.json").read_text())
    assert record["result"] == "failed" and record["failures"] == 1
    assert cause.replace("PORT", str(port)) in record["cause"]
    assert f"127.0.0.1:{port}" in record["queried"]
    assert "FAILED after" in result.stdout and "--retry-now" in result.stdout
    # The next converge with the same inputs skips it (backoff); --retry-now forces it.
    check = json.loads(run_tool(*args, "--check").stdout)
    assert check["state"] == "backoff" and 290 < check["seconds_left"] <= 300
    assert run_tool(*args).returncode == 3
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "backoff" and "waiting until" in status["detail"]
    # Changed inputs are tried at once.
    requirements.write_text("red-missing-0==1.0\n")
    assert json.loads(run_tool(*args, "--check").stdout)["state"] == "needed"
    requirements.write_text("".join(f"red-missing-{n}==1.0\n" for n in range(6)))
    forced = subprocess.run([sys.executable, str(TOOL), "--retry-now", "--state",
                             str(tmp_path / "pip.json")], capture_output=True, text=True,
                            env=env, timeout=120, check=False)
    assert forced.returncode == 1 and "FAILED after" in forced.stdout
    assert json.loads((tmp_path / "pip.json").read_text())["failures"] == 2
    if listener is not None:
        listener.close()


def test_a_missing_requirements_file_is_one_line_naming_it(venv, tmp_path):
    missing = tmp_path / "requirements_cu129.txt"
    args = tool_args(venv, tmp_path, missing)
    assert json.loads(run_tool(*args, "--check").stdout)["state"] == "missing"
    result = run_tool(*args)
    assert result.returncode == 2
    [line] = result.stdout.splitlines()
    assert f"requirements file {missing} does not exist" in line
