"""redbox.core.progress: steps that run at once (the install, the models, CLIP) share one file."""

import subprocess
import sys

from redbox.core import progress

WRITER = """
import sys
from redbox.core import progress
path, step = sys.argv[1], sys.argv[2]
for n in range(150):
    progress.write(path, step, "running", n / 1.5, f"{step} {n}")
progress.write(path, step, "done", 100, f"{step} finished")
"""


def test_concurrent_steps_never_lose_each_others_records(tmp_path):
    path = str(tmp_path / "status.json")
    steps = ("pip", "models", "clip")
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, path, step]) for step in steps]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0, 0]
    status = progress.read(path)
    assert {step: status["steps"][step]["state"] for step in steps} == dict.fromkeys(steps, "done")
    assert {step: status["steps"][step]["detail"] for step in steps} == {
        step: f"{step} finished" for step in steps}


def test_a_step_writes_without_its_directory_and_says_its_line(tmp_path):
    path = str(tmp_path / "new" / "status.json")
    progress.write(path, "clip", "backoff", None, "waiting until 2026-12-02T00:10:00Z")
    assert progress.line(progress.read(path)).startswith(
        "visomaster: clip backoff: waiting until 2026-12-02T00:10:00Z (at ")
