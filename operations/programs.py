"""
Every supervised program of Red, in one list: the concern modules write their configs from
the same builders, and the tests and the bench read the programs' names and ports from here
instead of keeping copies. No pyinfra host is needed to call it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from operations import desktop, jupyter, portal, settings, ssh, visomaster
from operations.program import Program


def programs(runtime: settings.RuntimeSettings,
             data: Callable[[str], Any] = settings.get) -> list[Program]:
    """
    The programs for these settings, in supervisor's start order.

    + runtime: the resolved runtime settings (ports, resolution)
    + data: where other settings come from (the host's data; ``settings.DEFAULTS.get``)
    """
    return [
        ssh.build_program(runtime),
        *desktop.build_programs(runtime, data),
        jupyter.build_program(runtime, data),
        visomaster.build_program(data("visomaster_dir"), data("visomaster_autostart"), data),
        *portal.build_programs(runtime, data),
    ]


def default_programs() -> list[Program]:
    """The programs as group_data/all.py's defaults make them, without a pyinfra host."""
    data = settings.DEFAULTS.get
    # The env is empty and nothing comes from --data: the defaults, resolved as a boot would.
    return programs(settings._resolve({}, data=data, cli=set()), data)


def port_env(setting: str) -> str:
    """The env variable that sets a port setting (e.g. ``vnc_port`` -> ``VNC_PORT``)."""
    return settings.PORT_ENV[setting]
