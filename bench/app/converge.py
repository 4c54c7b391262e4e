"""
Red's app steps as the converge runs them: the commands the real deploy plans for a box whose
app is out of state (tests/fixtures/fake_visomaster_inventory.py's ``vm_out_of_state``: the
checkout, the models' and CLIP's fetches started in the background, the install, the models'
and CLIP's steps again, each waiting for its background run), read from pyinfra's plan against
the @fake connector (tests/plan.py) with the bench's URLs as data. Nothing here decides Red's
order, overlap or arguments: a change to operations/visomaster.py shows in the next run.

The commands are rewritten for the bench (``localize``): the container's paths into a
container root and a workspace directory, the tools into the venv holding the box's console
scripts, and ``--also ipykernel==...`` dropped (the stand-in indexes have no ipykernel).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable

from tests.plan import plan

INVENTORY = "tests/fixtures/fake_visomaster_inventory.py"
GROUP = "vm_out_of_state"
TOOL_BIN = "/opt/red/bin/"
# An app step's command: the checkout (run as it is) or "{ echo '== red-app-X ..." (the
# others, their output appended to the app's logs).
_STEP = re.compile(r"(?:^|[;{]\s*)(?:echo '== |)(?:/opt/red/bin/)?red-app-(checkout|pip|models|"
                   r"clip)\b")
_BACKGROUND = re.compile(r"^setsid sh -c (.+) </dev/null >/dev/null 2>&1 &$", re.DOTALL)
# A container path: not preceded by what continues a word, a URL or another path.
_PATH = re.compile(r"(?<![\w:/.$-])/(?:workspace|opt|var|logs|root|etc|tmp|srv|run)"
                   r"(?:/[^\s'\"]*)?")
_ALSO = re.compile(r"\s--also\s+(?:'[^']*'|\S+)")


def plan_commands(data: list[str]) -> list[str]:
    """The deploy's commands for the out-of-state box (configure phase) with this data."""
    result = plan(GROUP, data=("red_phase=configure", *data), inventory=INVENTORY)
    if result.code != 0:
        raise RuntimeError("the deploy's plan failed:\n" + result.output[-3000:])
    return result.commands


def app_steps(commands: list[str]) -> list[tuple[str, bool, str]]:
    """(step, in the background, shell command) of each app step, in the plan's order."""
    steps = []
    for command in commands:
        background = _BACKGROUND.match(command)
        script = shlex.split(background[1])[0] if background else command
        found = _STEP.search(script)
        if found and (script.startswith(TOOL_BIN) or script.startswith("{ echo '== red-app-")):
            steps.append((found[1], bool(background), script))
    return steps


def localize(script: str, place: Callable[[str], str], tools: str) -> str:
    """A step's command with the bench's places and tools, without ipykernel."""
    def mapped(match: re.Match) -> str:
        path = match[0]
        if path.startswith(TOOL_BIN):
            return f"{tools.rstrip('/')}/{path[len(TOOL_BIN):]}"
        return place(path)
    return _PATH.sub(mapped, _ALSO.sub("", script))
