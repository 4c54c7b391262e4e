"""
Host facts in a real container: a box whose pids budget is below 16 x its visible cores
(podman's --pids-limit) and whose CPU quota is one core (--cpus) gets the thread caps from its
converge, read from its own cgroup files (operations/threads.py, redbox.core.threads).

Its PID 1 is a sleep: the converge alone runs in the box (a few processes), not the services,
which need more pids than such a budget allows. Ports 28020 and up.
"""

import os

import pytest

from redbox.core.threads import THREAD_VARIABLES
from tests.boxes import NO_APP, ports, ports_env, remove, start_box
from tests.image.conftest import _needs_the_image

# Just below 16 x the cores the box sees (this machine's): starved, with the most room for
# the converge itself.
PIDS_LIMIT = 16 * len(os.sched_getaffinity(0)) - 1
# The user's own value: never capped.
USER_SET = {"MKL_NUM_THREADS": "3"}


@pytest.fixture(scope="module")
def starved_box(request):
    _needs_the_image(request)
    box_ports = ports(28020)
    box = start_box("red-test-starved", {**NO_APP, **ports_env(box_ports), **USER_SET},
                    box_ports, "--pids-limit", str(PIDS_LIMIT), "--cpus", "1",
                    "--entrypoint", "sleep", command=["infinity"])
    try:
        cores = int(box.sh("nproc").strip())
        assert PIDS_LIMIT < 16 * cores, f"{cores} visible cores: {PIDS_LIMIT} pids is no limit"
        # The converge the entrypoint runs before supervisord, without starting it.
        box.converge_json("--data", "red_phase=configure", "--data", "supervisor_start=false")
        box.cores = cores
        yield box
    finally:
        remove(box.name)


def test_the_converge_caps_thread_pools_to_the_quota(starved_box):
    # One core of quota, rounded up: at least 2.
    capped = [name for name in THREAD_VARIABLES if name not in USER_SET]
    environment = starved_box.sh("cat /etc/environment")
    for name in capped:
        assert f'{name}="2"' in environment, environment
    assert "MKL_NUM_THREADS=" not in environment
    # A login shell (SSH, a Jupyter terminal) has them; the user's own value is kept.
    shell = starved_box.sh("bash -lc 'echo $OMP_NUM_THREADS $RAYON_NUM_THREADS $MKL_NUM_THREADS'")
    assert shell.split() == ["2", "2", "3"]
    jupyter = starved_box.sh("grep '^command=' /etc/supervisor/conf.d/jupyter.conf")
    assert all(f"{name}=2" in jupyter.split() for name in capped), jupyter
    assert "MKL_NUM_THREADS" not in jupyter
    assert "OMP_NUM_THREADS" not in starved_box.sh("cat /etc/supervisor/conf.d/xvnc.conf")
    log = starved_box.sh("grep ' threads: ' /logs/startup.log")
    assert (f"threads: pids.max {PIDS_LIMIT} is below 16 x {starved_box.cores} visible cores "
            "(CPU quota 1 core): thread pools capped to 2, the user's MKL_NUM_THREADS kept") in log
