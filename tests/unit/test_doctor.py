"""
red-doctor, the real console script, against stand-in app venvs (tests/fixtures/standin_builds.py:
torch and onnxruntime stand-ins that behave as those builds do on the GPU the stand-in
nvidia-smi shows, and the real onnxruntime CPU wheel) for a matrix of GPU x flavor x build; a
hung, missing, failing or garbled nvidia-smi; NVENC through a stand-in ffmpeg; and
bench/gpu_check.py (``make gpu-check``) run the same way, catching a wrong verdict.

Builds (standin_builds.BUILDS): up-pin = torch 2.4.1+cu124 + onnxruntime-gpu 1.20.0 (upstream's
requirements as written), up-red = the same with Red's 1.22.0 override, fu-pypi = torch
2.11.0+cu130 + onnxruntime-gpu 1.26.0 from PyPI (a CUDA 12 build), fu-cu13 = the same torch +
onnxruntime's CUDA 13 build, cpu-torch = a CPU-only torch 2.4.1, ort-cpu = torch 2.4.1+cu124 +
the real onnxruntime CPU package, liar = a torch 2.4.1 whose arch list claims sm_120.
GPUs: tests/fixtures/fake_gpus.py (none = no nvidia-smi at all).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from redbox.app import checks, doctor, flavors, gpu
from tests.conftest import ROOT, TOOLS
from tests.fixtures import fake_gpus, standin_builds

sys.path.insert(0, str(ROOT / "bench"))
import gpu_check  # bench/gpu_check.py, found by the path above (redbox is already imported)

sys.path.remove(str(ROOT / "bench"))
sys.path.remove(str(gpu_check.BOX_SRC))

COLUMNS = {"torch": "torch", "arch": "torch arch", "driver": "driver CUDA",
           "matmul": "torch on GPU", "ort": "onnxruntime", "iobind": "ort IO binding",
           "nvenc": "NVENC"}
MARKS = {"ok": "ok", "WARN": "warn", "FAIL": "fail", "-": "skip", ".": None}

# What the doctor says for each GPU x configured flavor x app venv build: the flavor it chooses
# (none: no flavor runs there), each check (ok, WARN, FAIL, - skip, . not run) and its exit
# status. (The python check is left out: ok, or WARN where the chosen flavor is made for
# another Python than this one, which the venvs run: fusion wants 3.12.) A GPU-less box
# always exits 1 (the app cannot open its window); a check that fails means 1; WARN (NVENC: no
# ffmpeg on this PATH, or a data-centre GPU) does not.
MATRIX = """
gpu          flavor    build      chosen    torch arch driver matmul ort  iobind nvenc exit
none         auto      up-red     upstream  ok    -    -      -      -    -      .     1
none         auto      ort-cpu    upstream  ok    -    -      -      -    -      .     1
none         auto      cpu-torch  upstream  FAIL  -    -      -      -    -      .     1
no-devices   auto      up-red     upstream  ok    -    -      -      -    -      .     1
driver-down  upstream  up-pin     upstream  ok    -    -      -      -    -      .     1
garbage      fusion    fu-cu13    fusion    ok    -    -      -      -    -      -     1
gtx1080      auto      up-red     upstream  ok    ok   ok     ok     ok   ok     .     0
gtx1080      auto      up-pin     upstream  ok    ok   ok     ok     ok   FAIL   .     1
gtx1080      fusion    fu-cu13    fusion    ok    FAIL FAIL   FAIL   FAIL -      WARN  1
t4           auto      up-red     upstream  ok    ok   ok     ok     ok   ok     .     0
t4           fusion    fu-cu13    fusion    ok    ok   FAIL   FAIL   FAIL -      WARN  1
rtx3090      auto      up-red     upstream  ok    ok   ok     ok     ok   ok     .     0
rtx3090      auto      ort-cpu    upstream  ok    ok   ok     ok     FAIL -      .     1
rtx4090      auto      up-pin     upstream  ok    ok   ok     ok     ok   FAIL   .     1
rtx4090      auto      up-red     upstream  ok    ok   ok     ok     ok   ok     .     0
rtx4090      auto      cpu-torch  upstream  FAIL  -    ok     FAIL   ok   ok     .     1
rtx4090      upstream  fu-pypi    upstream  ok    ok   FAIL   FAIL   FAIL -      .     1
rtx4090      fusion    fu-cu13    fusion    ok    ok   FAIL   FAIL   FAIL -      WARN  1
rtx4090      auto      liar       upstream  ok    ok   ok     ok     ok   ok     .     0
a100         auto      up-red     upstream  ok    ok   ok     ok     ok   ok     .     0
a100         fusion    fu-cu13    fusion    ok    ok   FAIL   FAIL   FAIL -      WARN  1
h100         auto      up-red     upstream  ok    ok   ok     ok     ok   ok     .     0
h100         auto      up-pin     upstream  ok    ok   ok     ok     ok   FAIL   .     1
h100         fusion    fu-cu13    fusion    ok    ok   FAIL   FAIL   FAIL -      WARN  1
rtx5090-575  auto      up-red     none      ok    FAIL ok     FAIL   ok   ok     .     1
rtx5090-575  upstream  up-red     upstream  ok    FAIL ok     FAIL   ok   ok     .     1
rtx5090-575  fusion    fu-cu13    fusion    ok    ok   FAIL   FAIL   FAIL -      WARN  1
rtx5090-580  auto      fu-cu13    fusion    ok    ok   ok     ok     ok   ok     WARN  0
rtx5090-580  auto      fu-pypi    fusion    ok    ok   ok     ok     FAIL -      WARN  1
rtx5090-580  auto      up-red     fusion    ok    FAIL ok     FAIL   ok   ok     WARN  1
rtx5090-580  upstream  up-pin     upstream  ok    FAIL ok     FAIL   ok   FAIL   .     1
rtx5090-580  auto      ort-cpu    fusion    ok    FAIL ok     FAIL   FAIL -      WARN  1
rtx5090-580  auto      cpu-torch  fusion    FAIL  -    ok     FAIL   ok   ok     WARN  1
rtx5090-580  auto      liar       fusion    ok    ok   ok     FAIL   ok   ok     WARN  1
"""
HEADER, *ROWS = [line.split() for line in MATRIX.strip().splitlines()]
NO_GPU = ("none", "no-devices", "driver-down", "garbage", "hang")


@pytest.fixture(scope="module")
def venvs(tmp_path_factory) -> dict[str, Path]:
    """One app venv per build (the real onnxruntime CPU wheel is pip-installed into ort-cpu)."""
    root = tmp_path_factory.mktemp("app-venvs")
    return {build: standin_builds.make_venv(root / build, build)
            for build in standin_builds.BUILDS}


@pytest.fixture(scope="module")
def bins(tmp_path_factory) -> dict[str, Path]:
    """PATH dirs: "smi" holds the stand-in nvidia-smi, "bare" none; both a python3 for its
    shebang (this machine's python3 may be a shell shim), nothing else (no ffmpeg)."""
    root = tmp_path_factory.mktemp("bins")
    python = os.path.realpath(sys.executable)
    for name in ("smi", "bare"):
        (root / name).mkdir()
        (root / name / "python3").symlink_to(python)
    smi = root / "smi" / "nvidia-smi"
    smi.write_text(fake_gpus.script())
    smi.chmod(0o755)
    return {"smi": root / "smi", "bare": root / "bare"}


def env_for(bins: dict[str, Path], key: str, flavor: str = "auto", path: str = "") -> dict:
    """The environment of a run on GPU ``key`` (none: no nvidia-smi on PATH)."""
    where = str(bins["bare" if key == "none" else "smi"])
    return {"PATH": f"{path}:{where}" if path else where, "RED_FAKE_GPU": key,
            "VISOMASTER_FLAVOR": flavor, "LANG": "C.UTF-8"}


def red_doctor(env: dict, venv: Path, *args: str, timeout: float = 10):
    started = time.monotonic()
    done = subprocess.run([str(TOOLS / "red-doctor"), "--json", "--venv", str(venv),
                           "--timeout", str(timeout), *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return done, json.loads(done.stdout), time.monotonic() - started


def verdicts(found: dict) -> dict[str, str]:
    return {check["name"]: check["verdict"] for check in found["app"]}


@pytest.mark.parametrize("row", ROWS, ids=["-".join(row[:3]) for row in ROWS])
def test_the_matrix(row, venvs, bins):
    cells = dict(zip(HEADER, row, strict=True))
    key, flavor, build = cells["gpu"], cells["flavor"], cells["build"]
    done, found, _ = red_doctor(env_for(bins, key, flavor), venvs[build])
    got = verdicts(found)
    # The GPU nvidia-smi shows, or null and why.
    if key in NO_GPU:
        assert found["gpu"] is None and fake_gpus.EXPECTED[key][1] in found["gpu_problem"]
    else:
        name, capability, driver, cuda = fake_gpus.GPUS[key]
        assert found["gpu"] == {"name": name, "compute_capability": capability,
                                "driver_version": driver, "cuda_max": cuda, "count": 1}
    assert found["flavor"]["configured"] == flavor
    assert (found["flavor"]["chosen"] or "none") == cells["chosen"]
    if flavor == "auto":
        assert found["flavor"]["chosen"] == fake_gpus.EXPECTED[key][0]
    # Each check, one line each. The venvs run this Python: warned of where the flavor is made
    # for others (fusion: 3.12 only).
    chosen = flavors.FLAVORS.get(found["flavor"]["chosen"] or "")
    made_for = chosen.pythons if chosen else (f"{sys.version_info[0]}.{sys.version_info[1]}",)
    assert got["python"] == ("ok" if f"{sys.version_info[0]}.{sys.version_info[1]}" in made_for
                             else "warn")
    expected = {COLUMNS[column]: MARKS[cells[column]] for column in COLUMNS}
    assert {name: got.get(name) for name in expected} == expected, found["app"]
    assert all("\n" not in check["reason"] for check in found["app"]), found["app"]
    # The exit status says whether the app can run; each failed check is a problem.
    assert done.returncode == int(cells["exit"]), found["problems"]
    assert found["ok"] is (done.returncode == 0)
    failed = [check["name"] for check in found["app"] if check["verdict"] == "fail"]
    assert all(any(line.startswith(f"{name}: ") for line in found["problems"])
               for name in failed)
    assert found["venv"] == str(venvs[build])
    assert found["facts"]["python"].startswith("3.")


def test_the_reasons_name_the_breakage(venvs, bins):
    def reasons(key, flavor, build):
        found = red_doctor(env_for(bins, key, flavor), venvs[build])[1]
        return {check["name"]: check["reason"] for check in found["app"]}

    said = reasons("rtx4090", "auto", "up-pin")
    assert "no data transfer registered" in said["ort IO binding"]
    assert "upstream #64/#104" in said["ort IO binding"]
    said = reasons("rtx5090-580", "auto", "up-red")
    assert "this GPU is sm_120" in said["torch arch"]
    assert said["torch on GPU"] == ("RuntimeError: CUDA error: no kernel image is available for "
                                    "execution on the device")
    said = reasons("rtx5090-580", "auto", "fu-pypi")
    assert "a CUDA 12 build beside torch's CUDA 13" in said["onnxruntime"]
    assert "got CPUExecutionProvider" in said["onnxruntime"]
    said = reasons("rtx4090", "auto", "ort-cpu")
    assert "CPU-only package (onnxruntime, not onnxruntime-gpu)" in said["onnxruntime"]
    said = reasons("rtx5090-575", "fusion", "fu-cu13")
    assert said["driver CUDA"] == ("torch needs CUDA 13.0, onnxruntime needs CUDA 13.0; the "
                                   "driver 575.57.08 runs CUDA 12.9 at most")
    said = reasons("h100", "fusion", "fu-cu13")
    assert "has no NVENC (a data-centre GPU)" in said["NVENC"]
    said = reasons("rtx4090", "auto", "up-red")
    assert said["torch arch"] == "sm 8.9 runs torch's sm_86 (binary compatible)"


def test_the_real_onnxruntime_loads_the_probes_model_and_gives_cpu_when_cuda_is_asked(venvs):
    python = venvs["ort-cpu"] / "bin" / "python"
    code = ("import sys, numpy, onnxruntime as ort\n"
            "model = bytes.fromhex(sys.argv[1])\n"
            "session = ort.InferenceSession(model, providers=['CUDAExecutionProvider', "
            "'CPUExecutionProvider'])\n"
            "print(session.get_providers(), session.run(None, {'x': numpy.array([1.5], "
            "numpy.float32)})[0].tolist())\n")
    done = subprocess.run([str(python), "-W", "ignore", "-c", code, checks.IDENTITY_MODEL.hex()],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['CPUExecutionProvider'] [1.5]"


def test_a_hung_nvidia_smi_is_bounded(venvs, bins):
    done, found, took = red_doctor(env_for(bins, "hang"), venvs["up-red"], timeout=2)
    assert took < 8, took
    assert found["gpu"] is None
    assert found["gpu_problem"] == "nvidia-smi did not answer within 2 s (a hung driver?)"
    assert done.returncode == 1
    assert {verdicts(found)[name] for name in ("torch arch", "driver CUDA", "torch on GPU",
                                                "onnxruntime", "ort IO binding")} == {"skip"}


def test_no_app_venv_and_a_venv_without_the_app(tmp_path, venvs, bins):
    done, found, _ = red_doctor(env_for(bins, "rtx4090"), tmp_path / "missing")
    assert done.returncode == 1 and found["facts"] is None
    assert found["app"] == [{"name": "app venv", "verdict": "fail", "reason":
                             f"no app venv at {tmp_path / 'missing'} (the app's install has "
                             "not run)"}]
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "empty")],
                   check=True)
    done, found, _ = red_doctor(env_for(bins, "rtx4090"), tmp_path / "empty")
    got = verdicts(found)
    assert done.returncode == 1
    assert got["torch"] == "fail" and got["onnxruntime"] == "fail"
    assert "No module named 'torch'" in found["problems"][0]


def test_the_table_for_a_person(venvs, bins):
    done = subprocess.run([str(TOOLS / "red-doctor"), "--venv", str(venvs["up-pin"])],
                          capture_output=True, text=True, env=env_for(bins, "rtx4090"),
                          timeout=60, check=False)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0] == ("doctor: NVIDIA GeForce RTX 4090 (sm 8.9, driver 550.127.05, CUDA "
                        "12.4); upstream; the app cannot run: ort IO binding: RuntimeError: "
                        "Error when binding input: There's no data transfer registered for "
                        "copying tensors from Device:[DeviceType:1 MemoryType:0 DeviceId:0] to "
                        "Device:[DeviceType:0 MemoryType:0 DeviceId:0] (onnxruntime-gpu 1.20 in "
                        "a venv: upstream #64/#104): face detection fails")
    assert "  OK   torch arch         sm 8.9 runs torch's sm_86 (binary compatible)" in lines
    assert any(line.startswith("  FAIL ort IO binding     RuntimeError: Error when binding")
               for line in lines)
    assert lines[-1].startswith("problem: ort IO binding: ")


FFMPEG = r"""#!/usr/bin/env python3
import os, sys
state = os.environ.get("RED_FAKE_NVENC", "ok")
if "-encoders" in sys.argv:
    print(" V....D libx264   libx264 H.264")
    if state != "absent":
        print(" V....D hevc_nvenc   NVIDIA NVENC hevc encoder (codec hevc)")
    sys.exit(0)
if state == "ok":
    sys.exit(0)
print("[hevc_nvenc @ 0x55d0c0] Cannot load libnvidia-encode.so.1", file=sys.stderr)
print("Error while opening encoder - maybe incorrect parameters", file=sys.stderr)
sys.exit(1)
"""


@pytest.mark.parametrize(("state", "verdict", "words"), [
    ("ok", "ok", "ffmpeg encoded a frame with hevc_nvenc"),
    ("absent", "warn", "ffmpeg has no hevc_nvenc encoder"),
    ("broken", "warn", "maybe incorrect parameters (the container needs "
                       "NVIDIA_DRIVER_CAPABILITIES with video, or all)"),
])
def test_nvenc_when_the_flavor_records_with_it(state, verdict, words, tmp_path, venvs, bins):
    (tmp_path / "ffmpeg").write_text(FFMPEG)
    (tmp_path / "ffmpeg").chmod(0o755)
    env = {**env_for(bins, "rtx5090-580", path=str(tmp_path)), "RED_FAKE_NVENC": state}
    done, found, _ = red_doctor(env, venvs["fu-cu13"])
    nvenc = found["app"][-1]
    assert nvenc["name"] == "NVENC" and nvenc["verdict"] == verdict
    assert words in nvenc["reason"]
    assert done.returncode == 0  # recording is all NVENC is for: the app runs


# -- the diagnostic notebook's GPU cell calls the doctor ---------------------------------------

NOTEBOOK = ROOT / "files/notebooks/notebooks/check_visomaster_and_gpu.ipynb"
CELLS = ("check-visomaster-and-01", "check-visomaster-and-07")


@pytest.mark.parametrize(("key", "build", "lines"), [
    ("none", "up-red", ["nvidia-smi: not installed: no NVIDIA driver is exposed to this container",
                        "GPU:     none (nvidia-smi is not installed: no NVIDIA driver here)",
                        "  -    torch arch       no GPU to match torch's arch list against",
                        "GPU: no GPU. This box has no usable NVIDIA GPU: VisoMaster will not run "
                        "on it."]),
    ("rtx4090", "up-red", ["Flavor:  upstream (NVIDIA GeForce RTX 4090 (compute capability 8.9) "
                           "on driver 550.127.05 (CUDA 12.4): upstream runs on it)",
                           "  OK   ort IO binding   a GPU IO-binding round trip ran",
                           "The app can run: no check failed."]),
    ("rtx5090-580", "up-pin", ["  FAIL torch arch       torch 2.4.1+cu124 has kernels for sm_50 "
                               "sm_60 sm_61 sm_70 sm_75 sm_80 sm_86 sm_90 only; this GPU is "
                               "sm_120: the app crashes building its window (choose the flavor "
                               "for this GPU)",
                               "The app cannot run:"]),
])
def test_the_notebooks_gpu_cell_shows_the_doctors_table(key, build, lines, tmp_path, venvs,
                                                        bins):
    notebook = json.loads(NOTEBOOK.read_text())
    code = {cell["id"]: "".join(cell["source"]) for cell in notebook["cells"]}
    assert "PROBE" not in code[CELLS[1]] and "import torch" not in code[CELLS[1]]
    # /opt/red/bin/red-doctor, as the box links it: here the test venv's, on a stand-in venv.
    doctor_link = tmp_path / "red-doctor"
    doctor_link.write_text(f'#!/bin/sh\nexec {TOOLS / "red-doctor"} --venv {venvs[build]} "$@"\n')
    doctor_link.chmod(0o755)
    script = "\n".join(code[cell] for cell in CELLS).replace(
        'Path("/opt/red/bin/red-doctor")', f"Path({str(doctor_link)!r})")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env_for(bins, key), timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    for line in lines:
        assert line in done.stdout.splitlines(), done.stdout


# -- every GPU x flavor x build: the doctor's verdict is what the stand-in app did ---------------

_NVIDIA_SMI: dict[str, tuple] = {}  # the stand-in nvidia-smi's answer per GPU, asked once


@pytest.mark.parametrize("build", standin_builds.BUILDS)
@pytest.mark.parametrize("key", fake_gpus.EXPECTED)
def test_every_verdict_matches_what_the_build_does(key, build, venvs, bins, monkeypatch):
    """The doctor's report (doctor.report, in this process, each probe once) for each flavor,
    against torch itself in that venv (bench/gpu_check.py's rules): the app can run exactly
    when torch's matmul ran, onnxruntime bound on CUDA and a flavor was chosen."""
    for name, value in env_for(bins, key).items():
        monkeypatch.setenv(name, value)
    found_gpu = _NVIDIA_SMI[key] if key in _NVIDIA_SMI else _NVIDIA_SMI.setdefault(
        key, gpu.probe(10))
    probed = checks.probe(str(venvs[build]), found_gpu[0], 10)
    monkeypatch.setattr(gpu, "probe", lambda _timeout: found_gpu)
    monkeypatch.setattr(checks, "probe", lambda *_: probed)
    torch = gpu_check.ask_torch(10, str(venvs[build] / "bin" / "python"))
    for flavor in ("auto", *flavors.FLAVORS):
        monkeypatch.setenv("VISOMASTER_FLAVOR", flavor)
        found = doctor.report(10, str(venvs[build]))
        wrong = gpu_check.wrong_verdicts(found, torch)
        lie = build == "liar" and found_gpu[0] and found_gpu[0].compute_capability == "12.0"
        if lie:
            assert wrong and wrong[0].startswith("torch arch: the arch check says ok"), wrong
        else:
            assert wrong == [], (flavor, wrong)
        ort = (found["facts"] or {}).get("onnxruntime") or {}
        runs = (found["gpu"] is not None and "matmul_error" not in torch
                and ort.get("iobinding") == "ok" and found["flavor"]["chosen"] is not None)
        assert found["ok"] is runs, (flavor, found["problems"])


# -- bench/gpu_check.py (make gpu-check) -------------------------------------------------------

def gpu_check_run(venv: Path, env: dict):
    done = subprocess.run([str(venv / "bin" / "python"), str(ROOT / "bench" / "gpu_check.py"),
                           "--timeout", "10"], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return done, json.loads(done.stdout.splitlines()[-1])


def test_gpu_check_on_a_machine_without_a_gpu_reports_it_cleanly(venvs, bins):
    env = {"PATH": str(bins["bare"]), "LANG": "C.UTF-8"}
    done, found = gpu_check_run(venvs["up-red"], env)
    assert done.returncode == 0, done.stdout
    assert found["report"]["gpu"] is None and found["wrong"] == []
    assert "doctor: no GPU; upstream; the app cannot run: nvidia-smi is not installed" \
        in done.stdout
    assert "torch here: 2.4.1+cu124 sees no GPU" in done.stdout
    assert "gpu-check: every verdict agrees with torch" in done.stdout


@pytest.mark.parametrize(("key", "build", "code", "words"), [
    ("rtx4090", "up-red", 0, "every verdict agrees with torch"),
    # The app cannot run there, and the doctor says so: its verdicts are right.
    ("rtx5090-580", "up-red", 0, "every verdict agrees with torch"),
    ("rtx4090", "fu-pypi", 0, "every verdict agrees with torch"),
    # A build whose arch list lies: the doctor's arch check is wrong, the bench says so.
    ("rtx5090-580", "liar", 1, "WRONG VERDICT: torch arch: the arch check says ok but the "
                               "matmul failed: RuntimeError: CUDA error: no kernel image"),
])
def test_gpu_check_against_the_stand_in_builds(key, build, code, words, venvs, bins):
    done, found = gpu_check_run(venvs[build], env_for(bins, key))
    assert done.returncode == code, done.stdout
    assert words in done.stdout
    assert found["report"]["gpu"]["name"] == fake_gpus.GPUS[key][0]
    assert found["report"]["venv"] == str(venvs[build])  # this Python's own prefix


def test_gpu_check_says_when_the_doctor_misses_a_gpu_torch_sees(venvs, bins):
    # No nvidia-smi on PATH, yet torch sees an RTX 4090.
    done, found = gpu_check_run(venvs["up-red"], env_for(bins, "none") | {
        "RED_FAKE_GPU": "rtx4090"})
    assert done.returncode == 1
    assert found["wrong"] == ["torch sees NVIDIA GeForce RTX 4090 (sm 8.9), but the doctor says "
                              "no GPU: nvidia-smi is not installed: no NVIDIA driver here"]


def test_gpu_check_without_torch_has_nothing_to_check_against(tmp_path, bins):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")],
                   check=True)
    done, found = gpu_check_run(tmp_path / "bare", env_for(bins, "rtx4090"))
    assert done.returncode == 2
    assert "gpu-check: nothing to check against: torch does not import here" in done.stdout
    assert "No module named 'torch'" in found["torch"]["error"]


def test_gpu_check_makes_a_venv_of_a_python_whose_prefix_has_no_bin_python(tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "usr"))
    venv = gpu_check.this_python_as_venv(str(tmp_path / "scratch"))
    assert venv == str(tmp_path / "scratch")
    assert os.path.samefile(tmp_path / "scratch" / "bin" / "python", sys.executable)


def test_make_gpu_check_runs_the_script():
    # (Under `make test` a nested make names its directory unless told not to.)
    done = subprocess.run(["make", "-n", "--no-print-directory", "gpu-check"],
                          capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "python3 bench/gpu_check.py"
