"""
Both flavors installed for real by red-app-pip (the real console script, the real uv) from the
real requirement files, against loopback stand-ins of the real indexes (tests/flavor_indexes.py:
real names, versions and dependency metadata), each on its own Python: upstream on 3.10 with
onnxruntime-gpu overridden to 1.22.0, Fusion on 3.12 with torch's CUDA pins (issue #261).
The box's Python choice when it lacks the flavor's (Ubuntu 22.04 and Fusion's 3.12): a
uv-managed one, from the mirror setting, with a uv that records what it was asked.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from redbox.app import flavors
from tests import flavor_indexes as fi
from tests.conftest import TOOLS

TOOL = TOOLS / "red-app-pip"
UV = TOOLS / "uv"
PYENV = Path("/root/.pyenv/versions")


def python_bin(version: str) -> Path:
    """A directory holding pythonX.Y (this machine's pyenv: its shims do not run other ones)."""
    found = sorted(PYENV.glob(f"{version}*/bin/python{version}"))
    assert found, f"these tests need a Python {version} (pyenv's, on this kind of machine)"
    return found[-1].parent


@pytest.fixture(scope="module")
def urls(tmp_path_factory):
    served = fi.serve(fi.build(tmp_path_factory.mktemp("indexes")))
    yield served
    served.stop()


def install(tmp_path: Path, urls, flavor: flavors.Flavor, requirements: Path) -> tuple:
    checkout = tmp_path / "VisoMaster"
    checkout.mkdir()
    (checkout / requirements.name).write_text(fi.localize(requirements.read_text(), urls))
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PIP_", "UV_"))}
    python = python_bin(flavor.pythons[0])
    env.update(UV_DEFAULT_INDEX=urls[fi.PYPI], NO_PROXY="127.0.0.1",
               PATH=f"{python}{os.pathsep}{env['PATH']}")
    extra = [fi.localize(url, urls) for url in flavor.extra_index_urls]
    args = [str(TOOL), "--venv", str(tmp_path / "venv"), "--requirements",
            str(checkout / requirements.name), "--flavor", flavor.name, "--uv", str(UV),
            "--state", str(tmp_path / "pip.json"), "--status", str(tmp_path / "status.json"),
            "--cache-dir", str(tmp_path / "uv-cache"),
            *(item for url in extra for item in ("--extra-index-url", url))]
    started = time.monotonic()
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600,
                            check=False)
    seconds = time.monotonic() - started
    print(f"\n{flavor.name}: red-app-pip (uv) installed the real file in {seconds:.1f} s")
    return result, tmp_path / "venv"


def versions(venv: Path, *names: str) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, sys; "
            "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))")
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code, *names],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_upstream_installs_on_3_10_with_the_onnxruntime_override(tmp_path, urls):
    result, venv = install(tmp_path, urls, flavors.UPSTREAM, fi.UPSTREAM_REQUIREMENTS)
    assert result.returncode == 0, result.stdout[-3000:]
    assert (venv / ".red-flavor").read_text().strip() == "upstream 3.10"
    found = versions(venv, "torch", "onnxruntime-gpu", "numpy", "tensorrt", "PySide6")
    assert found == {"torch": "2.4.1+cu124", "onnxruntime-gpu": "1.22.0", "numpy": "1.26.4",
                     "tensorrt": "10.6.0", "PySide6": "6.8.2.1"}
    # The tensorrt line's own index, which uv refuses on the line, went on the command line.
    assert "--extra-index-url=" + urls[fi.NVIDIA] in result.stdout


def test_fusion_installs_on_3_12_with_torchs_cuda_pins(tmp_path, urls):
    result, venv = install(tmp_path, urls, flavors.FUSION, fi.FUSION_REQUIREMENTS)
    assert result.returncode == 0, result.stdout[-3000:]
    assert (venv / ".red-flavor").read_text().strip() == "fusion 3.12"
    found = versions(venv, "torch", "cuda-toolkit", "numpy", "scipy", "onnxruntime-gpu")
    assert found == {"torch": "2.11.0+cu130", "cuda-toolkit": "13.0.2", "numpy": "2.4.4",
                     "scipy": "1.17.1", "onnxruntime-gpu": "1.26.0"}


def test_fusion_without_reds_overrides_fails_like_issue_261(tmp_path, urls):
    # uv with the flavor's indexes and strategy but without Red's overrides: the file as written.
    checkout = tmp_path / "VisoMaster"
    checkout.mkdir()
    text = fi.localize(fi.FUSION_REQUIREMENTS.read_text(), urls)
    (checkout / "requirements_cu13.txt").write_text(text)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PIP_", "UV_"))}
    venv = tmp_path / "venv312"
    subprocess.run([str(UV), "venv", "-q", str(venv), "--python",
                    str(python_bin("3.12") / "python3.12")], check=True, env=env)
    extra = [fi.localize(url, urls) for url in flavors.FUSION.extra_index_urls]
    done = subprocess.run(
        [str(UV), "pip", "install", "--dry-run", "--python", str(venv / "bin" / "python"),
         "-r", str(checkout / "requirements_cu13.txt"), "--index-strategy", "unsafe-best-match",
         "--prerelease", "allow", "--default-index", urls[fi.PYPI],
         *(item for url in extra for item in ("--extra-index-url", url))],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode != 0
    assert "depends on cuda-toolkit[cublas]==13.0.2 and you require cuda-toolkit==13.2.1" \
        in done.stderr, done.stderr


def test_without_the_flavors_python_the_box_asks_uv_for_a_managed_one(tmp_path):
    """Ubuntu 22.04 and Fusion: no python3.12 on the box; uv makes the venv on a managed one."""
    record = tmp_path / "uv-calls.json"
    fake_uv = tmp_path / "uv"
    fake_uv.write_text(
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        f"open({str(record)!r}, 'a').write(json.dumps([sys.argv[1:], "
        "{k: v for k, v in os.environ.items() if k.startswith('UV_PYTHON')}]) + '\\n')\n"
        "sys.exit(7)\n")
    fake_uv.chmod(0o755)
    requirements = tmp_path / "requirements_cu13.txt"
    requirements.write_text("numpy==2.4.4\n")
    # A PATH with no python3.12 (only the fake uv's directory and the system's basics).
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [str(TOOL), "--venv", str(tmp_path / "venv"), "--requirements", str(requirements),
         "--flavor", "fusion", "--uv", str(fake_uv), "--state", str(tmp_path / "pip.json"),
         "--status", str(tmp_path / "status.json"), "--python-dir", "/opt/red/python",
         "--python-mirror", "https://mirror.example/python-build-standalone"],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 1
    assert "on a uv-managed Python 3.12 in /opt/red/python (from https://mirror.example/" \
        in result.stdout
    [(args, uv_env)] = [json.loads(line) for line in record.read_text().splitlines()]
    assert args == ["venv", str(tmp_path / "venv"), "--python", "3.12", "--managed-python"]
    assert uv_env == {"UV_PYTHON_INSTALL_DIR": "/opt/red/python",
                      "UV_PYTHON_INSTALL_MIRROR": "https://mirror.example/python-build-standalone"}
    assert json.loads((tmp_path / "pip.json").read_text())["result"] == "failed"
