"""
What a GPU image must handle of its host: every driver capability mounted (the Dockerfile), and
thread caps on a host whose pids budget is far below its visible cores (operations/threads.py,
the rule in redbox.core.threads), shown on the deploy's plan for fake hosts
(tests/fixtures/fake_host_facts_inventory.py).
"""

import re
import shlex

import pytest

from operations.programs import default_programs
from redbox.core.threads import THREAD_VARIABLES
from tests.conftest import ROOT
from tests.plan import plan as run_plan

INVENTORY = "tests/fixtures/fake_host_facts_inventory.py"
PROGRAMS = {program.name: program.command for program in default_programs()}
CAPPED = ("visomaster", "jupyter", "desktop", "portal", "status")


def dockerfile_env() -> dict[str, str]:
    """The image's ENV instructions, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(word.split("=", 1) for word in shlex.split(line[4:]))
    return env


def test_the_image_asks_for_every_driver_capability():
    # NVIDIA's CUDA images mount compute and utility only: no NVENC/NVDEC, no graphics.
    assert dockerfile_env()["NVIDIA_DRIVER_CAPABILITIES"] == "all"


@pytest.fixture(scope="module")
def plans():
    """Each fake host's configure plan, its written files shown (--diff)."""
    found = {}
    for group in ("starved", "healthy", "starved_user_omp"):
        result = run_plan(group, data=("red_phase=configure",), inventory=INVENTORY, diff=True)
        assert result.code == 0, result.output[-3000:]
        found[group] = result
    return found


def program_command(output: str, name: str) -> str:
    """A program's ``command=`` line as its config is written."""
    wanted = re.compile(rf"\+ command=(/usr/bin/env .* {re.escape(PROGRAMS[name])}( .*)?)$")
    lines = [match[1] for match in map(wanted.search, output.splitlines()) if match]
    assert len(lines) == 1, (name, lines)
    return lines[0]


def written(output: str, pattern: str) -> set[str]:
    """The thread variables written as ``pattern`` says (NAME and VALUE in it)."""
    return {name for name in THREAD_VARIABLES
            if re.search(pattern.replace("NAME", name), output, re.MULTILINE)}


def test_a_starved_host_caps_sessions_and_thread_running_programs(plans):
    output = plans["starved"].output
    # 1024 pids for 384 visible cores; 4.5 cores of quota, rounded up.
    assert written(output, r'^NAME="5"$') == set(THREAD_VARIABLES)  # /etc/environment
    assert written(output, r"\+ export NAME=5$") == set(THREAD_VARIABLES)  # profile.d
    for name in PROGRAMS:
        words = program_command(output, name).split()
        caps = {word for word in words if word.split("=")[0] in THREAD_VARIABLES}
        assert caps == ({f"{var}=5" for var in THREAD_VARIABLES} if name in CAPPED else set()), \
            name
    lines = [line for line in output.splitlines() if "threads: pids.max" in line]
    assert lines and "pids.max 1024 is below 16 x 384 visible cores (CPU quota 4.5 cores): " \
        "thread pools capped to 5" in lines[0]


def test_a_healthy_host_writes_no_cap_and_says_nothing(plans):
    result = plans["healthy"]
    output = result.output
    # The block a starved host left (its caps in it) is rewritten without them.
    assert any(command.startswith("OUT=") and " /etc/environment " in command
               for command in result.commands)
    assert 'SSH_PORT="22"' in output and "+ export SSH_PORT=22" in output
    assert not written(output, r"\bNAME=")
    assert "RED_JUPYTER_PORT=8888" in program_command(output, "jupyter")
    assert "threads:" not in output


def test_a_variable_in_the_containers_env_is_the_users(plans):
    output = plans["starved_user_omp"].output
    others = set(THREAD_VARIABLES) - {"OMP_NUM_THREADS"}
    assert written(output, r'^NAME="5"$') == others
    assert "OMP_NUM_THREADS=" not in program_command(output, "visomaster")
    assert "MKL_NUM_THREADS=5" in program_command(output, "visomaster")
    assert "capped to 5, the user's OMP_NUM_THREADS kept" in output
