"""
Facts the deploy asks the box itself, each a small typed ``FactBase`` with its output documented
(as pyinfra's own ``facts/*.py``).
"""

from __future__ import annotations

import re
import shlex

from pyinfra.api import FactBase

from redbox.app import gpu
from redbox.app.checks import last_object

_EXIT = "red-gpu-exit="
# Each nvidia-smi call is bounded: a hung driver cannot hang a converge.
GPU_TIMEOUT = 10


class GpuReport(FactBase):
    """
    Returns ``(gpu, problem)`` for the box's first NVIDIA GPU, as ``redbox.app.gpu`` reads
    nvidia-smi on the box: a ``Gpu`` (name, compute capability, driver, the CUDA the driver
    runs, the count) and ``""``, or ``None`` and why not (no nvidia-smi, a driver that does not
    answer, output it cannot read).
    """

    @staticmethod
    def default() -> tuple[gpu.Gpu | None, str]:
        # No output at all (pyinfra skips process()): no nvidia-smi answered.
        return gpu.parse_gpus(None, "", "")

    def command(self) -> str:
        query = shlex.join(gpu.QUERY)
        return (f"if command -v nvidia-smi >/dev/null 2>&1; then "
                f"timeout {GPU_TIMEOUT} {query} 2>&1; echo \"{_EXIT}$?\"; "
                f"timeout {GPU_TIMEOUT} nvidia-smi 2>/dev/null | head -n 5; "
                f"else echo '{_EXIT}missing'; fi")

    def process(self, output) -> tuple[gpu.Gpu | None, str]:
        lines = list(output)
        marks = [index for index, line in enumerate(lines) if line.startswith(_EXIT)]
        if not marks:
            return gpu.parse_gpus(None, "", "")
        query, code, header = lines[:marks[0]], lines[marks[0]][len(_EXIT):], lines[marks[0] + 1:]
        if code == "missing":
            return gpu.parse_gpus(None, "", "")
        if code == "124":
            return gpu.parse_gpus(None, f"nvidia-smi did not answer within {GPU_TIMEOUT} s "
                                  "(a hung driver?)", "")
        return gpu.parse_gpus(int(code) if code.isdigit() else 1, "\n".join(query),
                              "\n".join(header))


class PortListeners(FactBase):
    """
    Returns who listens on each of some TCP ports: ``{port: [{"name", "pid", "supervised"}]}``,
    a port nobody listens on left out. ``supervised`` is True for a process under a supervisord
    (ours); a listener whose process is invisible here (the host, or another container on a
    shared network) has name "?" and pid None.

    + ports: the ports to look at (one process for all of them)
    """

    default = dict

    def command(self, ports) -> str:
        ports = sorted({int(port) for port in ports})
        # A bare box may not have ss (iproute2) yet: then the kernel's socket table and /proc
        # answer the same question, in ss's format.
        proc_listeners = "".join(
            "for inode in $(awk -v p=:HEXPORT '$4 == \"0A\" && substr($2, length($2) - 4) == p "
            "{ print $10 }' /proc/net/tcp /proc/net/tcp6 2>/dev/null); do "
            "pid=$(ls -l /proc/[0-9]*/fd 2>/dev/null | awk -v s=\"socket:[$inode]\" "
            "'/^\\/proc/ { d = $1 } $NF == s { split(d, a, \"/\"); print a[3]; exit }'); "
            "echo \"LISTEN 0 0 *:PORT *:* "
            "users:((\\\"$(cat /proc/$pid/comm 2>/dev/null)\\\",pid=$pid,fd=0))\"; "
            "done; ".replace("HEXPORT", f"{port:04X}").replace("PORT", str(port))
            for port in ports
        )
        sports = " or ".join(f"sport = :{port}" for port in ports)
        ss = f"ss -Hltnp '( {sports} )' 2>/dev/null"
        # ss maps sockets to processes before it lists the sockets: a program that binds in
        # between (sshd after making its host keys, Jupyter seconds after its start) shows no
        # process, as a foreign listener would. Asked again, a socket that was listed is older
        # than the new mapping: only a process truly invisible here still shows none.
        return (
            f"if command -v ss >/dev/null 2>&1; then listeners=$({ss}); "
            "if printf '%s\\n' \"$listeners\" | grep -v 'users:' | grep -q .; "
            f"then listeners=$({ss}); fi; "
            "[ -z \"$listeners\" ] || printf '%s\\n' \"$listeners\"; "
            f"else {proc_listeners}fi; echo ---; "
            "ps -eo pid=,ppid=,comm= 2>/dev/null || true"
        )

    def process(self, output) -> dict[int, list[dict]]:
        lines = list(output)
        split = lines.index("---") if "---" in lines else len(lines)
        parents = {}
        for line in lines[split + 1:]:
            fields = line.split(None, 2)
            if len(fields) == 3 and fields[0].isdigit() and fields[1].isdigit():
                parents[int(fields[0])] = (int(fields[1]), fields[2].strip())

        def supervised(pid: int) -> bool:
            seen = set()
            while pid in parents and pid not in seen:
                seen.add(pid)
                parent, name = parents[pid]
                if name == "supervisord":
                    return True
                pid = parent
            return False

        listeners: dict[int, list[dict]] = {}
        for line in lines[:split]:
            fields = line.split()
            port = fields[3].rpartition(":")[2] if len(fields) > 3 else ""
            if not port.isdigit():
                continue
            found = listeners.setdefault(int(port), [])
            users = re.findall(r'\("([^"]*)",pid=(\d+)', line)
            if not users:
                found.append({"name": "?", "pid": None, "supervised": False})
            # One socket: when any process holding it is ours, all are (a child sshd forked for a
            # connection holds the listener too, and may be gone before ps shows its parent).
            ours = any(supervised(int(pid)) for _, pid in users)
            for name, pid in users:
                found.append({"name": name, "pid": int(pid), "supervised": ours})
        return listeners


class VastLaunchMode(FactBase):
    """
    Returns Vast's launch mode by its own signal: "jupyter" or "ssh" when ``/.launch`` exists
    (Vast's ssh/jupyter modes, where Vast owns PID 1; it names jupyter in jupyter mode), else
    None (the image's entrypoint runs: Vast's ``args`` mode, docker run, a live box).
    """

    def command(self) -> str:
        return ("if [ -e /.launch ]; then grep -qi jupyter /.launch && echo jupyter "
                "|| echo ssh; else echo none; fi")

    def process(self, output) -> str | None:
        mode = "".join(output).strip()
        return mode if mode in ("ssh", "jupyter") else None


# Where supervisord.conf has supervisord keep its pid (one home: the template gets it here).
SUPERVISORD_PIDFILE = "/var/run/supervisord.pid"


class SupervisordRunning(FactBase):
    """
    Returns True when our supervisord runs: the process its pidfile names is a supervisord
    and its control socket is there. Read from /proc, not asked with supervisorctl (a Python
    start, a quarter of a second of every converge).
    """

    def command(self, socket: str, pidfile: str = SUPERVISORD_PIDFILE) -> str:
        return (f"pid=$(cat {shlex.quote(pidfile)} 2>/dev/null) && [ -n \"$pid\" ] && "
                f"[ \"$(cat /proc/$pid/comm 2>/dev/null)\" = supervisord ] && "
                f"[ -S {shlex.quote(socket)} ] && echo yes || echo no")

    def process(self, output) -> bool:
        return "".join(output).strip() == "yes"


class ToolReport(FactBase):
    """
    Returns a box tool's own report of what it would do: the last JSON object it prints when run
    with these arguments (its ``--check`` or read-only mode), or None while the tool is not
    installed (or a file it needs is not there yet).

    + tool: the tool's path
    + args: its arguments, shell-quoted
    + needs: a file that must exist first (none: only the tool)
    """

    def command(self, tool: str, args: str, needs: str = "") -> str:
        guard = f"[ -x {shlex.quote(tool)} ]" + (f" && [ -f {shlex.quote(needs)} ]" if needs
                                                 else "")
        return f"if {guard}; then {shlex.quote(tool)} {args} 2>/dev/null; fi; true"

    def process(self, output) -> dict | None:
        return last_object("\n".join(output))
