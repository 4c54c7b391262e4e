"""
The desktop icon's launcher (files/visomaster/opt/red/bin/red-visomaster-start) with red-doctor's
report: the real red-status and red-progress of the test venv, stand-in xmessage and
supervisorctl that record how they were called.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from redbox.app import flavors
from redbox.app.gpu import Gpu
from tests.conftest import ROOT, TOOLS

LAUNCHER = ROOT / "files/visomaster/opt/red/bin/red-visomaster-start"
RECORD = """#!/bin/sh
printf '%s\\n' "$@" > "{path}.tmp" && mv "{path}.tmp" "{path}"
"""


def report(card: Gpu | None, failed: list[str]) -> dict:
    choice = flavors.choose("auto", card, "upstream", "nvidia-smi not found")
    found = ([choice.warning] if choice.chosen is None or card is None else []) + failed
    return {"gpu": card.as_json() if card else None, "gpu_problem": "",
            "flavor": choice.as_json(), "venv": "/opt/red/venv", "facts": None,
            "app": [{"name": line.split(":")[0], "verdict": "fail", "reason": line}
                    for line in failed],
            "problems": found, "ok": not found}


RTX5090_575 = Gpu("NVIDIA GeForce RTX 5090", "12.0", "575.57.08", "12.9")
RTX4090 = Gpu("NVIDIA GeForce RTX 4090", "8.9", "550.144.03", "12.4")


def click(tmp_path, found: dict | None,
          says: bool = True) -> tuple[int, list[str] | None, list[str] | None]:
    """Run the launcher: its exit status, and what xmessage (when it ``says``) and
    supervisorctl were given."""
    stubs, red_bin = tmp_path / "stubs", tmp_path / "red-bin"
    stubs.mkdir()
    red_bin.mkdir()
    for name in ("xmessage", "supervisorctl"):
        (stubs / name).write_text(RECORD.format(path=tmp_path / f"{name}.args"))
        (stubs / name).chmod(0o755)
    for name in ("red-status", "red-progress"):
        (red_bin / name).symlink_to(TOOLS / name)
    if found is not None:
        (tmp_path / "doctor.json").write_text(json.dumps(found))
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "RED_BIN": str(red_bin),
           "RED_DOCTOR_REPORT": str(tmp_path / "doctor.json"),
           "RED_VISOMASTER_STATUS": str(tmp_path / "visomaster-status.json"),
           "RED_VISOMASTER_CRASHES": str(tmp_path / "crashes")}
    code = subprocess.run(["bash", LAUNCHER], env=env, timeout=60, check=False).returncode
    # xmessage runs in the background: give it the time to say what it was given.
    deadline = time.monotonic() + (5 if says else 0.5)
    while not (tmp_path / "xmessage.args").exists() and time.monotonic() < deadline:
        time.sleep(0.1)

    def said(name):
        path = tmp_path / f"{name}.args"
        return path.read_text().splitlines() if path.exists() else None

    return code, said("xmessage"), said("supervisorctl")


def test_a_gpu_no_flavor_runs_on_is_explained_and_nothing_is_started(tmp_path):
    found = report(RTX5090_575, [])
    code, message, started = click(tmp_path, found)
    assert code == 1 and started is None
    assert message[:3] == ["-center", "-title", "VisoMaster cannot run on this box"]
    text = "\n".join(message[3:])
    assert found["flavor"]["warning"] in text
    assert "Rent a host whose driver runs CUDA 13" in text and "red-doctor" in text


@pytest.mark.parametrize("card", [RTX4090, None])
def test_a_failed_check_is_shown_and_the_app_starts_anyway(tmp_path, card):
    found = report(card, ["ort IO binding: no data transfer registered: face detection fails"])
    code, message, started = click(tmp_path, found)
    assert code == 0 and started == ["start", "visomaster"]
    assert message[:3] == ["-center", "-title", "VisoMaster may not run on this box"]
    text = "\n".join(message[3:])
    assert all(line in text for line in found["problems"])
    assert ("VisoMaster needs an NVIDIA GPU" in text) == (card is None)


@pytest.mark.parametrize("found", [None, report(RTX4090, [])])
def test_no_report_or_one_that_says_the_app_runs_just_starts_it(tmp_path, found):
    code, message, started = click(tmp_path, found, says=False)
    assert code == 0 and started == ["start", "visomaster"] and message is None
