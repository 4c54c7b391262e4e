"""
red-app-pip (redbox.app.install): the requirements file's index lines, uv's failure causes and
progress, read table-driven; then the real uv CLI making the flavor's venv and installing into it
against loopback indexes: one that serves (and logs what uv asks it), one refused, one
blackholed, each bounded and recorded; the flavor's override applied; a venv of another flavor
moved aside, never installed over.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from redbox.app import install as pipinstall
from redbox.core import progress
from tests import pip_index
from tests.conftest import TOOLS

TOOL = TOOLS / "red-app-pip"
UV = TOOLS / "uv"


@pytest.mark.parametrize(("text", "used", "ignored"), [
    ("torch==2.4.1\n", [], []),
    # upstream's file: a file-level line pip honours itself
    ("--extra-index-url https://download.pytorch.org/whl/cu124\ntorch==2.4.1+cu124\n",
     ["https://download.pytorch.org/whl/cu124"], []),
    ("-i http://127.0.0.1:1/simple\n--index-url=http://a/simple\n",
     ["http://127.0.0.1:1/simple", "http://a/simple"], []),
    # on a requirement line uv refuses it: it goes on the command line
    ("tensorrt==10.6.0 --extra-index-url https://pypi.nvidia.com\n", [],
     ["https://pypi.nvidia.com"]),
    ("# --extra-index-url http://commented/simple\nx==1  # --index-url http://c/simple\n",
     [], []),
])
def test_index_lines_of_the_file(text, used, ignored):
    assert pipinstall.index_options(text) == (used, ignored)


# What the real uv (the tool lock's) prints, read from runs against loopback servers.
REFUSED = (
    "error: Request failed after 1 retry in 1.6s\n"
    "  cause: Failed to fetch: http://127.0.0.1:17998/simple/red-fixture-a/\n"
    "  cause: error sending request for url (http://127.0.0.1:17998/simple/red-fixture-a/)\n"
    "  cause: client error (Connect)\n  cause: tcp connect error\n"
    "  cause: Connection refused (os error 111)\n"
)
BLACKHOLED = (
    "error: Request failed after 1 retry in 5.5s\n"
    "  cause: Failed to fetch: http://127.0.0.1:18766/simple/red-fixture-a/\n"
    "  cause: error sending request for url (http://127.0.0.1:18766/simple/red-fixture-a/)\n"
    "  cause: operation timed out\n"
)
NO_SOLUTION = (
    "error: No solution found when resolving dependencies\n"
    "  cause: Because torch==2.11.0+cu130 depends on cuda-toolkit[cublas]==13.0.2 and you "
    "require cuda-toolkit==13.2.1, we can conclude that your requirements are unsatisfiable.\n"
)


def test_requirement_line_options_move_to_the_command_line():
    text = "--extra-index-url https://a/simple\ntensorrt==10.6.0 --extra-index-url https://b\n"
    assert pipinstall.without_line_options(text) == \
        "--extra-index-url https://a/simple\ntensorrt==10.6.0\n"


@pytest.mark.parametrize(("output", "cause"), [
    (REFUSED, "index 127.0.0.1:17998: connection refused x1"),
    (BLACKHOLED, "index 127.0.0.1:18766: timed out x1"),
    (NO_SOLUTION, "no solution: Because torch==2.11.0+cu130 depends on "
                  "cuda-toolkit[cublas]==13.0.2 and you require cuda-toolkit==13.2.1"),
    ("", "uv exited 2"),
])
def test_causes_name_the_index_or_the_conflict(output, cause):
    assert pipinstall.cause_text(pipinstall.causes(output), None, 2).startswith(cause)


def test_a_deadline_is_its_own_cause():
    assert pipinstall.cause_text(pipinstall.causes(""), 60, None) == \
        "deadline of 60 s reached, uv stopped"


def test_progress_from_uv_lines():
    bar = pipinstall.UvProgress(expected=2)
    steps = []
    for line in ["Using Python 3.11.7 environment at: venv", "Resolved 68 packages in 1.2s",
                 "Downloading torch (755.0MiB)", "Downloading nvidia-cudnn-cu12 (600.0MiB)",
                 " Downloaded torch", " Downloaded nvidia-cudnn-cu12",
                 "Prepared 68 packages in 2m 3s", "Installed 68 packages in 4.1s",
                 " + torch==2.4.1+cu124"]:
        if bar.feed(line):
            steps.append((round(bar.percent()), bar.detail()))
    assert steps == [
        (10, "downloading  (0 of 0 large downloads, 68 packages)"),
        (10, "downloading torch (0 of 1 large downloads, 68 packages, 0.79 GB announced)"),
        (10, "downloading nvidia-cudnn-cu12 (0 of 2 large downloads, 68 packages, "
             "1.42 GB announced)"),
        (50, "downloading nvidia-cudnn-cu12 (1 of 2 large downloads, 68 packages, "
             "1.42 GB announced)"),
        (90, "downloading nvidia-cudnn-cu12 (2 of 2 large downloads, 68 packages, "
             "1.42 GB announced)"),
        (90, "installing 68 packages"),
        (100, "installed 68 packages"),
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
# the real uv CLI, loopback indexes


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """A serving index with fixture wheels (and upstream's two onnxruntime-gpu); its query log."""
    root = tmp_path_factory.mktemp("index")
    wheels = root / "wheels"
    for name, version in (("red-fixture-a", "1.0"), ("red-fixture-b", "2.0"),
                          ("onnxruntime-gpu", "1.20.0"), ("onnxruntime-gpu", "1.22.0")):
        pip_index.make_wheel(str(wheels), name, version)
    port = pip_index.free_port()
    log = root / "queries.log"
    log.touch()
    server = pip_index.serve(port, str(wheels), str(log))
    yield f"http://127.0.0.1:{port}/simple", log, port
    server.shutdown()


def python_312() -> Path:
    """A Python 3.12 for Fusion's venv (this machine's pyenv has one; its shim does not run it)."""
    found = sorted(Path("/root/.pyenv/versions").glob("3.12*/bin/python3.12"))
    assert found, "Fusion's tests need a Python 3.12 (pyenv's, on this kind of machine)"
    return found[-1]


def uv_env(main: str) -> dict[str, str]:
    """
    This machine's package configuration left out: the default index is a loopback one; a
    python3.12 on PATH (the box's own, for Fusion).
    """
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PIP_", "UV_"))}
    return {**env, "UV_DEFAULT_INDEX": main,
            "PATH": f"{python_312().parent}{os.pathsep}{env.get('PATH', '')}"}


def run_tool(*args: str, main: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(TOOL), *args], capture_output=True, text=True, env=uv_env(main),
                          timeout=120, check=False)


def tool_args(venv: Path, tmp_path: Path, requirements: Path, *more: str) -> list[str]:
    return ["--venv", str(venv), "--requirements", str(requirements), "--state",
            str(tmp_path / "pip.json"), "--status", str(tmp_path / "status.json"),
            "--timeout", "2", "--retries", "1", "--uv", str(UV), *more]


def test_installs_the_flavor_with_its_override_into_its_own_venv(index, tmp_path):
    url, log, port = index
    requirements = tmp_path / "requirements.txt"
    # The file's own index line, upstream's pin that Red overrides, and an index written on a
    # requirement line (uv refuses the line: the tool moves the URL to the command line). The
    # default index is the loopback one too (PyPI out of the way): with the flavors' strategy
    # (unsafe-best-match, as pip) uv asks every index, and stops at one it cannot reach.
    requirements.write_text(f"--extra-index-url {url}\nred-fixture-a==1.0\n"
                            "onnxruntime-gpu==1.20.0\n"
                            f"red-fixture-b==2.0 --extra-index-url {url}2\n")
    venv = tmp_path / "venv"
    args = tool_args(venv, tmp_path, requirements, "--flavor", "upstream", "--key", "ref=v1")
    main_url = url
    assert json.loads(run_tool(*args, "--check", main=main_url).stdout)["state"] == "needed"
    result = run_tool(*args, main=main_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"--extra-index-url={url}2" in result.stdout
    assert "overrides: onnxruntime-gpu==1.22.0" in result.stdout
    python = venv / "bin" / "python"
    version = subprocess.run([str(python), "-c", "import onnxruntime_gpu as o; print(o.VERSION)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == "1.22.0"
    assert (venv / ".red-flavor").read_text().startswith("upstream 3.")
    queried = log.read_text().splitlines()
    assert f"{port} /simple/red-fixture-a/" in queried
    record = json.loads((tmp_path / "pip.json").read_text())
    assert (record["result"], record["flavor"]) == ("installed", "upstream")
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["step"] == "pip" and status["state"] == "done" and status["percent"] == 100
    assert json.loads(run_tool(*args, "--check", main=main_url).stdout)["state"] == "installed"
    assert "already has" in run_tool(*args, main=main_url).stdout
    # Another flavor: the venv is moved aside (kept), a new one made for it.
    other = tool_args(venv, tmp_path, requirements, "--flavor", "fusion", "--key", "ref=v1")
    switched = run_tool(*other, main=main_url)
    assert "moved aside to" in switched.stdout, switched.stdout
    kept = list(tmp_path.glob("venv.moved-aside-*"))
    assert len(kept) == 1 and (kept[0] / ".red-visomaster.stamp").exists()
    assert (venv / ".red-flavor").read_text().startswith("fusion 3.")


@pytest.mark.parametrize(("kind", "timeout", "cause"), [
    ("refused", 2, "index 127.0.0.1:PORT: connection refused x1"),
    # uv's own request timeout ends it (2 s, 1 retry) ...
    ("blackholed", 2, "index 127.0.0.1:PORT: timed out x1"),
    # ... or, with uv's timeout above the deadline, the deadline does.
    ("blackholed", 30, "deadline of 8 s reached, uv stopped"),
])
def test_an_unreachable_index_fails_bounded_recorded_and_backed_off(tmp_path, kind, timeout,
                                                                    cause):
    port = pip_index.free_port()
    listener = pip_index.blackhole(port) if kind == "blackholed" else None
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("".join(f"red-missing-{n}==1.0\n" for n in range(6)))
    args = [*tool_args(tmp_path / "venv", tmp_path, requirements), "--timeout", str(timeout),
            "--deadline", "8", "--backoff", "300"]
    main = f"http://127.0.0.1:{port}/simple"
    started = time.monotonic()
    result = run_tool(*args, main=main)
    seconds = time.monotonic() - started
    print(f"\n{kind} index (uv timeout {timeout} s): red-app-pip gave up after {seconds:.1f} s")
    assert result.returncode == 1, result.stdout
    assert seconds < 8 + pipinstall.STOP_GRACE + 5
    record = json.loads((tmp_path / "pip.json").read_text())
    assert record["result"] == "failed" and record["failures"] == 1
    assert cause.replace("PORT", str(port)) in record["cause"], record["cause"]
    assert "FAILED after" in result.stdout and "--retry-now" in result.stdout
    # The next converge with the same inputs skips it (backoff); --retry-now forces it.
    check = json.loads(run_tool(*args, "--check", main=main).stdout)
    assert check["state"] == "backoff" and 290 < check["seconds_left"] <= 300
    assert run_tool(*args, main=main).returncode == 3
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "backoff" and "waiting until" in status["detail"]
    # Changed inputs are tried at once.
    requirements.write_text("red-missing-0==1.0\n")
    assert json.loads(run_tool(*args, "--check", main=main).stdout)["state"] == "needed"
    requirements.write_text("".join(f"red-missing-{n}==1.0\n" for n in range(6)))
    forced = run_tool("--retry-now", "--state", str(tmp_path / "pip.json"), main=main)
    assert forced.returncode == 1 and "FAILED after" in forced.stdout
    assert json.loads((tmp_path / "pip.json").read_text())["failures"] == 2
    if listener is not None:
        listener.close()


def test_a_missing_requirements_file_is_one_line_naming_it(tmp_path):
    missing = tmp_path / "requirements_cu13.txt"
    args = tool_args(tmp_path / "venv", tmp_path, missing)
    main = "http://127.0.0.1:9/simple"
    assert json.loads(run_tool(*args, "--check", main=main).stdout)["state"] == "missing"
    result = run_tool(*args, main=main)
    assert result.returncode == 2
    [line] = result.stdout.splitlines()
    assert f"requirements file {missing} does not exist" in line
