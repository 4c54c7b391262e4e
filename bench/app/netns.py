"""
The simulated network: two network namespaces joined by a veth pair, the servers in one, the
box's tools in the other, and a tbf qdisc on the servers' end capping what flows to the box
(the download direction: the link). Named after the bench's pid, so a second bench does not
touch this one's and a crashed one's are found and removed by the next (``remove_stale``).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess

PREFIX = "red-bench-app-"
SUBNET = "10.213.0"
SERVERS_IP = f"{SUBNET}.1"
BOX_IP = f"{SUBNET}.2"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def tbf_arguments(bytes_per_s: float) -> list[str]:
    """tbf's rate, burst and queue for a link of bytes_per_s (what the kernel's tc takes)."""
    rate_bits = max(8000, int(bytes_per_s * 8))
    # A burst of 4 ms (at least 2 full-size frames), a queue of 100 ms (at least 256 KB).
    burst = max(2 * 1514, int(bytes_per_s * 0.004))
    limit = max(256 * 1024, int(bytes_per_s * 0.1))
    return ["rate", f"{rate_bits}bit", "burst", str(burst), "limit", str(limit)]


def namespaces() -> list[str]:
    done = ip("netns", "list", check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def pids_in(namespace: str) -> list[int]:
    done = ip("netns", "pids", namespace, check=False)
    return [int(word) for word in done.stdout.split() if word.isdigit()]


def kill_inside(namespace: str) -> None:
    """Kill what still runs in one of the bench's own namespaces (only its own processes)."""
    for pid in pids_in(namespace):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """The namespaces of benches whose process is gone: emptied and deleted."""
    removed = []
    for name in namespaces():
        match = re.fullmatch(rf"{re.escape(PREFIX)}(\d+)-(srv|box)", name)
        if match and not _alive(int(match[1])):
            kill_inside(name)
            ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


class Network:
    def __init__(self, link_bytes_per_s: float, tag: int | None = None):
        tag = os.getpid() if tag is None else tag
        self.servers = f"{PREFIX}{tag}-srv"
        self.box = f"{PREFIX}{tag}-box"
        self.veth = (f"rba{tag}s", f"rba{tag}b")
        self.rate = link_bytes_per_s
        self.made: list[str] = []

    def up(self) -> None:
        for name in (self.servers, self.box):
            ip("netns", "add", name)
            self.made.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        ip("link", "add", self.veth[0], "type", "veth", "peer", "name", self.veth[1])
        ip("link", "set", self.veth[0], "netns", self.servers)
        ip("link", "set", self.veth[1], "netns", self.box)
        ip("-n", self.servers, "addr", "add", f"{SERVERS_IP}/30", "dev", self.veth[0])
        ip("-n", self.box, "addr", "add", f"{BOX_IP}/30", "dev", self.veth[1])
        ip("-n", self.servers, "link", "set", self.veth[0], "up")
        ip("-n", self.box, "link", "set", self.veth[1], "up")
        done = subprocess.run(["ip", "netns", "exec", self.servers, "tc", "qdisc", "add", "dev",
                               self.veth[0], "root", "tbf", *tbf_arguments(self.rate)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"tc tbf: {done.stderr.strip()}")

    def qdisc(self) -> str:
        done = subprocess.run(["ip", "netns", "exec", self.servers, "tc", "-s", "qdisc", "show",
                               "dev", self.veth[0]], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    def prefix(self, namespace: str) -> list[str]:
        return ["ip", "netns", "exec", namespace]

    def down(self) -> None:
        for name in self.made:
            kill_inside(name)
        for name in self.made:
            ip("netns", "del", name, check=False)
        self.made = []
