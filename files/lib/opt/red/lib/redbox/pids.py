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


def _listening_inodes(port: int, proc: str) -> set[str]:
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"{proc}/net/{table}", encoding="ascii") as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # local address is ADDR:PORT in hex; state 0A is LISTEN
            if len(fields) > 9 and fields[3] == "0A" \
                    and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def listeners(port: int, proc: str = "/proc") -> dict[int, str]:
    """The processes holding a listening TCP socket on ``port``: {pid: executable's path}."""
    sockets = {f"socket:[{inode}]" for inode in _listening_inodes(port, proc)}
    found: dict[int, str] = {}
    if not sockets:
        return found
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"{proc}/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{proc}/{entry}/fd/{fd}")
            except OSError:
                continue
            if target in sockets:
                try:
                    found[int(entry)] = os.readlink(f"{proc}/{entry}/exe")
                except OSError:
                    found[int(entry)] = ""
                break
    return found
