"""
The app venv's checks: what VisoMaster will meet when it starts, read from the venv itself.

A probe (``PROBE``, run by the app venv's Python, bounded) reports torch's build (version, the
CUDA it was built for, its compiled arch list: read without a GPU), a tiny matmul on the GPU,
onnxruntime's version, package and CUDA build, the providers a real session gets when it asks
for CUDA as the app does (and TensorRT where listed: ``get_available_providers()`` lists what
was compiled in, not what loads), and one IO-binding round trip on the GPU, as the app's face
detector does (upstream #64/#104). ``verdicts`` turns it into checks (the driver's CUDA against
both builds among them); ffmpeg's NVENC encoders are probed when the flavor records with them.

A verdict is ok, warn (the app runs, something is off), fail (the app will not work) or skip
(nothing to check here: no GPU, no venv).
"""

from __future__ import annotations

import json
import os

from redbox.app.gpu import Gpu, run, version_tuple

# A one-node ONNX model (y = Identity(x), float[1], IR 7, opset 13), serialized by hand: the
# box library stays stdlib-only and the app venv may lack the onnx package.


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _tensor_info(name: str) -> bytes:
    shape = _field(2, _field(1, _field(1, 1)))  # shape { dim { dim_value: 1 } }
    tensor = _field(1, 1) + shape  # elem_type FLOAT
    return _field(1, name.encode()) + _field(2, _field(1, tensor))


IDENTITY_MODEL = (
    _field(1, 7)  # ir_version
    + _field(7, _field(1, _field(1, b"x") + _field(2, b"y") + _field(4, b"Identity"))
             + _field(2, b"red-doctor") + _field(11, _tensor_info("x"))
             + _field(12, _tensor_info("y")))
    + _field(8, _field(1, b"") + _field(2, 13))  # opset_import { version: 13 }
)

# Run by the app venv's Python: one JSON line. Each part reports its own error.
PROBE = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
gpu = sys.argv[1] == "gpu"
out = {"python": "%d.%d.%d" % sys.version_info[:3]}
try:
    import torch
    archs = []
    try:
        archs = torch._C._cuda_getArchFlags().split()
    except Exception:
        archs = list(getattr(torch.cuda, "get_arch_list", lambda: [])())
    out["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda, "archs": archs}
    if gpu:
        try:
            a = torch.ones((8, 8), device="cuda")
            out["torch"]["matmul"] = float((a @ a).sum().item())
        except Exception as error:
            out["torch"]["matmul_error"] = f"{type(error).__name__}: {error}"[:400]
except Exception as error:
    out["torch_error"] = f"{type(error).__name__}: {error}"[:400]
try:
    import onnxruntime as ort
    model = bytes.fromhex(sys.argv[2])
    info = {"version": ort.__version__, "available": list(ort.get_available_providers())}
    try:
        info["build"] = ort.get_build_info()
    except Exception:
        pass
    try:
        from onnxruntime.capi import build_and_package_info as package
        info["package"] = getattr(package, "package_name", None)
        info["cuda"] = getattr(package, "cuda_version", None)
    except Exception:
        pass
    # As the app does: CUDA whatever the package lists (a CPU-only one warns and gives CPU).
    asked = [p for p in ("TensorrtExecutionProvider",) if p in info["available"]]
    asked += ["CUDAExecutionProvider", "CPUExecutionProvider"]
    info["asked"] = asked
    try:
        session = ort.InferenceSession(model, providers=asked)
        info["loaded"] = list(session.get_providers())
        if gpu and "CUDAExecutionProvider" in info["loaded"]:
            import numpy
            binding = session.io_binding()
            value = ort.OrtValue.ortvalue_from_numpy(numpy.ones(1, numpy.float32), "cuda", 0)
            binding.bind_input("x", "cuda", 0, numpy.float32, [1], value.data_ptr())
            binding.bind_output("y", "cuda")
            session.run_with_iobinding(binding)
            info["iobinding"] = "ok"
    except Exception as error:
        info["error"] = f"{type(error).__name__}: {error}"[:400]
    out["onnxruntime"] = info
except Exception as error:
    out["onnxruntime_error"] = f"{type(error).__name__}: {error}"[:400]
print(json.dumps(out))
"""

# Data-centre GPUs have no NVENC at all.
NO_NVENC = ("A100", "A30", "H100", "H200", "H800", "B200", "B100", "GH200", "GB200")


def probe(venv: str, gpu: Gpu | None, timeout: float) -> tuple[dict | None, str]:
    """The probe's report from the venv's Python, or None and why."""
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        return None, f"no app venv at {venv} (the app's install has not run)"
    code, output = run([python, "-c", PROBE, "gpu" if gpu else "none", IDENTITY_MODEL.hex()],
                       timeout)
    if code is None:
        return None, output or f"{python} is not runnable"
    found = last_object(output)
    if found is not None:
        return found, ""
    said = output.strip().splitlines()[-1:] or ["no output"]
    return None, f"the app venv's Python failed (exit {code}): {said[0][:200]}"


def last_object(output: str) -> dict | None:
    """The last line of ``output`` that is a JSON object (what else a library printed, such
    as onnxruntime's fallback notice, comes around it), or None."""
    for line in reversed(output.splitlines()):
        try:
            found = json.loads(line)
        except ValueError:
            continue
        if isinstance(found, dict):
            return found
    return None


def _check(name: str, verdict: str, reason: str) -> dict:
    return {"name": name, "verdict": verdict, "reason": reason}


def _line(error: object) -> str:
    """An error's first line (CUDA's errors go on for several)."""
    return (str(error).strip().splitlines() or ["?"])[0]


def arch_fit(archs: list[str], capability: str) -> str | None:
    """Which of torch's compiled archs serves this GPU (its own, an older minor of its major,
    or PTX it can JIT), or None."""
    wanted = version_tuple(capability)
    if len(wanted) != 2:
        return None
    major, minor = wanted
    sass = {(int(a[3:-1] or 0), int(a[-1])) for a in archs
            if a.startswith("sm_") and a[3:].isdigit()}
    ptx = {(int(a[8:-1] or 0), int(a[-1])) for a in archs
           if a.startswith("compute_") and a[8:].isdigit()}
    if (major, minor) in sass:
        return f"sm_{major}{minor}"
    older = sorted(m for m in sass if m[0] == major and m[1] <= minor)
    if older:
        return f"sm_{older[-1][0]}{older[-1][1]} (binary compatible)"
    jit = sorted(m for m in ptx if m <= (major, minor))
    if jit:
        return f"compute_{jit[-1][0]}{jit[-1][1]} PTX (compiled at first use)"
    return None


def verdicts(found: dict, gpu: Gpu | None, flavor=None) -> list[dict]:
    """The checks from a probe report (pure: the table tests feed it stand-in reports)."""
    result = [_python_check(str(found.get("python")), flavor)]
    torch = found.get("torch")
    ort = found.get("onnxruntime")
    if torch is None:
        result.append(_check("torch", "fail", f"torch does not import: "
                             f"{_line(found.get('torch_error', 'not installed'))}"))
    else:
        built = torch.get("cuda")
        result.append(_check("torch", "ok" if built else "fail",
                             f"torch {torch['version']} built for CUDA {built}" if built else
                             f"torch {torch['version']} is a CPU-only build: the app needs CUDA"))
        result.append(_arch_check(torch, gpu))
    result.append(_driver_check(torch, ort, gpu))
    if torch is not None:
        result.append(_matmul_check(torch, gpu))
    if ort is None:
        result.append(_check("onnxruntime", "fail", "onnxruntime does not import: "
                             f"{_line(found.get('onnxruntime_error', 'not installed'))}"))
    else:
        result.extend(_ort_checks(ort, gpu, (torch or {}).get("cuda")))
    return result


def _python_check(python: str, flavor) -> dict:
    ours = ".".join(python.split(".")[:2])
    if flavor is not None and ours not in flavor.pythons:
        return _check("python", "warn", f"the app venv runs Python {python}; {flavor.name} is "
                      f"made for {', '.join(flavor.pythons)}")
    return _check("python", "ok", f"the app venv runs Python {python}")


def _arch_check(torch: dict, gpu: Gpu | None) -> dict:
    if gpu is None:
        return _check("torch arch", "skip", "no GPU to match torch's arch list against")
    if not torch.get("cuda"):
        return _check("torch arch", "skip", "a CPU-only torch has no GPU kernels to match")
    archs = torch.get("archs") or []
    fit = arch_fit(archs, gpu.compute_capability)
    if fit:
        return _check("torch arch", "ok", f"sm {gpu.compute_capability} runs torch's {fit}")
    return _check("torch arch", "fail", f"torch {torch['version']} has kernels for "
                  f"{' '.join(archs) or 'no GPU'} only; this GPU is "
                  f"sm_{gpu.compute_capability.replace('.', '')}: the app crashes building its "
                  "window (choose the flavor for this GPU)")


def _too_new(built: tuple[int, ...], runs: tuple[int, ...]) -> bool:
    """Whether a build for CUDA ``built`` cannot run on a driver that runs CUDA ``runs`` at
    most: another major, or a newer CUDA 13 minor (CUDA 12 builds run on any 12.x driver)."""
    return built[0] > runs[0] or (built[0] == runs[0] and built[0] >= 13 and built > runs)


def _driver_check(torch: dict | None, ort: dict | None, gpu: Gpu | None) -> dict:
    if gpu is None:
        return _check("driver CUDA", "skip", "no GPU driver to match the builds against")
    builds = [(name, str(cuda)) for name, cuda in
              (("torch", (torch or {}).get("cuda")), ("onnxruntime", (ort or {}).get("cuda")))
              if version_tuple(str(cuda or ""))]
    runs = version_tuple(gpu.cuda_max)
    if not builds:
        return _check("driver CUDA", "skip", "no CUDA build of torch or onnxruntime to match "
                      f"driver {gpu.driver_version} against")
    if not runs:
        return _check("driver CUDA", "warn", f"driver {gpu.driver_version}: the CUDA it runs "
                      "is not known")
    said = " and ".join(f"{name}'s CUDA {cuda}" for name, cuda in builds)
    old = [f"{name} needs CUDA {cuda}" for name, cuda in builds
           if _too_new(version_tuple(cuda), runs)]
    if old:
        return _check("driver CUDA", "fail", f"{', '.join(old)}; the driver "
                      f"{gpu.driver_version} runs CUDA {gpu.cuda_max} at most")
    return _check("driver CUDA", "ok", f"driver {gpu.driver_version} (CUDA {gpu.cuda_max}) "
                  f"runs {said} builds")


def _matmul_check(torch: dict, gpu: Gpu | None) -> dict:
    if gpu is None:
        return _check("torch on GPU", "skip", "no GPU to run a matmul on")
    if "matmul_error" in torch:
        return _check("torch on GPU", "fail", _line(torch["matmul_error"]))
    if "matmul" in torch:
        return _check("torch on GPU", "ok", "a matmul on the GPU ran")
    return _check("torch on GPU", "fail", "the probe did not try a matmul on the GPU")


GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def _ort_checks(ort: dict, gpu: Gpu | None, torch_cuda: str | None) -> list[dict]:
    version = f"onnxruntime {ort.get('version')}"
    loaded = ort.get("loaded")
    if loaded is None:
        return [_check("onnxruntime", "fail", f"{version}: a session did not load: "
                       f"{_line(ort.get('error'))}")]
    listed = [p for p in ort.get("available", []) if p in GPU_PROVIDERS]
    if gpu is None:
        return [_check("onnxruntime", "skip", f"{version}: no GPU, a session runs on "
                       f"{', '.join(loaded)}"),
                _check("ort IO binding", "skip", "no GPU to bind on")]
    if "CUDAExecutionProvider" not in loaded:
        if "CUDAExecutionProvider" in listed:
            said = "lists " + ", ".join(listed)
            built, beside = version_tuple(str(ort.get("cuda") or "")), version_tuple(
                str(torch_cuda or ""))
            if built and beside and built[0] != beside[0]:
                said += (f" (a CUDA {built[0]} build beside torch's CUDA {beside[0]}: its CUDA "
                         f"{built[0]} libraries are not there)")
        elif ort.get("package") == "onnxruntime":
            said = "is the CPU-only package (onnxruntime, not onnxruntime-gpu)"
        else:
            said = "is a CPU-only build (no CUDA provider)"
        return [_check("onnxruntime", "fail", f"{version} {said}, but a session asking for "
                       f"CUDA got {', '.join(loaded)}: the app would run its models on the CPU"),
                _check("ort IO binding", "skip", "no CUDA session to bind on")]
    out = [_check("onnxruntime", "ok", f"{version}: a session loads {', '.join(loaded)}")]
    if ort.get("iobinding") == "ok":
        out.append(_check("ort IO binding", "ok", "a GPU IO-binding round trip ran"))
    else:
        error = _line(ort.get("error") or "not tried")
        hint = " (onnxruntime-gpu 1.20 in a venv: upstream #64/#104)" \
            if "data transfer" in error else ""
        out.append(_check("ort IO binding", "fail", f"{error}{hint}: face detection fails"))
    return out


def nvenc(gpu: Gpu | None, timeout: float) -> dict:
    """Whether ffmpeg can encode hevc_nvenc here (the flavor's recording)."""
    if gpu is None:
        return _check("NVENC", "skip", "no GPU: recording with hevc_nvenc is not possible")
    if any(word in gpu.name for word in NO_NVENC):
        return _check("NVENC", "warn", f"{gpu.name} has no NVENC (a data-centre GPU): "
                      "recording fails; everything else works")
    code, listed = run(["ffmpeg", "-hide_banner", "-encoders"], timeout)
    if code is None and not listed:
        return _check("NVENC", "warn", "ffmpeg is not installed: recording fails")
    if code is None or "hevc_nvenc" not in listed:
        return _check("NVENC", "warn", "ffmpeg has no hevc_nvenc encoder: recording fails")
    code, said = run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                      "color=size=256x256:duration=0.1", "-c:v", "hevc_nvenc", "-f", "null",
                      "-"], timeout)
    if code == 0:
        return _check("NVENC", "ok", "ffmpeg encoded a frame with hevc_nvenc")
    last = (said.strip().splitlines() or ["no output"])[-1]
    return _check("NVENC", "warn", f"hevc_nvenc failed: {last[:160]} (the container needs "
                  "NVIDIA_DRIVER_CAPABILITIES with video, or all)")


def run_checks(venv: str, gpu: Gpu | None, flavor,
               timeout: float = 20) -> tuple[dict | None, list[dict]]:
    """The probe's report (None when it gave none) and every check of the app venv for this
    GPU and flavor."""
    found, why = probe(venv, gpu, timeout)
    if found is None:
        result = [_check("app venv", "fail", why)]
    else:
        try:
            result = verdicts(found, gpu, flavor)
        except Exception as error:  # a check that breaks is a failed check
            result = [_check("app venv", "fail", f"the probe's report did not read: "
                             f"{type(error).__name__}: {error}")]
    if flavor is not None and flavor.records_with_nvenc:
        result.append(nvenc(gpu, timeout))
    return found, result
