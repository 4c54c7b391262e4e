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
- ``pop_global_arguments`` (every operation, fact and deploy call) reads each of ~40 global
  arguments from the host's data, and each read evaluates every layer of that data again
  (override, host, groups, inventory, deploy defaults; the groups' a merged dict): 200 layer
  evaluations per call, half of a fleet's controller time here. It runs unchanged, with the
  layers evaluated once per call.
"""

from __future__ import annotations

import copy
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
_POP_STOCK = _arguments.pop_global_arguments


class _DataOnce:
    """A host's data read through its layers as evaluated once (pyinfra's HostData lookup)."""

    def __init__(self, data) -> None:
        self._layers = [layer() if callable(layer) else layer for layer in data.datas]
        self._host = data.host

    def __getattr__(self, key: str):
        for layer in self._layers:
            # Each layer is a dict: asked, not tried (a KeyError per layer and key is slow).
            if key in layer:
                # HostData hands out copies: a change to one must not stick.
                return copy.copy(layer[key])
        raise AttributeError(f"Host `{self._host}` has no data `{key}`")


class _HostReadOnce:
    """The host, its data evaluated once: what pop_global_arguments reads of it."""

    def __init__(self, host) -> None:
        self._host = host
        self.data = _DataOnce(host.data)

    def __getattr__(self, name: str):
        return getattr(self._host, name)


def pop_global_arguments_once(state, host, kwargs):
    """``pop_global_arguments`` (pyinfra 3.10.0) itself, the host's data layers read once."""
    return _POP_STOCK(state, _HostReadOnce(host), kwargs)


# Each patch by name; RED_SPEEDUPS_OFF=order,arguments,data leaves those out (bench/speedups.py
# measures what each one saves).
PATCHES = ("order", "arguments", "data")


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
    if "data" not in off:
        # Imported by name by the modules that call it.
        for module in (_operation, _deploy, _facts):
            module.pop_global_arguments = pop_global_arguments_once
    return True
