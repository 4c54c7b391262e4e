"""
A supervisor program (``Program``), its command line quoted the way supervisor reads it back,
and the op that writes its config. The list of Red's programs is ``operations/programs.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pyinfra.api import OperationValueError

from operations import _files, settings, threads
from operations.ops import template

# supervisor splits ``command=`` with shlex's POSIX rules, but first its ini parser cuts an inline
# comment (";" or "#" after whitespace) and its own expansion reads "%" ("%(here)s" even
# before that): those characters are quoted apart, never after whitespace or as "%(".
_QUOTED_APART = {"'": "'\"'\"'", ";": "'\";\"'", "#": "'\"#\"'", "%": "'\"%%\"'"}
_PLAIN_WORD = re.compile(r"[\w@+=:,./-]+", re.ASCII)
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


def supervisor_word(value: str) -> str:
    """One word of a supervisor ``command=`` that supervisor reads back as exactly ``value``."""
    if any(char in value for char in "\n\r\0"):
        # An ini value is one line: a newline would start a new key (or section).
        raise OperationValueError(f"{value!r} cannot be written on a supervisor config line")
    if _PLAIN_WORD.fullmatch(value):
        return value
    return "'" + "".join(_QUOTED_APART.get(char, char) for char in value) + "'"


@dataclass
class Program:
    """
    A supervisor program: what the program template needs, what restarts it, and its port.

    Its settings reach it by name: ``environment`` is set by ``env`` at the head of the
    command line (supervisor's own ``environment=`` has no escapes: a value with a quote, a
    comma or " ;" cannot be written there), and the wrappers read ``RED_*`` names, never
    positions. A setting that changes changes the config, which restarts the program.
    """

    name: str
    # The executable; its arguments are the named settings in ``environment``.
    command: str
    priority: int
    # The operations module that declares it (the config's header names it).
    module: str
    environment: dict[str, object] = field(default_factory=dict)
    # Named options after the command (``--config PATH``), for tools that parse options.
    args: list[str] = field(default_factory=list)
    # The runtime setting of the port it listens on (e.g. "vnc_port"), its value, and whether
    # it listens off loopback (then it must authenticate every client).
    port_setting: str | None = None
    port: int | None = None
    public: bool = False
    autostart: bool = True
    # Seconds a start must survive to count as RUNNING.
    startsecs: int = 2
    # Services come back whatever ends them; an app the user closes ("unexpected") stays closed.
    autorestart: str = "true"
    # Failed starts before supervisor gives up (FATAL): services never give up.
    startretries: int = 1000000
    # Ops whose change needs this program restarted (its secrets, its config files).
    restart_on: list = field(default_factory=list)
    conf_op: object = None

    @property
    def source(self) -> str:
        """The file of the module that declares it, e.g. ``operations/desktop.py``."""
        return self.module.replace(".", "/") + ".py"

    @property
    def command_line(self) -> str:
        """``command=``'s value: ``/usr/bin/env NAME=value ... command args``, words quoted."""
        words = ["/usr/bin/env"]
        for key, value in self.environment.items():
            if not _ENV_NAME.fullmatch(key):
                raise OperationValueError(f"{key!r} is not an environment variable name")
            words.append(f"{key}={supervisor_word(str(value))}")
        return " ".join([*words, supervisor_word(self.command),
                         *(supervisor_word(str(arg)) for arg in self.args)])


def supervisor_program(program: Program) -> Program:
    """
    Upload ``/etc/supervisor/conf.d/<name>.conf`` for a program; returns it with its op. A
    program that runs thread pools gets the host's thread caps (operations/threads.py).
    """
    program.environment = {**program.environment, **threads.program_caps(program.name)}
    dest = f"/etc/supervisor/conf.d/{program.name}.conf"
    program.conf_op = _files.template(
        name=f"Upload {dest}",
        src=template("supervisor", "/etc/supervisor/conf.d/program.conf"),
        dest=dest,
        mode="644",
        program=program,
        logs_dir=settings.get("base_logs_dir"),
        log_maxbytes=settings.get("supervisor_log_maxbytes"),
        log_backups=settings.get("supervisor_log_backups"),
    )
    return program
