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


# The CLI with the op ordering chosen by RED_OP_ORDER ("stock": pyinfra's own, "walk":
# operations/_op_order.py's), counting its calls: "op order calls: N <which>" on stderr.
_COUNTED_OP_ORDER = """
import atexit, importlib, os, runpy, sys
import operations._op_order as walk
module = importlib.import_module("pyinfra.api.operation")
util = importlib.import_module("pyinfra.api.util")
which = os.environ["RED_OP_ORDER"]
chosen = {"stock": util.get_operation_order_from_stack,
          "walk": walk.operation_order_from_frames}[which]
calls = []
def counted(state):
    calls.append(1)
    return chosen(state)
module.get_operation_order_from_stack = counted
atexit.register(lambda: print(f"op order calls: {len(calls)} {which}", file=sys.stderr))
sys.argv[0] = "pyinfra"
runpy.run_module("pyinfra", run_name="__main__")
"""


def plan(*groups: str, data: tuple[str, ...] | list[str] = (), inventory: str = INVENTORY,
         timeout: float = 300, op_order: str | None = None) -> Plan:
    """
    Run the deploy on the fake hosts of these inventory groups (none: every host).

    + op_order: "stock" or "walk" to run with that op ordering, its calls counted
    """
    runner = ["-c", _COUNTED_OP_ORDER] if op_order else ["-m", "pyinfra"]
    args = [sys.executable, *runner, str(inventory), "deploy.py", "-y", "--debug"]
    for group in groups:
        args += ["--limit", group]
    for item in data:
        args += ["--data", item]
    env = {**os.environ, "RED_OP_ORDER": op_order} if op_order else None
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            check=False, env=env)
    output = result.stdout + result.stderr
    commands = [line.split(_MARKER, 1)[1].split(": ", 1)[1]
                for line in output.splitlines() if _MARKER in line]
    return Plan(result.returncode, commands, output)
