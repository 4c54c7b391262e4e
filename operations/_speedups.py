"""
Two of pyinfra's internals, each replaced by a faster equivalent over the pyinfra release it
was checked against (tests/unit/test_speedups.py compares them); any other release keeps its
own. Both run per operation and host, so in a fleet they are that much CPU per box on the one
controller.

- The CLI orders each operation by the line numbers of the deploy code on its call stack
  (``get_operation_order_from_stack``), read with ``inspect.stack()``, which also reads a line
  of source and works out column positions for every frame: about 6 ms per operation here, a
  third of a no-op converge's Python time. The same line numbers come from the frames.
- ``all_global_arguments()`` evaluates the type hints of pyinfra's global-argument TypedDicts
  (``typing.get_type_hints``) at every operation and fact: the same list each time.

Measured with bench/speedups.py --box --runs 5 (the whole deploy planned for 1 and 8 boxes, a
no-op converge in the container and over SSH, each patch left out in turn): without the frame
walk +24% / +90% / +24% / +11%, without the hints once +0% / +21% / +5% / +3%. A third patch
(the host data's layers read once per global argument) saved under 10% of all since the batch
asks few facts, and was removed.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys

import pyinfra

# The modules themselves: `from pyinfra.api import operation` is the decorator, not its module.
_operation = importlib.import_module("pyinfra.api.operation")
_util = importlib.import_module("pyinfra.api.util")
_arguments = importlib.import_module("pyinfra.api.arguments")
_facts = importlib.import_module("pyinfra.api.facts")
_deploy = importlib.import_module("pyinfra.api.deploy")

CHECKED_RELEASE = "3.10.0"


def operation_order_from_frames(state) -> list[int]:
    """``get_operation_order_from_stack`` (pyinfra 3.10.0), from the frames' own line numbers."""
    frames = []
    frame = sys._getframe(1)
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    # pyinfra's walk starts at its own frame: so does this one (its caller's place).
    frames.reverse()

    start = 0
    # The *first* occurrence of the deploy file, from the outermost frame in. Without one,
    # pyinfra's loop stops at its own frame, the innermost: no line numbers but the file's.
    if state.current_deploy_filename:
        start = next((index for index, frame in enumerate(frames)
                      if frame.f_code.co_filename == state.current_deploy_filename),
                     len(frames))

    line_numbers = []
    if pyinfra.is_cli:
        line_numbers.append(state.current_op_file_number)
    for frame in frames[start:]:
        if frame.f_code.co_filename.startswith(_util.PYINFRA_INSTALL_DIR):
            continue
        line_numbers.append(frame.f_lineno)
    return line_numbers


@functools.cache
def _global_arguments() -> tuple[tuple[str, type], ...]:
    return tuple(_ARGUMENTS_STOCK())


def all_global_arguments_once() -> list[tuple[str, type]]:
    """``all_global_arguments()`` (pyinfra 3.10.0): the hints evaluated once per process."""
    return list(_global_arguments())


_ARGUMENTS_STOCK = _arguments.all_global_arguments


# Each patch by name; RED_SPEEDUPS_OFF=order,arguments leaves those out (bench/speedups.py
# measures what each one saves; a third, the host data's layers read once per call, saved
# under 10% of each figure and was removed).
PATCHES = ("order", "arguments")


def install() -> bool:
    """Use the faster equivalents when pyinfra is the release they were checked against."""
    if pyinfra.__version__ != CHECKED_RELEASE:
        return False
    off = set(os.environ.get("RED_SPEEDUPS_OFF", "").split(","))
    if "order" not in off:
        _operation.get_operation_order_from_stack = operation_order_from_frames
    if "arguments" not in off:
        # pyinfra.api.facts imported the function by name: both references.
        _arguments.all_global_arguments = all_global_arguments_once
        _facts.all_global_arguments = all_global_arguments_once
    return True
