"""Process checks."""

from __future__ import annotations

import os


def alive(pid) -> bool:
    """True when a process with this pid exists (also one we may not signal)."""
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def container_start() -> str:
    """This container start's identity: the host's boot and PID 1's start time."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            boot = handle.read().strip()
        with open("/proc/1/stat", encoding="ascii") as handle:
            started = handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""
    return f"{boot}/{started}"


def cmdline(pid: int, proc: str = "/proc") -> str:
    """A process's command line, words joined by spaces ("" when it is gone)."""
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def group(pgid: int, proc: str = "/proc") -> list[int]:
    """
    The processes of a process group. Read from /proc/PID/stat, which anyone may read (a
    container's root without CAP_SYS_PTRACE cannot read another user's /proc/PID/fd).
    """
    members = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc}/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid):
            members.append(int(entry))
    return sorted(members)
