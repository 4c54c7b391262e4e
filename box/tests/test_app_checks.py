"""
The app venv's checks, pure: which of torch's compiled archs serves a GPU (``arch_fit``), and
the verdicts from literal probe reports (what ``checks.PROBE`` prints in an app venv).
"""

import pytest

from redbox.app import checks, flavors
from redbox.app.gpu import Gpu

UPSTREAM_ARCHS = ["sm_50", "sm_60", "sm_61", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
CU130_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]


@pytest.mark.parametrize(("archs", "capability", "fit"), [
    (UPSTREAM_ARCHS, "8.6", "sm_86"),
    (UPSTREAM_ARCHS, "9.0", "sm_90"),
    (UPSTREAM_ARCHS, "6.1", "sm_61"),
    # A newer minor of the same major runs the older cubin (RTX 4090 on torch 2.4.1).
    (UPSTREAM_ARCHS, "8.9", "sm_86 (binary compatible)"),
    (UPSTREAM_ARCHS, "6.2", "sm_61 (binary compatible)"),
    # Another major does not: RTX 50 and B200 on torch 2.4.1, Kepler anywhere.
    (UPSTREAM_ARCHS, "12.0", None),
    (UPSTREAM_ARCHS, "10.0", None),
    (UPSTREAM_ARCHS, "3.7", None),
    (CU130_ARCHS, "12.0", "sm_120"),
    (CU130_ARCHS, "12.1", "sm_120 (binary compatible)"),
    (CU130_ARCHS, "10.3", "sm_100 (binary compatible)"),
    # CUDA 13 dropped Pascal (Fusion #256).
    (CU130_ARCHS, "6.1", None),
    # PTX is compiled for any newer GPU, when no cubin serves it.
    (["sm_75", "sm_80", "compute_80"], "12.0", "compute_80 PTX (compiled at first use)"),
    (["sm_80", "compute_80"], "8.9", "sm_80 (binary compatible)"),
    (["sm_90", "compute_90"], "8.9", None),
    ([], "8.6", None),
    (UPSTREAM_ARCHS, "", None),
    (UPSTREAM_ARCHS, "8", None),
    (["sm_90a", "garbage", "sm_"], "9.0", None),
])
def test_arch_fit(archs, capability, fit):
    assert checks.arch_fit(archs, capability) == fit


RTX4090 = Gpu("NVIDIA GeForce RTX 4090", "8.9", "550.127.05", "12.4")
RTX5090_575 = Gpu("NVIDIA GeForce RTX 5090", "12.0", "575.57.08", "12.9")
RTX5090_580 = Gpu("NVIDIA GeForce RTX 5090", "12.0", "580.95.05", "13.0")
T4_535 = Gpu("Tesla T4", "7.5", "535.183.01", "12.2")
NO_KERNEL = ("RuntimeError: CUDA error: no kernel image is available for execution on the "
             "device\nCUDA kernel errors might be asynchronously reported at some other API call")
TOO_OLD = ("RuntimeError: The NVIDIA driver on your system is too old (found version 12090). "
           "Please update your GPU driver")
NO_TRANSFER = ("RuntimeError: Error when binding input: There's no data transfer registered "
               "for copying tensors from Device:[DeviceType:1 MemoryType:0 DeviceId:0] to "
               "Device:[DeviceType:0 MemoryType:0 DeviceId:0]")
GPU_LISTED = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
CUDA_LOADED = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def torch(version="2.4.1+cu124", cuda="12.4", archs=UPSTREAM_ARCHS, **run):
    return {"version": version, "cuda": cuda, "archs": archs, **run}


def ort(version="1.22.0", cuda="12.2", loaded=CUDA_LOADED, **more):
    return {"version": version, "available": GPU_LISTED, "package": "onnxruntime-gpu",
            "cuda": cuda, "loaded": loaded, **more}


def report(**parts):
    return {"python": "3.10.12", **parts}


CU124_OK = torch(matmul=512.0)
CU130_OK = torch("2.11.0+cu130", "13.0", CU130_ARCHS, matmul=512.0)

# (probe report, GPU, flavor) -> {check: verdict} (checks left out are not in the result), and
# words the failing (else any) check's reason holds.
CASES = {
    "upstream as pinned on an RTX 4090 (#64)": (
        report(torch=CU124_OK, onnxruntime=ort("1.20.0", error=NO_TRANSFER)),
        RTX4090, flavors.UPSTREAM,
        {"python": "ok", "torch": "ok", "torch arch": "ok", "driver CUDA": "ok",
         "torch on GPU": "ok", "onnxruntime": "ok", "ort IO binding": "fail"},
        "upstream #64/#104"),
    "upstream with Red's override on an RTX 4090": (
        report(torch=CU124_OK, onnxruntime=ort(iobinding="ok")), RTX4090, flavors.UPSTREAM,
        {"python": "ok", "torch": "ok", "torch arch": "ok", "driver CUDA": "ok",
         "torch on GPU": "ok", "onnxruntime": "ok", "ort IO binding": "ok"},
        "Python 3.10.12"),
    "CUDA 12.4 wheels on a 535 driver (CUDA 12.2): minor-version compatibility": (
        report(torch=CU124_OK, onnxruntime=ort(iobinding="ok")), T4_535, flavors.UPSTREAM,
        {"driver CUDA": "ok", "torch arch": "ok"}, "runs torch's CUDA 12.4 and onnxruntime's"),
    "torch 2.4.1 on an RTX 5090": (
        report(torch=torch(matmul_error=NO_KERNEL), onnxruntime=ort(iobinding="ok")),
        RTX5090_580, flavors.FUSION,
        {"torch arch": "fail", "driver CUDA": "ok", "torch on GPU": "fail", "onnxruntime": "ok"},
        "this GPU is sm_120"),
    "CUDA 13 torch on a 575 driver (CUDA 12.9)": (
        report(torch=torch("2.11.0+cu130", "13.0", CU130_ARCHS, matmul_error=TOO_OLD),
               onnxruntime=ort("1.27.0.dev", "13.0", loaded=["CPUExecutionProvider"])),
        RTX5090_575, flavors.FUSION,
        {"torch arch": "ok", "driver CUDA": "fail", "torch on GPU": "fail",
         "onnxruntime": "fail", "ort IO binding": "skip"},
        "torch needs CUDA 13.0, onnxruntime needs CUDA 13.0; the driver 575.57.08 runs CUDA 12.9"),
    "CUDA 13 torch on an RTX 4090's 550 driver": (
        report(torch=torch("2.11.0+cu130", "13.0", CU130_ARCHS, matmul_error=TOO_OLD),
               onnxruntime=ort("1.27.0.dev", "13.0", loaded=["CPUExecutionProvider"])),
        RTX4090, None, {"torch arch": "ok", "driver CUDA": "fail"}, "runs CUDA 12.4 at most"),
    "Fusion with onnxruntime-gpu 1.26.0 from PyPI (a CUDA 12 build)": (
        report(torch=CU130_OK, onnxruntime=ort("1.26.0", "12.8", loaded=["CPUExecutionProvider"])),
        RTX5090_580, flavors.FUSION,
        {"torch arch": "ok", "driver CUDA": "ok", "torch on GPU": "ok", "onnxruntime": "fail",
         "ort IO binding": "skip"},
        "a CUDA 12 build beside torch's CUDA 13"),
    "Fusion with onnxruntime's CUDA 13 build": (
        {**report(torch=CU130_OK, onnxruntime=ort("1.27.0.dev", "13.0", iobinding="ok")),
         "python": "3.12.3"}, RTX5090_580, flavors.FUSION,
        {"python": "ok", "torch": "ok", "torch arch": "ok", "driver CUDA": "ok",
         "torch on GPU": "ok", "onnxruntime": "ok", "ort IO binding": "ok"}, "Python"),
    "the real CPU package of onnxruntime: CUDA asked, CPU given": (
        report(torch=CU124_OK, onnxruntime={
            "version": "1.32.0", "available": ["AzureExecutionProvider", "CPUExecutionProvider"],
            "package": "onnxruntime", "loaded": ["CPUExecutionProvider"]}),
        RTX4090, flavors.UPSTREAM,
        {"driver CUDA": "ok", "onnxruntime": "fail", "ort IO binding": "skip"},
        "CPU-only package (onnxruntime, not onnxruntime-gpu)"),
    "a CPU-only torch": (
        report(torch=torch("2.4.1+cpu", None, [],
                           matmul_error="AssertionError: Torch not compiled with CUDA enabled"),
               onnxruntime=ort(iobinding="ok")),
        RTX4090, flavors.UPSTREAM,
        {"torch": "fail", "torch arch": "skip", "driver CUDA": "ok", "torch on GPU": "fail"},
        "CPU-only build: the app needs CUDA"),
    "no GPU: every GPU check skips": (
        report(torch=torch(), onnxruntime=ort(loaded=["CPUExecutionProvider"])),
        None, flavors.UPSTREAM,
        {"python": "ok", "torch": "ok", "torch arch": "skip", "driver CUDA": "skip",
         "torch on GPU": "skip", "onnxruntime": "skip", "ort IO binding": "skip"},
        "Python 3.10.12"),
    "neither imports": (
        report(torch_error="ModuleNotFoundError: No module named 'torch'",
               onnxruntime_error="ImportError: libcudnn.so.9: cannot open shared object\nmore"),
        RTX4090, flavors.UPSTREAM,
        {"python": "ok", "torch": "fail", "driver CUDA": "skip", "onnxruntime": "fail"},
        "No module named 'torch'"),
    "a session that does not load": (
        report(torch=CU124_OK, onnxruntime={"version": "1.22.0", "available": GPU_LISTED,
                                            "error": "InvalidProtobuf: [ONNXRuntimeError]"}),
        RTX4090, flavors.UPSTREAM, {"onnxruntime": "fail"}, "a session did not load"),
    "a Python the flavor is not made for": (
        {**report(torch=CU124_OK, onnxruntime=ort(iobinding="ok")), "python": "3.12.3"},
        RTX4090, flavors.UPSTREAM, {"python": "warn"}, "upstream is made for 3.10, 3.11"),
    "a driver whose CUDA is not known": (
        report(torch=CU124_OK, onnxruntime=ort(iobinding="ok")),
        Gpu("Tesla P100", "6.0", "470.256.02", ""), flavors.UPSTREAM, {"driver CUDA": "warn"},
        "the CUDA it runs is not known"),
}


@pytest.mark.parametrize("case", CASES)
def test_verdicts(case):
    found, gpu, flavor, expected, words = CASES[case]
    result = checks.verdicts(found, gpu, flavor)
    got = {check["name"]: check["verdict"] for check in result}
    assert {name: got.get(name) for name in expected} == expected, result
    assert len(got) == len(result)  # one check a name
    for check in result:
        assert check["verdict"] in ("ok", "warn", "fail", "skip")
        assert check["reason"] and "\n" not in check["reason"], check
    failed = [check for check in result if check["verdict"] in ("fail", "warn")]
    assert words in " | ".join(check["reason"] for check in failed or result), result


def test_a_probe_report_that_does_not_read_is_a_failed_check(tmp_path, monkeypatch):
    monkeypatch.setattr(checks, "probe", lambda *_: ({"torch": {"cuda": "12.4"}}, ""))
    found, result = checks.run_checks(str(tmp_path), RTX4090, None)
    assert found == {"torch": {"cuda": "12.4"}}
    assert [check["verdict"] for check in result] == ["fail"]
    assert "did not read: KeyError" in result[0]["reason"]


def test_no_app_venv_is_one_failed_check(tmp_path):
    found, result = checks.run_checks(str(tmp_path / "venv"), None, flavors.UPSTREAM)
    assert found is None
    assert result == [{"name": "app venv", "verdict": "fail", "reason":
                       f"no app venv at {tmp_path / 'venv'} (the app's install has not run)"}]


def test_a_data_centre_gpu_has_no_nvenc_and_no_gpu_none_at_all():
    h100 = Gpu("NVIDIA H100 80GB HBM3", "9.0", "570.133.20", "12.8")
    assert checks.nvenc(h100, 1)["verdict"] == "warn"
    assert checks.nvenc(None, 1)["verdict"] == "skip"


def test_the_identity_model_is_a_protobuf_of_the_expected_fields():
    model = checks.IDENTITY_MODEL
    # ir_version 7, then the graph (field 7), then opset_import (field 8) with version 13.
    assert model.startswith(b"\x08\x07\x3a")
    assert b"Identity" in model and b"red-doctor" in model
    assert model.endswith(b"\x42\x04\x0a\x00\x10\x0d")
