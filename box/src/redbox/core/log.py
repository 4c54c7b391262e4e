"""Log lines: one timestamp format (UTC), the startup log's path, the logs dir and its fallback."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TextIO

# Every log line starts with this (UTC): 2026-12-01T22:20:27Z.
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# Names that carry a time (moved-aside copies, backups): 20261201-222027, UTC.
STAMP_FORMAT = "%Y%m%d-%H%M%S"
# The same two, for shell commands the deploy runs on a box: each expands to one word.
SHELL_TIMESTAMP = f'"$(date -u +{TIMESTAMP_FORMAT})"'
SHELL_STAMP = f'"$(date -u +{STAMP_FORMAT})"'
STARTUP_LOG = "startup.log"


def timestamp(epoch: float | None = None) -> str:
    """Now (or epoch seconds), for the start of a log line or a time in a state file."""
    moment = datetime.now(timezone.utc) if epoch is None \
        else datetime.fromtimestamp(epoch, timezone.utc)
    return moment.strftime(TIMESTAMP_FORMAT)


def stamp() -> str:
    """Now, for a file name."""
    return datetime.now(timezone.utc).strftime(STAMP_FORMAT)


def startup_log(logs_dir: str) -> str:
    """The startup log in a logs dir: every boot decision gets one line there."""
    return os.path.join(str(logs_dir), STARTUP_LOG)


def line(prefix: str, message: str) -> str:
    """One log line (no newline): ``<timestamp> <prefix> <message>``."""
    return f"{timestamp()} {prefix} {message}"


def append(path: str, topic: str, lines: Iterable[str]) -> bool:
    """Append ``<timestamp> <topic>: <line>`` lines to path; False when it cannot be written."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            for text in lines:
                handle.write(line(f"{topic}:", text) + "\n")
    except OSError:
        return False
    return True


class Log:
    """
    Timestamped lines to a file and, when ``echo`` is given, to that stream too. When the file
    cannot be written, stderr says so once and the lines go to stderr instead (unless they are
    echoed there anyway). ``path`` None: echo only.
    """

    def __init__(self, path: str | None, prefix: str, echo: TextIO | None = None):
        self.path = path
        self.prefix = prefix
        self.echo = echo
        self.broken = False

    def __call__(self, message: str) -> None:
        text = line(self.prefix, message) + "\n"
        written = False
        if self.path and not self.broken:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(text)
                written = True
            except OSError as error:
                self.broken = True
                _write(sys.stderr, f"{self.prefix} cannot write log {self.path}: {error}; "
                                   "logging to stderr\n")
        if self.echo is not None:
            _write(self.echo, text)
        elif self.path and not written:
            _write(sys.stderr, text)


def _write(stream: TextIO, text: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        stream.write(text)
        stream.flush()


def unwritable(path: str) -> str | None:
    """Why a directory cannot be written (creating it first), or None when it can."""
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".red-write-test-", dir=path)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        return error.strerror or str(error)
    return None


def usable_logs_dir(wanted: str, fallback: str, tool: str, quiet: bool = False) -> str | None:
    """
    The logs dir to use: ``wanted`` (recreated when removed), else ``fallback`` with one line on
    stderr saying so, else None (stderr only).
    """
    problem = unwritable(wanted)
    if problem is None:
        return wanted
    fallback_problem = unwritable(fallback)
    if not quiet:
        where = fallback if fallback_problem is None else "stderr only"
        print(f"{tool}: {wanted} is not writable ({problem}): logs go to {where}",
              file=sys.stderr, flush=True)
    return fallback if fallback_problem is None else None


def readable_logs_dir(wanted: str, fallback: str) -> str:
    """Where the logs are, without creating anything (for read-only reports)."""
    return wanted if os.access(wanted, os.W_OK) else fallback
