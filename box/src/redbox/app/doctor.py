"""
red-doctor: what the app will meet on this box, each check with a verdict and a one-line reason.
One source of truth for the status page, ``red-provision status``, the boot's summary line and
the diagnostic notebook.

    red-doctor [--json] [--write FILE] [--timeout S] [--venv DIR]

- ``gpu``: nvidia-smi's first GPU (name, compute capability, driver, the CUDA it runs), or null
  and why (no driver, a driver that does not answer, output it cannot read). Each nvidia-smi
  call is bounded.
- ``flavor``: the configured flavor, the one this GPU gets (``redbox.app.flavors.choose``, the
  rule the converge applies) and why.
- ``app``: the checks of the app venv (``redbox.app.checks``: its Python, torch's build and
  arch list against the GPU, the providers onnxruntime really loads, NVENC when the flavor
  records with it), each ``{"name", "verdict": ok|warn|fail|skip, "reason"}``.
- ``venv`` and ``facts``: the app venv and what its Python reported (``checks.PROBE``: torch's
  version, CUDA and arch list, the matmul, onnxruntime's providers), or null when it did not.
- ``problems``: one line per failed check; ``ok``: the app can run.

Exit status 0 when the app can run, 1 when it cannot. ``--write`` also keeps the report (JSON)
in a file the status writer reads; never a traceback: a check that breaks is a failed check.
"""

from __future__ import annotations

import argparse
import json
import sys

from redbox.app import checks, flavors, gpu
from redbox.core import state
from redbox.settings.resolve import box_settings

REPORT_FILE = "/var/lib/red/doctor.json"
VERDICT_MARKS = {"ok": "OK", "warn": "WARN", "fail": "FAIL", "skip": "-"}


def report(timeout: float = 10, venv: str | None = None) -> dict:
    """The doctor's report for this box."""
    settings = box_settings()
    found, problem = gpu.probe(timeout)
    choice = flavors.choose(settings["visomaster_flavor"], found,
                            settings["visomaster_fallback_flavor"], problem)
    flavor = flavors.FLAVORS.get(choice.chosen or "")
    venv = venv or settings["python_app_venv"]
    facts, app = checks.run_checks(venv, found, flavor, timeout=timeout)
    problems = []
    if choice.chosen is None or (found is None and choice.warning):
        problems.append(choice.warning)
    problems += [f"{check['name']}: {check['reason']}" for check in app
                 if check["verdict"] == "fail"]
    return {"gpu": found.as_json() if found else None, "gpu_problem": problem,
            "flavor": choice.as_json(), "venv": venv, "facts": facts, "app": app,
            "problems": problems, "ok": not problems}


def summary(found: dict) -> str:
    """One line for the container log."""
    card = found["gpu"]
    where = (f"{card['name']} (sm {card['compute_capability']}, driver "
             f"{card['driver_version']}, CUDA {card['cuda_max']})" if card else "no GPU")
    flavor = found["flavor"]["chosen"] or "no flavor"
    verdict = "the app can run" if found["ok"] else f"the app cannot run: {found['problems'][0]}"
    return f"doctor: {where}; {flavor}; {verdict}"


def table(found: dict) -> str:
    """The report for a person."""
    lines = [summary(found), f"flavor: {found['flavor']['reason']}"]
    for check in found["app"]:
        lines.append(f"  {VERDICT_MARKS.get(check['verdict'], '?'):4} {check['name']:<18} "
                     f"{check['reason']}")
    lines += [f"problem: {line}" for line in found["problems"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="red-doctor", description=__doc__.split("\n")[1])
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument("--write", metavar="FILE", help=f"also keep it there ({REPORT_FILE})")
    parser.add_argument("--summary", action="store_true", help="one line (the container log's)")
    parser.add_argument("--timeout", type=float, default=20,
                        help="seconds each probe (nvidia-smi, the app venv's checks) may take")
    parser.add_argument("--venv", help="the app venv (default: the python_app_venv setting)")
    args = parser.parse_args(argv)
    found = report(args.timeout, args.venv)
    if args.write:
        try:
            state.write(args.write, found)
        except OSError as error:
            print(f"red-doctor: cannot write {args.write}: {error.strerror}", file=sys.stderr)
    print(json.dumps(found, sort_keys=True) if args.json
          else summary(found) if args.summary else table(found))
    return 0 if found["ok"] else 1
