"""
The one plan runner for plan-level tests: the real deploy against pyinfra's @fake connector,
each fake host answering facts like a box in one state (tests/fixtures/*_inventory.py). The
commands the deploy would run are read from pyinfra's debug log; nothing touches this machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import NamedTuple

from tests.conftest import ROOT

INVENTORY = "tests/fixtures/fake_inventory.py"
_MARKER = "simulating command on "


class Plan(NamedTuple):
    code: int
    # Every command, in order, on every host.
    commands: list[str]
    output: str

    def hosts_running(self, command: str) -> set[str]:
        """The fake hosts (e.g. ``@fake/debian-12``) that ran exactly this command."""
        hosts = set()
        for line in self.output.splitlines():
            if _MARKER in line:
                host, _, ran = line.split(_MARKER, 1)[1].partition(": ")
                if ran == command:
                    hosts.add(host)
        return hosts


# pyinfra's CLI, its fake connector answering a batch's probes one by one as it answers each
# command alone (the hosts' fake_responses are per command), with operations/_speedups.py's
# replacements ("fast") or pyinfra's own functions ("stock") as RED_SPEEDUPS says, counting
# the op orderings: "op order calls: N <which>" on stderr.
_PLAN_RUNNER = """
import atexit, importlib, os, runpy, sys
from pyinfra.connectors.fake import FakeConnector
from pyinfra.connectors.util import CommandOutput, OutputLine
import operations._speedups as fast
from operations._files import BoxState

# The fake answers each of a batch's probes as it answers that command alone.
lookup = FakeConnector._lookup_response
def per_probe(self, command):
    parts = BoxState.parts_of(command)
    if parts is None:
        return lookup(self, command)
    looks, probes = parts
    outcomes = []
    for probe in probes:
        ok, output = lookup(self, probe)
        outcomes.append((ok, output.stdout_lines))
    answer = BoxState.answer(lookup(self, looks)[1].stdout_lines, outcomes)
    return True, CommandOutput([OutputLine("stdout", line) for line in answer])
FakeConnector._lookup_response = per_probe

which = os.environ.get("RED_SPEEDUPS", "fast")
operation = importlib.import_module("pyinfra.api.operation")
if which == "stock":
    util = importlib.import_module("pyinfra.api.util")
    operation.get_operation_order_from_stack = util.get_operation_order_from_stack
    for name in ("arguments", "facts"):
        module = importlib.import_module(f"pyinfra.api.{name}")
        module.all_global_arguments = fast._ARGUMENTS_STOCK
chosen = operation.get_operation_order_from_stack
calls = []
def counted(state):
    calls.append(1)
    return chosen(state)
operation.get_operation_order_from_stack = counted
atexit.register(lambda: print(f"op order calls: {len(calls)} {which}", file=sys.stderr))
sys.argv[0] = "pyinfra"
runpy.run_module("pyinfra", run_name="__main__")
"""


def plan(*groups: str, data: tuple[str, ...] | list[str] = (), inventory: str = INVENTORY,
         timeout: float = 300, speedups: str | None = None, dry: bool = False,
         diff: bool = False) -> Plan:
    """
    Run the deploy on the fake hosts of these inventory groups (none: every host).

    + speedups: "fast" or "stock" to run with operations/_speedups.py's functions or
      pyinfra's own, the op orderings counted
    + dry: as ``--dry`` (pyinfra runs each op's body when the deploy calls it, to show its
      changes), not ``-y`` (every op called first, then run)
    + diff: as ``--diff``: the output shows the lines of each file written (a program's config)
    """
    runner = ["-c", _PLAN_RUNNER]
    args = [sys.executable, *runner, str(inventory), "deploy.py", "--dry" if dry else "-y",
            "--debug", *(["--diff"] if diff else [])]
    for group in groups:
        args += ["--limit", group]
    for item in data:
        args += ["--data", item]
    env = {**os.environ, "RED_SPEEDUPS": speedups or "fast"}
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            check=False, env=env)
    output = result.stdout + result.stderr
    commands = [line.split(_MARKER, 1)[1].split(": ", 1)[1]
                for line in output.splitlines() if _MARKER in line]
    return Plan(result.returncode, commands, output)
