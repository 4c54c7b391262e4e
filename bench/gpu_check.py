#!/usr/bin/env python3
"""
red-doctor's GPU logic, run for real on this machine, against what torch does here.

    make gpu-check                              # = python3 bench/gpu_check.py
    python3 bench/gpu_check.py [--timeout S] [--json]

For a bare Linux machine with an NVIDIA GPU, its driver and a Python with PyTorch (onnxruntime
too when it is there); no network, nothing installed. Copy this checkout's ``bench/`` and
``box/src/`` there (``tar -c bench box/src | ssh gpu tar -x``: a few hundred KB, no wheels) and
run it with the Python that has torch. The box library is not installed: this script (a
standalone bench tool, outside the library) puts ``box/src`` on its own ``sys.path``; the library
itself never touches ``sys.path``.

It runs the doctor's report (``redbox.app.doctor.report``: nvidia-smi through ``gpu.probe``,
``flavors.choose``, the app venv's probe ``checks.PROBE`` and its ``verdicts``) with this Python's
own environment as the app venv (``sys.prefix`` when its ``bin/python`` is this interpreter, else
a temporary directory whose ``bin/python`` links to it). Then it asks torch itself, in a child of
its own (bounded): is CUDA available, the device's name and compute capability, its arch list,
and a matmul of another shape whose sum it checks. A verdict that disagrees with torch is wrong:

- torch sees a GPU and the doctor says there is none; nvidia-smi and torch name another compute
  capability; the arch list the doctor read without a GPU is not torch's own;
- torch's matmul ran (and summed right) while the doctor fails torch, its arch, the driver's
  CUDA or the matmul; the matmul failed with "no kernel image" while the arch check says ok, or
  with "driver ... too old" while the driver check says ok; the app "can run" while it failed;
- no GPU, and a GPU check that does not skip.

Prints the doctor's table, torch's own answers and each wrong verdict, then one JSON object.
Exit status: 0 every verdict agrees with torch, 1 a wrong verdict, 2 nothing to check against
(torch does not import in this Python).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

BOX_SRC = Path(__file__).resolve().parent.parent / "box" / "src"
sys.path.insert(0, str(BOX_SRC))

from redbox.app import checks, doctor  # noqa: E402 - box/src must be on sys.path first
from redbox.app.gpu import run  # noqa: E402

# Run by this Python: what torch itself says, one JSON line.
TORCH = r"""
import json, warnings
warnings.simplefilter("ignore")
out = {}
try:
    import torch
except Exception as error:
    print(json.dumps({"error": f"{type(error).__name__}: {error}"[:400]}))
    raise SystemExit(0)
out["version"] = torch.__version__
try:
    out["available"] = bool(torch.cuda.is_available())
    if out["available"]:
        out["name"] = torch.cuda.get_device_name(0)
        out["capability"] = "%d.%d" % tuple(torch.cuda.get_device_capability(0))
        out["archs"] = list(torch.cuda.get_arch_list())
    a = torch.ones((16, 16), device="cuda")
    total = float((a @ a).sum().item())
    out["matmul"] = total
    if total != 16.0 ** 3:
        out["matmul_error"] = f"a 16x16 matmul of ones summed to {total}, not 4096"
except Exception as error:
    out["matmul_error"] = f"{type(error).__name__}: {error}"[:400]
print(json.dumps(out))
"""
GPU_CHECKS = ("torch arch", "driver CUDA", "torch on GPU", "onnxruntime", "ort IO binding")


def ask_torch(timeout: float, python: str = sys.executable) -> dict:
    """What torch says in a child of this Python (bounded)."""
    code, output = run([python, "-c", TORCH], timeout)
    found = checks.last_object(output)
    if found is not None:
        return found
    said = (output.strip().splitlines() or ["no output"])[-1]
    return {"error": f"the torch check did not answer (exit {code}): {said[:200]}"}


def wrong_verdicts(report: dict, torch: dict) -> list[str]:
    """Each verdict of the doctor's ``report`` that what ``torch`` did here contradicts."""
    checks = {check["name"]: check["verdict"] for check in report["app"]}
    gpu, facts = report["gpu"], report.get("facts") or {}
    wrong = [f"{name}: verdict {verdict!r} is not ok/warn/fail/skip"
             for name, verdict in checks.items() if verdict not in ("ok", "warn", "fail", "skip")]
    if "error" in torch:
        return wrong
    if gpu is None:
        if torch.get("available"):
            wrong.append(f"torch sees {torch.get('name')} (sm {torch.get('capability')}), but "
                         f"the doctor says no GPU: {report.get('gpu_problem')}")
        wrong += [f"{name}: no GPU, yet the verdict is {checks[name]!r}, not 'skip'"
                  for name in GPU_CHECKS if checks.get(name, "skip") != "skip"]
        return wrong
    if torch.get("available"):
        if torch.get("capability") != gpu["compute_capability"]:
            wrong.append(f"nvidia-smi says compute capability {gpu['compute_capability']}, "
                         f"torch says {torch.get('capability')}")
        archs = (facts.get("torch") or {}).get("archs") or []
        if archs and torch.get("archs") and archs != torch["archs"]:
            wrong.append(f"the arch list read without a GPU ({' '.join(archs)}) is not torch's "
                         f"own ({' '.join(torch['archs'])})")
    error = torch.get("matmul_error")
    if error is None and "matmul" in torch:
        wrong += [f"{name}: torch's matmul ran here, yet the verdict is 'fail'"
                  for name in ("torch", "torch arch", "driver CUDA", "torch on GPU")
                  if checks.get(name) == "fail"]
        if checks.get("torch on GPU") != "ok":
            wrong.append(f"torch on GPU: torch's matmul ran here, yet the verdict is "
                         f"{checks.get('torch on GPU')!r}")
        return wrong
    error = (error or "no matmul").splitlines()[0]
    if "no kernel image" in error and checks.get("torch arch") == "ok":
        wrong.append(f"torch arch: the arch check says ok but the matmul failed: {error[:120]}")
    if "too old" in error and checks.get("driver CUDA") == "ok":
        wrong.append(f"driver CUDA: the driver check says ok but torch says: {error[:120]}")
    if checks.get("torch on GPU") not in ("fail", None) or report["ok"]:
        wrong.append(f"the doctor says the app can run / the matmul ran, but torch's matmul "
                     f"failed here: {error[:120]}")
    return wrong


def this_python_as_venv(scratch: str) -> str:
    """A directory whose bin/python is this interpreter: sys.prefix, or a link in scratch."""
    python = os.path.join(sys.prefix, "bin", "python")
    try:
        if os.path.samefile(python, sys.executable):
            return sys.prefix
    except OSError:
        pass
    os.makedirs(os.path.join(scratch, "bin"))
    os.symlink(sys.executable, os.path.join(scratch, "bin", "python"))
    return scratch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--timeout", type=float, default=60,
                        help="seconds each probe (nvidia-smi, torch's first CUDA call) may take")
    parser.add_argument("--json", action="store_true", help="only the JSON object")
    args = parser.parse_args(argv)
    scratch = tempfile.mkdtemp(prefix="red-gpu-check-")
    try:
        venv = this_python_as_venv(os.path.join(scratch, "venv"))
        report = doctor.report(args.timeout, venv)
        torch = ask_torch(args.timeout)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    wrong = wrong_verdicts(report, torch)
    if not args.json:
        print(doctor.table(report))
        if "error" in torch:
            print(f"torch here: {torch['error']}")
        else:
            seen = (f"sees {torch.get('name')} (sm {torch.get('capability')}), archs "
                    f"{' '.join(torch.get('archs') or [])}" if torch.get("available")
                    else "sees no GPU")
            ran = ("its matmul ran" if "matmul_error" not in torch
                   else f"its matmul failed: {torch['matmul_error'].splitlines()[0][:160]}")
            print(f"torch here: {torch.get('version')} {seen}; {ran}")
        for line in wrong:
            print(f"WRONG VERDICT: {line}")
        print("gpu-check: " + (f"{len(wrong)} wrong verdict(s)" if wrong else
                               "nothing to check against: torch does not import here"
                               if "error" in torch else "every verdict agrees with torch"))
    print(json.dumps({"report": report, "torch": torch, "wrong": wrong}, sort_keys=True))
    return 1 if wrong else 2 if "error" in torch else 0


if __name__ == "__main__":
    sys.exit(main())
