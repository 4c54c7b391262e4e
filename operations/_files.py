"""
The deploy's own files, checked in batches. pyinfra's ``files.put`` asks three facts per file
(its directory, the file, its checksum): a process each on the box and a round trip each over
SSH, which made them four fifths of a no-op converge. Here one fact stats and hashes every path
the deploy ships (``files/`` and ``templates/`` are laid out by destination) and what the
concerns said they would look at (``expect``), and an op whose path already holds what it
would write says so without asking more. Every other case (missing, different, another kind
of file) is pyinfra's own op, unchanged, so a drifted file is repaired exactly as before.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from io import BytesIO, StringIO
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from pyinfra import host, state
from pyinfra.api import FactBase, OperationValueError, operation
from pyinfra.api.util import get_template
from pyinfra.operations import files

from operations import settings

# Program configs are rendered from one template to many names: all of them, by pattern.
_PATTERNS = ("/etc/supervisor/conf.d/*.conf",)
_KINDS = {"regular file": "file", "regular empty file": "file", "directory": "directory",
          "symbolic link": "link"}


class PathState(NamedTuple):
    kind: str  # file, directory, link or other
    mode: str  # octal digits, as stat prints them: "644"
    user: str
    group: str
    size: int
    sha256: str | None  # regular files only


# What this run's deploy learned per host (a fleet runs the deploy code per host in one
# process): the paths asked, their states (a path asked but absent is missing), and the paths
# expected next (asked together with the next one).
_snapshots: dict[str, dict] = {}


class PathStates(FactBase):
    """
    Kind, mode, owner, size and (regular files) sha256 of each path that exists: two processes
    for all of them. Paths with a newline or a backslash are left out (sha256sum escapes those).

    + paths: absolute paths to look at
    + patterns: shell globs, expanded on the box
    """

    def command(self, paths, patterns=()):
        words = " ".join([*(shlex.quote(path) for path in paths), *patterns])
        return (f"stat --printf '%F\\t%a\\t%U\\t%G\\t%s\\t%n\\n' -- {words} 2>/dev/null; "
                f"echo '--'; sha256sum -- {words} 2>/dev/null; true")

    @staticmethod
    def default() -> dict:
        return {}

    def process(self, output):
        states: dict[str, PathState] = {}
        lines = iter(output)
        for line in lines:
            if line == "--":
                break
            kind, mode, user, group, size, path = (line.split("\t", 5) + [""] * 6)[:6]
            if path and size.isdigit():
                states[path] = PathState(_KINDS.get(kind, "other"), mode, user, group,
                                         int(size), None)
        for line in lines:
            digest, _, path = line.partition("  ")
            if path in states and states[path].kind == "file" and len(digest) == 64:
                states[path] = states[path]._replace(sha256=digest)
        return states


def shipped_paths(root=settings.ROOT) -> list[str]:
    """Every destination under files/<concern> and templates/<concern>, and their parents."""
    found: set[str] = set()
    for tree, suffix in (("files", ""), ("templates", ".j2")):
        for concern in sorted((root / tree).iterdir()):
            for item in concern.rglob("*"):
                if not item.is_file() or "__pycache__" in item.parts or item.suffix == ".pyc":
                    continue
                dest = "/" + item.relative_to(concern).as_posix()
                if suffix and dest.endswith(suffix):
                    dest = dest[: -len(suffix)]
                path = PurePosixPath(dest)
                found.add(str(path))
                found.update(str(parent) for parent in path.parents if str(parent) != "/")
    # The patterns cover their directories (and the one template rendered to many names).
    return sorted(path for path in found if "\n" not in path and "\\" not in path
                  and not any(PurePosixPath(path).match(pattern) for pattern in _PATTERNS))


def _snapshot() -> dict:
    if host.name not in _snapshots:
        _snapshots[host.name] = {"asked": set(), "states": {}, "expected": set(shipped_paths())}
    return _snapshots[host.name]


def expect(*paths: str) -> None:
    """Paths a concern is about to look at (written from data, not shipped): asked together."""
    snapshot = _snapshot()
    snapshot["expected"].update(path for path in paths if path not in snapshot["asked"])


def state_of(path: str) -> PathState | None:
    """path's state before this run (None: missing), asked with every path expected so far."""
    snapshot = _snapshot()
    # The patterns are expanded by the first batch.
    covered = path in snapshot["asked"] or (bool(snapshot["asked"]) and any(
        PurePosixPath(path).match(pattern) for pattern in _PATTERNS))
    if not covered:
        snapshot["expected"].add(path)
        first = not snapshot["asked"]
        asked = sorted(snapshot["expected"] - snapshot["asked"])
        found = host.get_fact(PathStates, paths=asked, patterns=_PATTERNS if first else ())
        snapshot["states"].update(found or {})
        snapshot["asked"].update(asked)
        snapshot["expected"].clear()
    return snapshot["states"].get(path)


def forget() -> None:
    """Drop what was learned (tests run many deploys in one process)."""
    _snapshots.clear()


def mode_is(found: PathState | None, wanted) -> bool:
    """Whether an existing path has this mode (e.g. "600")."""
    return found is not None and _same_mode(found.mode, wanted)


def is_file(path: str) -> bool:
    """Whether path was a regular file before this run (as pyinfra's File fact says)."""
    return _is(state_of(path), "file")


def _is(found: PathState | None, kind: str, mode=None, user=None, group=None) -> bool:
    """Whether found exists as this kind, with this mode and owner (None: any)."""
    return (found is not None and found.kind == kind and _same_mode(found.mode, mode)
            and user in (None, found.user) and group in (None, found.group))


def _same_mode(actual: str, wanted) -> bool:
    if wanted is None:
        return True
    try:
        return int(str(actual), 8) == int(str(wanted), 8)
    except ValueError:
        return False


def _content(src) -> bytes:
    if isinstance(src, StringIO):
        return src.getvalue().encode("utf-8")
    if isinstance(src, BytesIO):
        return src.getvalue()
    if hasattr(src, "read"):
        raise TypeError(f"cannot hash {src!r} without consuming it")
    cwd = getattr(state, "cwd", None)
    if not os.path.isabs(src) and cwd:
        src = os.path.join(cwd, src)
    with open(src, "rb") as handle:
        return handle.read()


def holds(dest: str, content: bytes, mode=None, user=None, group=None) -> bool:
    """Whether dest, as the batch saw it, is a regular file with this content and ownership."""
    found = state_of(dest)
    return (_is(found, "file", mode, user, group)
            and found.sha256 == hashlib.sha256(content).hexdigest())


@operation()
def put(src, dest: str, mode=None, user=None, group=None, **options):
    """
    ``files.put``, answered from the batch when dest already holds exactly src.

    + src: a local path, or a StringIO/BytesIO
    + dest, mode, user, group, options: as for ``files.put``
    """
    content = _content(src)
    if holds(dest, content, mode, user, group):
        host.noop(f"{dest} is up to date")
        return
    if isinstance(src, (StringIO, BytesIO)):
        src.seek(0)
    yield from files.put._inner(src=src, dest=dest, mode=mode, user=user, group=group,
                                **options)


@operation()
def template(src: str, dest: str, mode=None, user=None, group=None, **data):
    """
    ``files.template``, rendered here (pyinfra's own renderer, the same context) and answered
    from the batch when dest already holds the result.

    + src: the jinja2 template
    + dest, mode, user, group: as for ``files.template``
    + data: the template's variables
    """
    data.setdefault("host", host)
    data.setdefault("state", state)
    data.setdefault("inventory", getattr(state, "inventory", None))
    rendered = StringIO(get_template(src).render(data))
    yield from put._inner(src=rendered, dest=dest, mode=mode, user=user, group=group,
                          add_deploy_dir=False)


@operation()
def directory(path: str, mode=None, user=None, group=None):
    """
    ``files.directory`` (present), answered from the batch when path already is one with this
    mode and ownership.

    + path, mode, user, group: as for ``files.directory``
    """
    if _is(state_of(path), "directory", mode, user, group):
        host.noop(f"{path} is a directory")
        return
    yield from files.directory._inner(path=path, mode=mode, user=user, group=group)


@operation()
def tree(src: str, dest: str, mode: str = "644", dir_mode: str = "755"):
    """
    A shipped flat directory at dest (``files.sync`` without deletion, bytecode left out):
    each file answered from the batch, the changed ones by pyinfra's own ``files.put``.

    + src: the local directory (files only, besides __pycache__)
    + dest: where it goes
    + mode, dir_mode: the files' and the directory's modes
    """
    entries = sorted(Path(src).iterdir())
    nested = [entry.name for entry in entries if entry.is_dir() and entry.name != "__pycache__"]
    if nested:
        raise OperationValueError(f"{src} has subdirectories ({', '.join(nested)}): not flat")
    changed = False
    if not _is(state_of(dest), "directory", dir_mode):
        yield from files.directory._inner(path=dest, mode=dir_mode)
        changed = True
    for entry in entries:
        if entry.is_file() and entry.suffix != ".pyc":
            target = f"{dest}/{entry.name}"
            if not holds(target, entry.read_bytes(), mode):
                yield from files.put._inner(src=str(entry), dest=target, mode=mode)
                changed = True
    if not changed:
        host.noop(f"{dest} is up to date")
