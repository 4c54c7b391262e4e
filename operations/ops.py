"""
Operations the concern modules share that pyinfra lacks (or whose stock version always reports
a change): apt installs, root-only secrets, venvs and pinned pip installs, authorized keys;
and where the deploy's shipped files and templates are found.
"""

from __future__ import annotations

import hashlib
import shlex
from io import BytesIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import (
    FileUploadCommand,
    OperationValueError,
    QuoteString,
    StringCommand,
    operation,
)
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.server import AuthorizedKeys
from pyinfra.operations import apt

from operations import _files, settings
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
# The tool venv (the locked pyinfra, uv and the box library): the other venvs install with
# its uv, seconds where pip takes tens (the Jupyter lock: ~60 packages).
TOOL_VENV = "/opt/red/tool"
UV = f"{TOOL_VENV}/bin/uv"


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
    uv_from: str | None = None,
):
    """
    Install requirements into a venv (the tool venv's uv) only when they changed since the
    last install.

    The stamp lives inside the venv: a venv rebuilt for another Python starts without one.

    + venv: the venv's directory
    + stamp_name: names the stamp file in the venv that records what was installed
    + requirements: the requirements text to upload and install (a lock file, or a few pins)
    + requirements_file: or a requirements file already on the host (e.g. in a checkout), hashed
      there; nothing is installed while it does not exist
    + pip_args: more arguments for pip (e.g. ``--extra-index-url=URL``); part of the stamp
    + stamp_key: anything else that makes an install different (e.g. a ref); part of the stamp
    + log: append uv's output to this file; on failure its tail goes to stderr and one line to
      the startup log (without it uv runs quietly)
    + uv_from: the requirement pip installs uv from first when the tool venv has none (the tool
      venv's own first install: its lock brings uv)
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
    # No cache: the image keeps none, and a box's /root would keep hundreds of MB of it.
    pip = StringCommand(
        UV, "pip install --no-cache --python", QuoteString(f"{venv}/bin/python"),
        "-q" if log is None else "--color never",
        "-r",
        QuoteString(target),
        *(QuoteString(arg) for arg in pip_args or []),
    )
    if uv_from:
        pip = StringCommand("{ test -x", UV, "||", QuoteString(f"{TOOL_VENV}/bin/pip"),
                            "install -q --no-cache-dir --disable-pip-version-check",
                            QuoteString(uv_from), "; } &&", pip)
    record = StringCommand("echo", QuoteString(expected), ">", QuoteString(stamp))
    if log is None:
        yield StringCommand(pip, "&&", record)
        return
    # Relative paths in a requirements file (wheels, -e .) are pip's working directory's.
    yield StringCommand(
        "(", "echo", QuoteString(f"== uv pip install -r {target}"), SHELL_TIMESTAMP, ";",
        "cd", QuoteString(str(Path(target).parent)), "&&", pip, ")",
        ">>", QuoteString(log), "2>&1 &&", record,
        failure_note(f"uv: installing {target} into {venv} FAILED", log),
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


@_files.up_front
def _asked_every_run() -> None:
    """The package list (install half)."""
    if settings.halves()[0]:
        _files.expect_fact(DebPackages)


def shipped_text(path: str) -> str:
    return Path(ROOT / path).read_text(encoding="utf-8")
