#!/usr/bin/env python3
"""
What each of operations/_speedups.py's patches and operations/_files.py's batch saves: the
whole deploy planned by the real pyinfra CLI for 1 and for 8 boxes (tests/plan.py's fake hosts
answer every fact, so what is timed is the controller's own work, where the patches act), with
all of them, with each patch left out (RED_SPEEDUPS_OFF), with none, and with the batch off
(RED_BATCH=off: every fact asked on its own, as stock pyinfra). Medians of --runs; wall seconds
of the CLI process. With --box, also a real no-op converge of a box of the test image
(RED_TEST_IMAGE): inside the container (the boot's and the seed's way) and over SSH from here
(a live box's way), with the facts each asked of the box (its round trips).

    .venv/bin/python bench/speedups.py [--runs 5] [--box]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # a bench script of the repository (not the box library)

from tests.boxes import (  # noqa: E402
    NO_APP,
    TOKEN,
    ports,
    ports_env,
    remove,
    start_box,
    wait_onstart,
    wait_ready,
)
from tests.plan import plan  # noqa: E402

INVENTORY = "bench/fake_fleet.py"
CASES = {"all": {}, "without order": {"RED_SPEEDUPS_OFF": "order"},
         "without arguments": {"RED_SPEEDUPS_OFF": "arguments"},
         "no patch": {"RED_SPEEDUPS_OFF": "order,arguments"},
         "without the batch": {"RED_BATCH": "off"}}
# The facts a converge asked of the box (pyinfra -v prints each).
_FACTS_ASKED: dict[tuple[str, str], int] = {}


def plan_seconds(group: str, case: dict[str, str]) -> float:
    for name in {name for other in CASES.values() for name in other}:
        os.environ.pop(name, None)
    os.environ.update(case)
    started = time.monotonic()
    result = plan(group, inventory=INVENTORY, timeout=600)
    assert result.code == 0, result.output[-2000:]
    return time.monotonic() - started


def timed(command: list[str], case: dict[str, str], where: str) -> float:
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False,
                            env={**os.environ, **case})
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:]
    _FACTS_ASKED[where, str(case)] = (result.stdout + result.stderr).count("Loaded fact")
    return seconds


class RedBox:
    """A box of the test image, booted, with our key authorized: its two no-op converges."""

    NAME = "red-bench-speedups"
    PORTS = ports(26100)

    def __init__(self, directory: Path):
        self.key = directory / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)],
                       check=True)
        env = {**NO_APP, **ports_env(self.PORTS), "JUPYTER_TOKEN": TOKEN,
               "SSH_PUBLIC_KEY": self.key.with_suffix(".pub").read_text().strip()}
        self.box = start_box(self.NAME, env, self.PORTS)
        wait_ready(self.box, TOKEN)
        wait_onstart(self.box)
        self.known_hosts = directory / "known_hosts"
        self.known_hosts.write_text("".join(
            f"[127.0.0.1]:{self.PORTS['sshd']} {line}\n" for line in self.box.sh(
                "cat /etc/ssh/ssh_host_*_key.pub").splitlines()))
        # The first SSH converge saves its --data choice on the box: not timed.
        self.ssh_seconds({})

    def container_seconds(self, case: dict[str, str]) -> float:
        env = [word for name, value in case.items() for word in ("-e", f"{name}={value}")]
        # The SSH converge's --data (saved on the box, as red-provision passes it again): the
        # two ways then write the same settings.json, and each run is a no-op.
        return timed(["podman", "exec", *env, self.NAME, "bash", "-c",
                      "cd /opt/red/deploy && /opt/red/tool/bin/pyinfra @local deploy.py -y -v "
                      "--data python_version=3.11"], case, "no-op in the box")

    def ssh_seconds(self, case: dict[str, str]) -> float:
        return timed([str(Path(sys.executable).with_name("pyinfra")), "127.0.0.1", "deploy.py",
                      "-y", "-v", "--user", "root", "--port", str(self.PORTS["sshd"]),
                      "--key", str(self.key), "--data", "python_version=3.11",
                      "--data", f"ssh_known_hosts_file={self.known_hosts}",
                      "--data", "ssh_strict_host_key_checking=yes"], case, "no-op over SSH")

    def close(self) -> None:
        remove(self.NAME)


def table(columns: dict[str, dict[str, list[float]]]) -> None:
    print(f"{'case':<20}" + "".join(f"{name:>18}" for name in columns))
    for name in CASES:
        cells = []
        for figures in columns.values():
            value, base = statistics.median(figures[name]), statistics.median(figures["all"])
            cells.append(f"{value:7.2f} s {(value / base - 1) * 100:+4.0f}%")
        print(f"{name:<20}" + "".join(f"{cell:>18}" for cell in cells))
    for (where, case), count in sorted(_FACTS_ASKED.items()):
        print(f"facts asked of the box, {where}, {case or 'all'}: {count}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--box", action="store_true",
                        help="also a box of RED_TEST_IMAGE: no-op inside it and over SSH")
    args = parser.parse_args()
    measures: dict[str, Callable[[dict[str, str]], float]] = {
        "plan, 1 box": lambda case: plan_seconds("one", case),
        "plan, 8 boxes": lambda case: plan_seconds("fleet", case),
    }
    with tempfile.TemporaryDirectory(prefix="red-bench-") as directory:
        box = RedBox(Path(directory)) if args.box else None
        try:
            if box:
                measures["no-op in the box"] = box.container_seconds
                measures["no-op over SSH"] = box.ssh_seconds
            # The cases interleaved, run by run: a machine whose speed drifts weighs on each
            # alike.
            columns: dict[str, dict[str, list[float]]] = {name: {} for name in measures}
            for _ in range(args.runs):
                for case, env in CASES.items():
                    for name, measure in measures.items():
                        columns[name].setdefault(case, []).append(measure(env))
        finally:
            if box:
                box.close()
    table(columns)

if __name__ == "__main__":
    main()
