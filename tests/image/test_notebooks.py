"""
The diagnostic notebooks, executed with nbclient inside a running box (the Jupyter venv has
nbclient and the python3 kernel) against its real supervisor, logs and markers: every cell
succeeds and the outputs name the real programs and logs. Then a user's edited copy: kept,
and moved aside (never lost) when Red ships a different version.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess

import pytest

from tests.boxes import (
    PROGRAMS,
    TOKEN,
    Box,
    ports,
    remove,
    service_env,
    start_box,
    wait_onstart,
    wait_ready,
)
from tests.fixtures.notebook_runner import RUNNER

NB_PORTS = ports(25520)
FIND = "/notebooks/find_provisioning_script.ipynb"
APP = "/notebooks/check_visomaster_and_gpu.ipynb"
RECORD = "/var/lib/red/notebooks/find_provisioning_script.ipynb.sha256"
SHIPPED = "/opt/red/deploy/files/notebooks/notebooks/find_provisioning_script.ipynb"


def execute(box: Box, path: str, replace: dict[str, str] | None = None) -> list[str]:
    result = subprocess.run(
        ["podman", "exec", "-i", box.name, "/opt/red/jupyter/bin/python", "-", path,
         json.dumps(replace or {})],
        input=RUNNER, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def nb_box():
    box = start_box("red-prov-nb", service_env(NB_PORTS), NB_PORTS)
    try:
        wait_ready(box, TOKEN)
        assert wait_onstart(box)["status"] == "ok"
        yield box
    finally:
        remove(box.name)


def sha256(box: Box, path: str) -> str:
    return box.sh(f"sha256sum {path}").split()[0]


def test_find_provisioning_script_names_the_real_scripts_programs_and_logs(nb_box):
    nb_box.sh("echo \"$(date -u +%Y-%m-%dT%H:%M:%SZ) red-test: ERROR: injected by the notebook "
              "test\" >> /logs/provisioning.log")
    before = sha256(nb_box, FIND)
    cells = execute(nb_box, FIND)
    text = "\n".join(cells)
    # 1. scripts
    assert "PROVISIONING_SCRIPT: (not set)" in text
    assert "exists   /vast_ai_provisioning_script.sh" in text
    assert "exists   /src/provisioning_script.sh" in text
    assert "missing  /VisoMaster/src/provisioning_script.sh" in text
    assert "The boot runs: /vast_ai_provisioning_script.sh (the first that exists)" in text
    # 2. markers
    assert "Converge (red-provision run): completed: the last converge succeeded" in text
    assert "On-start flow (red-onstart, entrypoint mode): ok" in text
    assert "ran: /vast_ai_provisioning_script.sh, exit code 0" in text
    # 3. logs, errors picked out
    for log in ("startup", "provisioning", "converge", *PROGRAMS):
        assert f"== /logs/{log}.log" in text, log
    assert "  ! " in text and "ERROR: injected by the notebook test" in text
    # 4. supervisor
    for program in PROGRAMS:
        assert re.search(rf"^{program} +RUNNING +pid \d+.*log: /logs/{program}\.log$", text,
                         re.M), program
    assert "Health check: healthy" in text
    # 5. nothing started or restarted unless asked
    assert "Nothing done: set PROGRAM above" in cells[-1]
    # Executing it changed nothing on disk.
    assert sha256(nb_box, FIND) == before


def test_the_control_cell_restarts_the_named_program(nb_box):
    before = nb_box.program_pids()
    cells = execute(nb_box, FIND, {'PROGRAM = ""': 'PROGRAM = "novnc"'})
    assert "supervisorctl restart novnc: novnc: stopped\nnovnc: started" in cells[-1]
    assert "The last lines of /logs/novnc.log:" in cells[-1]
    after = nb_box.program_pids()
    assert after["novnc"] != before["novnc"]
    assert {name: pid for name, pid in after.items() if name != "novnc"} == \
        {name: pid for name, pid in before.items() if name != "novnc"}
    wait_ready(nb_box, TOKEN)


def test_app_notebook_says_plainly_what_is_not_present_and_that_there_is_no_gpu(nb_box):
    text = "\n".join(execute(nb_box, APP))
    assert "VisoMaster checkout: not present (/workspace/VisoMaster does not exist)" in text
    assert "Backups beside it: none" in text
    assert "Models: not present (/var/lib/red/models-state.json does not exist" in text
    assert "nvidia-smi: not installed" in text
    # The GPU and app checks are red-doctor's report (its --json), not a probe of the notebook's.
    assert "GPU:     none (nvidia-smi is not installed: no NVIDIA driver here)" in text
    assert "red-doctor did not answer" not in text
    assert "GPU: no GPU." in text


def test_app_notebook_describes_a_checkout_its_backups_and_models(nb_box):
    nb_box.sh(
        "set -e; git init -q /srv/upstream; cd /srv/upstream; echo v1 > app.py; "
        "git add app.py; git -c user.name=t -c user.email=t@t commit -qm 'first commit'; "
        "git tag v0.1.6; git clone -q /srv/upstream /workspace/VisoMaster; "
        "echo edited >> /workspace/VisoMaster/app.py; touch /workspace/VisoMaster/notes.txt; "
        "mkdir /workspace/VisoMaster.moved-aside-20250101-000000 "
        "/workspace/VisoMaster.user-files-20250102-000000; "
        "mkdir -p /var/lib/red; printf '%s' '{\"verified\": false, \"checked\": 3, \"ok\": 2, "
        "\"failed\": [{\"file\": \"models/a.onnx\", \"reason\": \"sha256 mismatch\"}], "
        "\"error\": null, \"time\": \"2025-01-01T00:00:00Z\"}' > /var/lib/red/models-state.json"
    )
    try:
        text = "\n".join(execute(nb_box, APP))
        assert "VisoMaster checkout: /workspace/VisoMaster" in text
        assert "remote:   /srv/upstream" in text
        assert "ref:      v0.1.6-dirty" in text
        assert "uncommitted files: 2" in text and "app.py" in text and "notes.txt" in text
        assert "/workspace/VisoMaster.moved-aside-20250101-000000" in text
        assert "/workspace/VisoMaster.user-files-20250102-000000" in text
        assert "Models: NOT verified: 2 of 3 files OK" in text
        assert "failed: models/a.onnx: sha256 mismatch" in text
    finally:
        nb_box.sh("rm -rf /srv/upstream /workspace/VisoMaster /workspace/VisoMaster.* "
                  "/var/lib/red/models-state.json")


def test_a_user_edited_notebook_is_kept_and_moved_aside_never_lost(nb_box):
    assert sha256(nb_box, FIND) == sha256(nb_box, SHIPPED)
    nb_box.sh(f"cd /notebooks && python3 - <<'EOF'\n"
              "import json\n"
              f"notebook = json.load(open('{FIND}'))\n"
              "notebook['cells'].append({'cell_type': 'markdown', 'id': 'mine', "
              "'metadata': {}, 'source': 'my notes'})\n"
              f"json.dump(notebook, open('{FIND}', 'w'))\n"
              "EOF")
    edited = sha256(nb_box, FIND)
    # Red ships the same version as last time: the user's copy stays, nothing changes.
    totals = nb_box.converge_json()["results"]["totals"]
    assert totals["success"] == 0, totals
    assert sha256(nb_box, FIND) == edited
    # Pretend Red shipped another version last time: the new one must not overwrite the edit.
    nb_box.sh(f"echo {hashlib.sha256(b'an older version').hexdigest()} > {RECORD}")
    nb_box.converge_json()
    aside = nb_box.sh("ls /notebooks/find_provisioning_script.moved-aside-*.ipynb").split()
    assert len(aside) == 1 and sha256(nb_box, aside[0]) == edited
    assert sha256(nb_box, FIND) == sha256(nb_box, SHIPPED)
    assert nb_box.sh(f"cat {RECORD}").strip() == sha256(nb_box, SHIPPED)
    startup = nb_box.sh("cat /logs/startup.log")
    assert f"notebooks: {FIND} differs from what Red shipped last time (edited?): moved aside " \
           f"to {aside[0]}" in startup
    # An unedited older version (the file is what Red shipped then) is replaced in place.
    nb_box.sh(f"echo '{{}}' > {FIND} && sha256sum {FIND} | cut -d' ' -f1 > {RECORD}")
    nb_box.converge_json()
    assert sha256(nb_box, FIND) == sha256(nb_box, SHIPPED)
    assert nb_box.sh("ls /notebooks/find_provisioning_script.moved-aside-*.ipynb").split() == aside
    # A deleted notebook comes back.
    nb_box.sh(f"rm {FIND}")
    nb_box.converge_json()
    assert sha256(nb_box, FIND) == sha256(nb_box, SHIPPED)
    assert nb_box.converge_json()["results"]["totals"]["success"] == 0
