"""operations/_speedups.py against the pyinfra internals they replace."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from types import SimpleNamespace

import pyinfra
import pytest

from operations import _speedups
from tests.conftest import ROOT
from tests.plan import plan

# The modules (`from pyinfra.api import operation` is the decorator of that name).
pyinfra_operation = importlib.import_module("pyinfra.api.operation")
util = importlib.import_module("pyinfra.api.util")
arguments = importlib.import_module("pyinfra.api.arguments")
facts = importlib.import_module("pyinfra.api.facts")


def both(state) -> tuple[list[int], list[int]]:
    # Called from the same frame, as pyinfra's solve_operation_consistency calls it.
    return util.get_operation_order_from_stack(state), _speedups.operation_order_from_frames(state)


def nested(state, depth: int):
    return nested(state, depth - 1) if depth else both(state)


@pytest.mark.parametrize("cli", [True, False])
@pytest.mark.parametrize("deploy_file", [__file__, "/not/on/the/stack.py", None])
def test_the_frame_walk_gives_pyinfras_line_numbers(monkeypatch, cli, deploy_file):
    monkeypatch.setattr(pyinfra, "is_cli", cli)
    state = SimpleNamespace(current_deploy_filename=deploy_file, current_op_file_number=7)
    stock, walked = nested(state, 3)
    assert walked == stock
    # The file's number under the CLI, then each frame from the deploy file in (here: the
    # test, four nested calls, both); none when it is not on the stack; all without one.
    expected = {__file__: 6, "/not/on/the/stack.py": 0}.get(deploy_file)
    assert len(stock) - cli == expected if expected is not None else len(stock) > 10


def test_they_are_installed_over_the_checked_release_only(monkeypatch):
    assert pyinfra_operation.get_operation_order_from_stack is \
        _speedups.operation_order_from_frames
    for module in (arguments, facts):
        assert module.all_global_arguments is _speedups.all_global_arguments_once
    monkeypatch.setattr(pyinfra_operation, "get_operation_order_from_stack",
                        util.get_operation_order_from_stack)
    for module in (arguments, facts):
        monkeypatch.setattr(module, "all_global_arguments", _speedups._ARGUMENTS_STOCK)
    monkeypatch.setattr(pyinfra, "__version__", "3.11.0")
    assert _speedups.install() is False
    assert pyinfra_operation.get_operation_order_from_stack is \
        util.get_operation_order_from_stack
    assert arguments.all_global_arguments is _speedups._ARGUMENTS_STOCK


def test_the_global_arguments_are_pyinfras_each_time():
    stock = _speedups._ARGUMENTS_STOCK()
    assert _speedups.all_global_arguments_once() == stock and len(stock) > 20
    assert {"_sudo", "_if", "_ignore_errors"} <= dict(stock).keys()
    # A fresh list each call, as pyinfra's: a caller changing it changes nothing else.
    first = _speedups.all_global_arguments_once()
    first.clear()
    assert _speedups.all_global_arguments_once() == stock


@pytest.mark.parametrize("group", ["ubuntu_2204", "debian_12"])
def test_the_whole_deploy_plans_the_same(group):
    fast, stock = plan(group, speedups="fast"), plan(group, speedups="stock")
    assert fast.code == stock.code == 0, (fast.output[-2000:], stock.output[-2000:])
    assert fast.commands == stock.commands and len(fast.commands) > 100
    # Each run ordered every op with the functions it names.
    for run, which in ((fast, "fast"), (stock, "stock")):
        calls = re.search(rf"op order calls: (\d+) {which}", run.output)
        assert calls and int(calls[1]) > 60, run.output[-500:]


def test_a_plain_cli_run_orders_ops_by_the_frame_walk():
    # The deploy's own import installs it: the CLI's op ordering is the walk from then on.
    probe = ("import importlib, operations, operations._speedups as walk; "
             "module = importlib.import_module('pyinfra.api.operation'); "
             "print(module.get_operation_order_from_stack is walk.operation_order_from_frames)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "True"
