"""
Building blocks shared by the concern modules: operations pyinfra lacks (or whose stock
version always reports a change), and the supervisor program template.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import (
    FactBase,
    FileUploadCommand,
    OperationValueError,
    QuoteString,
    StringCommand,
    operation,
)
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.server import AuthorizedKeys
from pyinfra.operations import apt

from operations import _files, settings, threads
from redbox.core.log import SHELL_STAMP, SHELL_TIMESTAMP, startup_log

ROOT = settings.ROOT
# Hosts whose apt lists this run already refreshes: per host, since pyinfra runs the deploy
# code once per host in one process (a fleet).
_apt_lists_fresh: set[str] = set()


def template(concern: str, dest: str) -> str:
    """The template for ``dest``, laid out by destination under ``templates/<concern>``."""
    return str(ROOT / "templates" / concern / dest.lstrip("/")) + ".j2"


def static_file(concern: str, dest: str) -> str:
    """The shipped file for ``dest``, laid out by destination under ``files/<concern>``."""
    return str(ROOT / "files" / concern / dest.lstrip("/"))


def upload(concern: str, dest: str, mode: str = "755", shipped_as: str | None = None):
    """
    Upload a file shipped under ``files/<concern>`` to ``dest``, as the op "Upload <dest>".

    + shipped_as: its path under ``files/<concern>`` when not ``dest`` itself
    """
    return _files.put(
        name=f"Upload {dest}",
        src=static_file(concern, shipped_as or dest),
        dest=dest,
        mode=mode,
    )


def installed_packages() -> dict:
    """
    The box's Debian packages, asked once per host and run (every install step checks its
    list against it; the facts of a run are the box before it anyway).
    """
    return settings.once_per_host("Debian packages", lambda: _files.fact(DebPackages) or {})


def apt_install(packages: list[str], name: str):
    """
    Install Debian packages without recommends, refreshing apt's lists only when something is
    missing: the image ships without lists, and a boot must not wait on the mirror.
    """
    missing = [package for package in packages if package not in installed_packages()]
    if missing and host.name not in _apt_lists_fresh:
        apt.update(name="Update apt's package lists")
        _apt_lists_fresh.add(host.name)
    return _deb_packages(name=name, packages=packages, missing=missing)


@operation()
def _deb_packages(packages: list[str], missing: list[str]):
    """
    ``apt.packages`` (no recommends) when some are missing; else nothing more to ask.

    + packages: the packages this step installs
    + missing: those the run's package list lacks
    """
    if not missing:
        host.noop(f"{len(packages)} packages already installed")
        return
    yield from apt.packages._inner(packages=packages, no_recommends=True)


def forget_apt_lists() -> None:
    """A new apt source was added: the next install on this host must refresh the lists."""
    _apt_lists_fresh.discard(host.name)


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
            for name, pid in users:
                found.append({"name": name, "pid": int(pid), "supervised": supervised(int(pid))})
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


# The ports Vast's own services hold in each of its modes (its sshd on 22; in jupyter mode
# its Jupyter on 8080, with TLS): ours never start there, even before Vast's have bound them.
VAST_OWNED_PORTS = {
    "ssh": {22: "Vast's sshd"},
    "jupyter": {22: "Vast's sshd", 8080: "Vast's Jupyter"},
}


def launch_mode() -> str | None:
    """Vast's launch mode of this box (recorded once per host in the startup log)."""
    return settings.once_per_host("launch mode", _launch_mode)


def _launch_mode() -> str | None:
    mode = _files.fact(VastLaunchMode)
    settings.record([
        f"Vast's {mode} mode (/.launch): Vast owns PID 1 and "
        + ", ".join(f"port {port} ({owner})" for port, owner in VAST_OWNED_PORTS[mode].items())
        if mode else "entrypoint mode (no /.launch): Red's supervisord runs every service"
    ], topic="launch")
    return mode


def _service_ports(*more: int) -> list[int]:
    return sorted({int(settings.get(key)) for key in settings.PORT_ENV} | {int(p) for p in more})


def _port_listeners(port: int) -> dict[int, list[dict]]:
    """Who listens on the service ports (and this one), in one look."""
    ports = _service_ports(port)
    return settings.once_per_host(("port listeners", tuple(ports)), lambda: _files.fact(
        PortListeners, ports=ports) or {})


@_files.up_front
def _asked_every_run() -> None:
    """The package list (install half); the launch mode and the service ports (configure)."""
    install, configure = settings.halves()
    if install:
        _files.expect_fact(DebPackages)
    if configure:
        _files.expect_fact(VastLaunchMode)
        _files.expect_fact(PortListeners, ports=_service_ports())


def autostart_unless_port_taken(program: str, port: int, env_name: str, check: bool) -> bool:
    """
    Whether a program listening on ``port`` may start: not when something other than our
    supervisord's programs holds the port (Vast's own sshd or Jupyter in its ssh/jupyter
    launch modes). Then the program keeps its config with autostart=false, and one line in
    /logs/startup.log says what was skipped.

    + check: look at the port (the configure half); False keeps autostart (image build)
    """
    if not check:
        return True
    owner = VAST_OWNED_PORTS.get(launch_mode() or "", {}).get(port)
    listeners = _port_listeners(port).get(int(port), [])
    foreign = [item for item in listeners if not item["supervised"]]
    if not foreign and not owner:
        return True
    holders = ", ".join(dict.fromkeys([
        *(f"{item['name']} (pid {item['pid']})" if item["pid"] else "a process outside this box"
          for item in foreign),
        *([owner] if owner and not foreign else []),
    ]))
    settings.record(
        [f"{program}: port {port} is held by {holders}: not starting a second one "
         f"(autostart=false; set {env_name} to a free port to run ours)"],
        topic="ports",
    )
    return False


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


@_files.declares("path")
@operation()
def secret(path: str, value: str | None = None, length: int = 24):
    """
    Keep a secret in a root-only (0600) file, never showing it in output or diffs.

    + path: the secret's file
    + value: the secret to store; ``None`` keeps the stored one, or generates one once
    + length: characters of a generated secret
    """
    found = _files.state_of(path)
    stored = _files.is_file(path)
    _files.wrote(path, f"{path}.new")
    fix_mode = StringCommand("chmod", "600", QuoteString(path))
    if value is None:
        if stored and found.size > 0:
            if not _files.mode_is(found, "600"):
                yield fix_mode
            else:
                host.noop(f"{path} already holds a secret")
            return
        # 48 random bytes give ~60 alphanumerics, more than any length asked for here.
        yield StringCommand(
            "umask 077 && head -c 48 /dev/urandom | base64 | tr -dc A-Za-z0-9 | head -c",
            str(int(length)),
            ">",
            QuoteString(f"{path}.new"),
            "&& mv -f",
            QuoteString(f"{path}.new"),
            QuoteString(path),
        )
        return
    wanted = hashlib.sha256(value.encode()).hexdigest()
    if stored and found.sha256 == wanted:
        if not _files.mode_is(found, "600"):
            yield fix_mode
        else:
            host.noop(f"{path} already holds this secret")
        return
    staging = f"{path}.new"
    yield FileUploadCommand(BytesIO(value.encode()), staging)
    yield StringCommand(
        "chmod 600", QuoteString(staging), "&& mv -f", QuoteString(staging), QuoteString(path)
    )


# The install stamps pip_requirements keeps in a venv, by name (the venv op asks for them all).
STAMP_PATTERN = ".red-*.stamp"


def venv_asks(path: str, python: str, **_) -> tuple[list[str], list[str], list[str]]:
    """What the venv op looks at: pyvenv.cfg, the install stamps, both interpreters."""
    quoted = shlex.quote(path)
    return ([f"{path}/pyvenv.cfg"], [f"{path}/{STAMP_PATTERN}"], [
        f"{quoted}/bin/python -c 'import sys; print(sys.executable, *sys.version_info[:2])'",
        f"{shlex.quote(python)} -c 'import sys; print(*sys.version_info[:2])'",
    ])


@_files.declares(asks=venv_asks)
@operation()
def venv(path: str, python: str):
    """
    Create a venv for a given interpreter; a venv built on another Python is moved aside.

    + path: the venv's directory
    + python: the interpreter, e.g. ``python3.10``
    """
    asks = venv_asks(path, python)
    # Asked together however the op was called (a nested call skips the declaration).
    _files.expect_all(*asks)
    probe, version_probe = asks[2]
    current = _files.output_of(probe)
    expected_version = _files.output_of(version_probe)
    if current and expected_version and current.split(" ", 1)[-1] == expected_version:
        host.noop(f"{path} is a venv of {python}")
        return
    if _files.is_file(f"{path}/pyvenv.cfg"):
        # Another Python built it: keep it for the user, build the right one beside it.
        yield StringCommand(
            "mv",
            QuoteString(path),
            # One word: the quoted prefix and the time, without a space between.
            StringCommand(QuoteString(f"{path}.moved-aside-"), SHELL_STAMP, _separator=""),
        )
    yield StringCommand(python, "-m", "venv", QuoteString(path))


def failure_note(what: str, log: str) -> StringCommand:
    """
    ``|| { ... }`` for a command whose output goes to ``log``: when it fails, the tail of the log
    goes to stderr, one line naming the failure and the log to ``<logs>/startup.log``, and the
    command's exit code is kept.
    """
    return StringCommand(
        "|| { rc=$?; tail -n 20", QuoteString(log), ">&2;",
        "printf '%s %s (exit %s): %s; details in %s\\n'", SHELL_TIMESTAMP,
        QuoteString(what), '"$rc"', '"$(tail -n 1', QuoteString(log), '2>/dev/null)"',
        QuoteString(log), ">>", QuoteString(startup_log(settings.get("base_logs_dir"))),
        "2>/dev/null;", "exit $rc; }",
    )


@_files.declares("requirements_file")
@operation()
def pip_requirements(
    venv: str,
    stamp_name: str,
    *,
    requirements: str | None = None,
    requirements_file: str | None = None,
    pip_args: list[str] | None = None,
    stamp_key: str = "",
    log: str | None = None,
):
    """
    pip-install requirements into a venv only when they changed since the last install.

    The stamp lives inside the venv: a venv rebuilt for another Python starts without one.

    + venv: the venv's directory
    + stamp_name: names the stamp file in the venv that records what was installed
    + requirements: the requirements text to upload and install (a lock file, or a few pins)
    + requirements_file: or a requirements file already on the host (e.g. in a checkout), hashed
      there; nothing is installed while it does not exist
    + pip_args: more arguments for pip (e.g. ``--extra-index-url=URL``); part of the stamp
    + stamp_key: anything else that makes an install different (e.g. a ref); part of the stamp
    + log: append pip's output to this file; on failure its tail goes to stderr and one line to
      the startup log (without it pip runs quietly)
    """
    if (requirements is None) == (requirements_file is None):
        raise OperationValueError("give either requirements or requirements_file")
    extras = [*(pip_args or []), stamp_key] if pip_args or stamp_key else []
    if requirements is not None:
        content = hashlib.sha256(requirements.encode()).hexdigest()
        target = f"{venv}/red-{stamp_name}.txt"
    else:
        content = _files.sha256_of(requirements_file)
        if not content:
            host.noop(f"{requirements_file} does not exist: nothing to install")
            return
        target = requirements_file
    expected = (
        hashlib.sha256("\n".join([content, *extras]).encode()).hexdigest() if extras else content
    )
    stamp = f"{venv}/{STAMP_PATTERN.replace('*', stamp_name)}"
    # The stamp holds what `echo` wrote: the hash and a newline.
    if _files.holds(stamp, f"{expected}\n".encode()):
        host.noop(f"{venv} already has {stamp_name} installed")
        return
    if requirements is not None:
        yield FileUploadCommand(BytesIO(requirements.encode()), target)
    pip = StringCommand(
        QuoteString(f"{venv}/bin/pip"),
        "install --no-cache-dir --disable-pip-version-check",
        "-q" if log is None else "--progress-bar off",
        "-r",
        QuoteString(target),
        *(QuoteString(arg) for arg in pip_args or []),
    )
    record = StringCommand("echo", QuoteString(expected), ">", QuoteString(stamp))
    if log is None:
        yield StringCommand(pip, "&&", record)
        return
    # Relative paths in a requirements file (wheels, -e .) are pip's working directory's.
    yield StringCommand(
        "(", "echo", QuoteString(f"== pip install -r {target}"), SHELL_TIMESTAMP, ";",
        "cd", QuoteString(str(Path(target).parent)), "&&", pip, ")",
        ">>", QuoteString(log), "2>&1 &&", record,
        failure_note(f"pip: installing {target} into {venv} FAILED", log),
    )


_KEY_TYPES = ("ssh-", "ecdsa-", "sk-")


def _key_blob(line: str) -> str:
    """Identify a key by its type and base64, not by its comment or options prefix."""
    tokens = line.split()
    for index, token in enumerate(tokens[:-1]):
        if token.startswith(_KEY_TYPES):
            return f"{token} {tokens[index + 1]}"
    return line.strip()


# root's keys: the ones authorized_keys adds to unless told another file.
ROOT_AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"


@operation()
def authorized_keys(keys: list[str], path: str = ROOT_AUTHORIZED_KEYS):
    """
    Add public keys to an authorized_keys file; keys already there (and comments) are kept.

    + keys: full public key lines, already validated
    + path: the authorized_keys file
    """
    present = {_key_blob(line) for line in _files.fact(AuthorizedKeys, user="root", path=path)}
    missing = [key for key in keys if _key_blob(key) not in present]
    if not missing:
        host.noop(f"{path} has every key")
        return
    staging = f"{path}.red-new"
    yield FileUploadCommand(BytesIO(("\n".join(missing) + "\n").encode()), staging)
    quoted = QuoteString(path)
    yield StringCommand(
        "umask 077 && touch", quoted,
        # A last line without a newline would fuse with the first appended key.
        "&& { [ ! -s", quoted, "] || [ -z \"$(tail -c1", quoted, ")\" ] || echo >>", quoted, "; }",
        "&& cat", QuoteString(staging), ">>", quoted,
        "&& rm -f", QuoteString(staging), "&& chmod 600", quoted,
    )


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


def shipped_text(path: str) -> str:
    return Path(ROOT / path).read_text(encoding="utf-8")
