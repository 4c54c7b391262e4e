"""
The flavor fixtures (verbatim requirement files of upstream v0.1.6 and Fusion) resolved by the
real uv against loopback stand-ins of the real indexes (tests/flavor_indexes.py): the known
conflicts show up as they do for users, and the overrides that fix them resolve.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from redbox.app.flavors import FUSION, UPSTREAM
from tests import flavor_indexes as fi

UV_PIN = "uv==0.13.9"  # the version these expectations were taken with

# uv's overrides replace the whole requirement, extras included (astral-sh/uv#11247): an override
# without torch's extras drops the CUDA component wheels from the resolution.
TORCH_CUDA_TOOLKIT = ("cuda-toolkit[cublas,cudart,cufft,cufile,cupti,curand,cusolver,cusparse,"
                      "nvjitlink,nvrtc,nvtx]==13.0.2")
# What torch 2.11.0+cu130 needs where Fusion's file pins other versions (the peer image's lock
# has exactly these): Red's declaration of the flavor, as the box installs it.
FUSION_OVERRIDES = FUSION.overrides
assert FUSION_OVERRIDES[0] == TORCH_CUDA_TOOLKIT

MARKER = r"(\{[^}]*\})?"  # uv prints a dependency's marker between its name and version
ISSUE_261 = re.compile(r"Because torch(==|>=)2\.11\.0\+cu130 depends on "
                       r"cuda-toolkit\[cublas\]==13\.0\.2 and you require cuda-toolkit==13\.2\.1")


def _uv() -> str:
    for candidate in (shutil.which("uv"), Path(sys.executable).with_name("uv"),
                      Path(__file__).resolve().parents[2] / ".venv" / "bin" / "uv"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail(f"the uv CLI is not installed (not on PATH, not beside {sys.executable}): "
                f"install the dev requirements (pip install {UV_PIN})")


@pytest.fixture(scope="module")
def uv() -> str:
    return _uv()


@pytest.fixture(scope="module")
def urls(tmp_path_factory):
    with fi.serve(fi.build(tmp_path_factory.mktemp("indexes"))) as served:
        yield served


def _blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line.strip())
        if match:
            pins[fi.normalize(match.group(1))] = match.group(2)
    return pins


def _resolved(output: str) -> dict[str, str]:
    return {fi.normalize(name): version
            for name, version in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", output,
                                            re.MULTILINE)}


def compile_(uv: str, workdir: Path, requirements: str, python: str, *args: str,
             config: bool = False) -> subprocess.CompletedProcess:
    """``uv pip compile`` in ``workdir`` for Linux x86_64 and Python ``python``, offline but for
    the loopback indexes: no cache, no Python downloads, no user or system uv config (and, unless
    ``config``, none from ``workdir`` either)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("UV_")}
    env["XDG_CONFIG_HOME"] = env["XDG_CONFIG_DIRS"] = str(workdir / ".no-uv-config")
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"  # the stand-ins are on loopback
    command = [uv, "pip", "compile", "--no-cache", "--no-python-downloads",
               "--python", sys.executable, "--python-platform", "x86_64-unknown-linux-gnu",
               "--python-version", python, "--no-header", "--quiet"]
    if not config:
        command.append("--no-config")
    return subprocess.run([*command, *args, requirements], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=60)


def _fusion_checkout(tmp_path: Path, urls) -> Path:
    """Fusion's files as a checkout would have them, pointing at the stand-ins."""
    for source in (fi.FUSION_REQUIREMENTS, fi.FUSION_PYPROJECT):
        (tmp_path / source.name).write_bytes(
            fi.localize(source.read_text(encoding="utf-8"), urls).encode())
    return tmp_path


def _fusion_index_args(urls) -> list[str]:
    """Fusion's [tool.uv.pip] as flags: the default index is the PyPI stand-in, the list's
    entries are extra indexes, with its index strategy."""
    args = ["--index-url", urls[fi.PYPI], "--index-strategy", fi.fusion_index_strategy()]
    for name in fi.fusion_extra_index_names():
        args += ["--extra-index-url", urls[name]]
    return args


def _write_overrides(workdir: Path, *requirements: str) -> str:
    (workdir / "overrides.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    return "overrides.txt"


# --- the fixtures themselves ----------------------------------------------------------------

def test_fixtures_are_the_real_files_byte_for_byte():
    assert _blob_id(fi.UPSTREAM_REQUIREMENTS) == "5927a0000c383d361f13515e9054b22ecff61fe1"
    assert _blob_id(fi.FUSION_REQUIREMENTS) == "cc5d7ba6b10b16c75554fe95c0e060d2426e64d8"
    assert _blob_id(fi.FUSION_PYPROJECT) == "8b0ddd0559699ec9a62ee23e4f12de9650077836"
    assert _blob_id(fi.FLAVORS / "peer" / "requirements-resolved.txt") == \
        "1e59721280d039958e35accc1f42dab287c9410a"


def test_fusion_pyproject_names_the_stand_in_indexes():
    assert fi.fusion_index_strategy() == "unsafe-best-match"
    assert fi.fusion_extra_index_names() == [fi.NVIDIA, fi.PYTORCH_CU130, fi.ORT_CUDA13_NIGHTLY,
                                             fi.PYPI]


def test_every_pin_has_its_stand_in_where_it_really_lives():
    dists = fi.distributions()
    where = {(d.project, d.version): set(d.indexes) for d in dists}
    for path in (fi.UPSTREAM_REQUIREMENTS, fi.FUSION_REQUIREMENTS):
        for project, version in _pins(path).items():
            assert (project, version) in where, f"{path.name}: no stand-in for {project}=={version}"
            if "+cu" in version:
                assert where[project, version] <= {fi.PYTORCH_CU124, fi.PYTORCH_CU130}
    assert where["tensorrt", "10.6.0"] == {fi.NVIDIA}
    assert where["tensorrt-cu13", "10.16.1.11"] == {fi.NVIDIA}
    assert where["onnxruntime-gpu", "1.27.0.dev20260507002"] == {fi.ORT_CUDA13_NIGHTLY}
    assert {("onnxruntime-gpu", "1.20.0"), ("onnxruntime-gpu", "1.22.0"),
            ("onnxruntime-gpu", "1.26.0")} <= {key for key, indexes in where.items()
                                               if fi.PYPI in indexes}


def test_stand_ins_carry_the_real_metadata_that_matters():
    by_key = {(d.project, d.version): d for d in fi.distributions()}
    assert by_key["numpy", "2.4.4"].requires_python == ">=3.11"
    assert by_key["scipy", "1.17.1"].requires_python == ">=3.11"
    assert by_key["pyqtdarktheme", "2.1.0"].requires_python == ">=3.7,<3.12"
    torch = by_key["torch", "2.11.0+cu130"]
    assert any(r.startswith("cuda-toolkit[cublas,") and "==13.0.2" in r
               for r in torch.requires_dist)
    assert 'nvidia-cudnn-cu13==9.19.0.56; platform_system == "Linux"' in torch.requires_dist
    toolkit = by_key["cuda-toolkit", "13.2.1"]
    assert "cublas" in toolkit.provides_extra
    assert any(r.startswith("nvidia-cublas==13.4.0.1.*;") and "extra == 'cublas'" in r
               for r in toolkit.requires_dist)
    cu124 = by_key["torch", "2.4.1+cu124"].requires_dist
    assert any(r.startswith("nvidia-cudnn-cu12 (==9.1.0.70)") for r in cu124)
    assert any(r.startswith("nvidia-cublas-cu12 (==12.4.2.65)") for r in cu124)


def test_stand_in_index_is_pep503_with_requires_python(urls):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{urls[fi.PYTORCH_CU130]}/torch/", timeout=10) as answer:
        page = answer.read().decode()
    assert "torch-2.11.0%2Bcu130-py3-none-any.whl" in page
    assert 'data-requires-python="&gt;=3.10"' in page
    with opener.open(f"{urls[fi.PYPI]}/torch/", timeout=10) as answer:
        assert "cu130" not in answer.read().decode()  # PyPI's torch has no local version
    with pytest.raises(urllib.error.HTTPError) as missing:
        opener.open(f"{urls[fi.NVIDIA]}/torch/", timeout=10)
    assert missing.value.code == 404  # an index without the project answers 404, as PyPI does


# --- Fusion (requirements_cu13.txt, Python 3.12) --------------------------------------------

def test_fusion_as_written_fails_like_issue_261(uv, urls, tmp_path):
    workdir = _fusion_checkout(tmp_path, urls)
    result = compile_(uv, workdir, "requirements_cu13.txt", "3.12", *_fusion_index_args(urls))
    assert result.returncode == 1, result.stderr
    assert ISSUE_261.search(result.stderr), result.stderr
    assert "/simple/torch/" in urls.queried(fi.PYTORCH_CU130)


def test_fusion_own_uv_config_reproduces_issue_261(uv, urls, tmp_path):
    # As Fusion's README and launcher run it: in the checkout, where uv reads [tool.uv.pip].
    workdir = _fusion_checkout(tmp_path, urls)
    result = compile_(uv, workdir, "requirements_cu13.txt", "3.12",
                      "--index-url", urls[fi.PYPI], config=True)
    assert result.returncode == 1, result.stderr
    assert ISSUE_261.search(result.stderr), result.stderr


def test_fusion_overriding_cuda_toolkit_alone_is_not_enough(uv, urls, tmp_path):
    workdir = _fusion_checkout(tmp_path, urls)
    plain = compile_(uv, workdir, "requirements_cu13.txt", "3.12", *_fusion_index_args(urls),
                     "--overrides", _write_overrides(workdir, "cuda-toolkit==13.0.2"))
    assert plain.returncode == 1, plain.stderr
    assert re.search(rf"torch(==|>=)2\.11\.0\+cu130 depends on nvidia-cudnn-cu13{MARKER}"
                     r"==9\.19\.0\.56 and you require nvidia-cudnn-cu13==9\.21\.1\.3",
                     plain.stderr), plain.stderr
    with_extras = compile_(uv, workdir, "requirements_cu13.txt", "3.12",
                           *_fusion_index_args(urls), "--overrides",
                           _write_overrides(workdir, TORCH_CUDA_TOOLKIT,
                                            "nvidia-cudnn-cu13==9.19.0.56"))
    assert with_extras.returncode == 1, with_extras.stderr
    assert re.search(rf"cuda-toolkit\[cublas\]<=13\.0\.2 depends on nvidia-cublas{MARKER}"
                     r"==13\.1\.0\.3\.\*", with_extras.stderr), with_extras.stderr
    assert "you require nvidia-cublas==13.4.0.1" in with_extras.stderr


def test_fusion_resolves_with_torchs_cuda_pins_as_overrides(uv, urls, tmp_path):
    workdir = _fusion_checkout(tmp_path, urls)
    result = compile_(uv, workdir, "requirements_cu13.txt", "3.12", *_fusion_index_args(urls),
                      "--overrides", _write_overrides(workdir, *FUSION_OVERRIDES))
    assert result.returncode == 0, result.stderr
    resolved = _resolved(result.stdout)
    assert resolved["torch"] == "2.11.0+cu130"
    assert resolved["torchvision"] == "0.26.0+cu130"
    assert resolved["cuda-toolkit"] == "13.0.2"
    assert resolved["nvidia-cuda-runtime"] == "13.0.96"  # the extras' wheels are in
    assert resolved["onnxruntime-gpu"] == "1.26.0"  # the pin (PyPI), not the feed's 1.27.0.dev
    assert resolved["pyqtdarktheme"] == "2.1.0"  # uv ignores its Requires-Python <3.12
    # The peer image's lock, but for keras and tensorflow (dropped from the file since).
    peer = _pins(fi.FLAVORS / "peer" / "requirements-resolved.txt")
    assert {k: v for k, v in peer.items() if k not in {"keras", "tensorflow"}} == resolved


def test_fusion_needs_python_3_12(uv, urls, tmp_path):
    workdir = _fusion_checkout(tmp_path, urls)
    overrides = _write_overrides(workdir, *FUSION_OVERRIDES)
    on_310 = compile_(uv, workdir, "requirements_cu13.txt", "3.10", *_fusion_index_args(urls),
                      "--overrides", overrides)
    assert on_310.returncode == 1, on_310.stderr
    assert "the requested Python version (>=3.10) does not satisfy" in on_310.stderr
    assert re.search(r"(networkx==3\.6\.1|numpy==2\.4\.4|scipy==1\.17\.1|scikit-image==0\.26\.0|"
                     r"onnxruntime-gpu==1\.26\.0|tifffile==2026\.5\.2) depends on (one of:\s*)?"
                     r"Python>=3\.1[12]", on_310.stderr), on_310.stderr
    on_311 = compile_(uv, workdir, "requirements_cu13.txt", "3.11", *_fusion_index_args(urls),
                      "--overrides", overrides)
    assert on_311.returncode == 1, on_311.stderr
    assert "tifffile==2026.5.2 depends on Python>=3.12" in on_311.stderr


def test_numpy_and_scipy_pins_exclude_python_3_10(uv, urls, tmp_path):
    for pin in ("numpy==2.4.4", "scipy==1.17.1"):
        (tmp_path / "pin.txt").write_text(pin + "\n", encoding="utf-8")
        result = compile_(uv, tmp_path, "pin.txt", "3.10", "--index-url", urls[fi.PYPI])
        assert result.returncode == 1, result.stderr
        assert f"{pin} depends on Python>=3.11" in result.stderr, result.stderr


# --- upstream v0.1.6 (requirements_cu124.txt, Python 3.10) ----------------------------------

def _upstream_checkout(tmp_path: Path, urls, *, move_line_option: bool) -> Path:
    text = fi.localize(fi.UPSTREAM_REQUIREMENTS.read_text(encoding="utf-8"), urls)
    if move_line_option:  # uv rejects an index option on a requirement line: pass it as a flag
        text = text.replace(f" --extra-index-url {urls[fi.NVIDIA]}", "")
    (tmp_path / fi.UPSTREAM_REQUIREMENTS.name).write_text(text, encoding="utf-8")
    return tmp_path


def test_upstream_file_as_written_is_rejected_by_uv(uv, urls, tmp_path):
    workdir = _upstream_checkout(tmp_path, urls, move_line_option=False)
    result = compile_(uv, workdir, "requirements_cu124.txt", "3.10", "--index-url", urls[fi.PYPI])
    assert result.returncode == 2, result.stderr
    assert 'Expected `--hash`, found `"--extra-index-url"`: requirements_cu124.txt:17:' \
        in result.stderr, result.stderr


def test_upstream_resolves_on_python_3_10_from_the_cu124_index(uv, urls, tmp_path):
    workdir = _upstream_checkout(tmp_path, urls, move_line_option=True)
    args = ["--index-url", urls[fi.PYPI], "--extra-index-url", urls[fi.NVIDIA],
            "--index-strategy", "unsafe-best-match"]
    result = compile_(uv, workdir, "requirements_cu124.txt", "3.10", *args)
    assert result.returncode == 0, result.stderr
    resolved = _resolved(result.stdout)
    assert resolved["torch"] == "2.4.1+cu124"
    assert resolved["torchvision"] == "0.19.1+cu124"
    assert resolved["nvidia-cudnn-cu12"] == "9.1.0.70"
    assert resolved["tensorrt"] == resolved["tensorrt-cu12-libs"] == "10.6.0"
    assert resolved["onnxruntime-gpu"] == "1.20.0"
    assert resolved["numpy"] == "1.26.4"
    assert "/simple/torch/" in urls.queried(fi.PYTORCH_CU124)

    fixed = compile_(uv, workdir, "requirements_cu124.txt", "3.10", *args, "--overrides",
                     _write_overrides(workdir, *UPSTREAM.overrides))
    assert fixed.returncode == 0, fixed.stderr
    resolved = _resolved(fixed.stdout)
    assert resolved["onnxruntime-gpu"] == "1.22.0"
    assert resolved["coloredlogs"] == "15.0.1"
    assert resolved["torch"] == "2.4.1+cu124"
