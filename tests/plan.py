"""
The one plan runner for plan-level tests: the real deploy against pyinfra's @fake connector,
each fake host answering facts like a box in one state (tests/fixtures/*_inventory.py). The
commands the deploy would run are read from pyinfra's debug log; nothing touches this machine.
"""

from __future__ import annotations

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


# pyinfra's own op ordering, for comparing it with operations/_op_order.py's.
STOCK_OP_ORDER = [
    "-c", "import operations, pyinfra.api.operation as o, pyinfra.api.util as u, runpy; "
    "o.get_operation_order_from_stack = u.get_operation_order_from_stack; "
    "runpy.run_module('pyinfra', run_name='__main__')",
]


def plan(*groups: str, data: tuple[str, ...] | list[str] = (), inventory: str = INVENTORY,
         timeout: float = 300, stock_op_order: bool = False) -> Plan:
    """Run the deploy on the fake hosts of these inventory groups (none: every host)."""
    args = [sys.executable, *(STOCK_OP_ORDER if stock_op_order else ["-m", "pyinfra"]),
            str(inventory), "deploy.py", "-y", "--debug"]
    for group in groups:
        args += ["--limit", group]
    for item in data:
        args += ["--data", item]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            check=False)
    output = result.stdout + result.stderr
    commands = [line.split(_MARKER, 1)[1].split(": ", 1)[1]
                for line in output.splitlines() if _MARKER in line]
    return Plan(result.returncode, commands, output)
