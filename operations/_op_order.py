"""
pyinfra's CLI orders each operation by the line numbers of the deploy code on its call stack
(``get_operation_order_from_stack``), read with ``inspect.stack()``, which also reads a line
of source and works out column positions for every frame: about 6 ms per operation here, a
third of a no-op converge's Python time and, in a fleet, that much per op and box on the one
controller. The same line numbers come from the frames themselves. This is that function with
a frame walk instead, installed only over the pyinfra release it was checked against
(tests/unit/test_op_order.py compares the two); any other release keeps its own.
"""

from __future__ import annotations

import importlib
import sys

import pyinfra

# The modules themselves: `from pyinfra.api import operation` is the decorator, not its module.
_operation = importlib.import_module("pyinfra.api.operation")
_util = importlib.import_module("pyinfra.api.util")

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


def install() -> bool:
    """Use the frame walk when pyinfra is the release it was checked against."""
    if pyinfra.__version__ != CHECKED_RELEASE:
        return False
    _operation.get_operation_order_from_stack = operation_order_from_frames
    return True
