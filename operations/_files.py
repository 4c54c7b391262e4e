"""
The deploy's own files, checked in batches. pyinfra's ``files.put`` asks three facts per file
(its directory, the file, its checksum): a process each on the box and a round trip each over
SSH, which made them four fifths of a no-op converge. Here one fact stats and hashes every path
the deploy ships (``files/`` and ``templates/`` are laid out by destination) and what the
concerns said they would look at (``expect``), and runs the read-only probes they asked for
(``output_of``: which Python a venv runs); an op whose path already holds what it would write
says so without asking more. Every other case (missing, different, another kind of file) is
pyinfra's own op, unchanged, so a drifted file is repaired exactly as before; where the batch
already knows the file and its directory, the op yields the very commands ``files.put`` would
for those facts, without asking them again (three questions per changed file).

What a batch saw is the box before this run. While the run executes, an op that changed
something makes it stale: the next question asks again (pyinfra's own facts do the same). An
op of this module says which paths it wrote (``wrote``): after it, only those are asked again.
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import re
import shlex
from io import BytesIO, StringIO
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from pyinfra import host, logger, state
from pyinfra.api import (
    FactBase,
    FileUploadCommand,
    OperationValueError,
    StringCommand,
    operation,
)
from pyinfra.api.exceptions import FactError
from pyinfra.api.output import format_text
from pyinfra.api.state import StateStage
from pyinfra.api.util import get_template
from pyinfra.facts.files import Block, FileContents, Sha256File
from pyinfra.operations import files
from pyinfra.operations.util import files as file_utils
from pyinfra.operations.util.files import ensure_mode_int, generate_color_diff

from operations import settings

# Program configs are rendered from one template to many names: all of them, by pattern.
_PATTERNS = ("/etc/supervisor/conf.d/*.conf",)
_KINDS = {"regular file": "file", "regular empty file": "file", "directory": "directory",
          "symbolic link": "link"}
# A pattern's last part: a shell glob of safe characters (the directory is quoted).
_GLOB_NAME = re.compile(r"[A-Za-z0-9._*-]+")
# Separates the probes' outputs (a line no probe prints); each ends with its exit status.
_PROBE_MARK = "--red-probe-output--"
_STATUS_MARK = "--red-probe-status--"
# What a probe of a fact prints when the program the fact needs is missing (as pyinfra's).
_MISSING_COMMAND = "##PYINFRA_NOCMD##"


class PathState(NamedTuple):
    kind: str  # file, directory, link or other
    mode: str  # octal digits, as stat prints them: "644"
    user: str
    group: str
    size: int
    sha256: str | None  # regular files only


class Snapshot(NamedTuple):
    paths: dict  # path -> PathState, for each path asked that exists
    outputs: tuple  # each probe's output lines (a tuple of them)
    statuses: tuple = ()  # each probe's exit status (none given: 0)


# What this run's deploy learned per host (a fleet runs the deploy code per host in one
# process).
_batches: dict[str, _Batch] = {}


def _glob_word(pattern: str) -> str:
    directory, _, name = pattern.rpartition("/")
    if not _GLOB_NAME.fullmatch(name) or not directory.startswith("/"):
        raise OperationValueError(f"{pattern!r}: a pattern is /a/directory/glob-of-[A-Za-z0-9._*-]")
    return f"{shlex.quote(directory)}/{name}"


class BoxState(FactBase):
    """
    Kind, mode, owner, size and (regular files) sha256 of each path that exists, and the output
    and exit status of each probe (stderr ignored): two processes for all the paths, one shell
    for everything. Paths with a newline or a backslash are left out (sha256sum escapes those).

    + paths: absolute paths to look at
    + patterns: /directory/glob patterns, expanded on the box
    + probes: read-only shell commands whose output is wanted
    """

    _RUN = (f"echo '{_PROBE_MARK}'; ( ", f" ) </dev/null 2>/dev/null; echo \"{_STATUS_MARK} $?\"; ")

    def command(self, paths, patterns=(), probes=()):
        words = " ".join([*(shlex.quote(path) for path in paths),
                          *(_glob_word(pattern) for pattern in patterns)])
        # Without operands sha256sum would read its stdin.
        looks = (f"stat --printf '%F\\t%a\\t%U\\t%G\\t%s\\t%n\\n' -- {words} 2>/dev/null; "
                 f"echo '--'; sha256sum -- {words} 2>/dev/null; " if words else "echo '--'; ")
        runs = "".join(f"{self._RUN[0]}{probe}{self._RUN[1]}" for probe in probes)
        return f"{looks}{runs}true"

    @classmethod
    def parts_of(cls, command: str) -> tuple[str, list[str]] | None:
        """
        A BoxState command's look at the paths and the probes it runs (None: not one with
        probes), for a connector that answers commands one at a time (the plan tests' fake).
        """
        if _PROBE_MARK not in command:
            return None
        looks, *runs = command.split(cls._RUN[0])
        return looks, [run.split(cls._RUN[1])[0] for run in runs]

    @staticmethod
    def answer(looked: list[str], outcomes: list[tuple[bool, list[str]]]) -> list[str]:
        """What a BoxState command prints: what its look printed, then each probe's outcome."""
        lines = list(looked) if "--" in looked else [*looked, "--"]
        for ok, printed in outcomes:
            lines += [_PROBE_MARK, *printed, f"{_STATUS_MARK} {0 if ok else 1}"]
        return lines

    @staticmethod
    def default() -> Snapshot:
        return Snapshot({}, ())

    def process(self, output) -> Snapshot:
        states: dict[str, PathState] = {}
        lines = iter(output)
        for line in lines:
            if line == "--":
                break
            kind, mode, user, group, size, path = (line.split("\t", 5) + [""] * 6)[:6]
            if path and size.isdigit():
                states[path] = PathState(_KINDS.get(kind, "other"), mode, user, group,
                                         int(size), None)
        outputs: list[list[str]] = []
        statuses: list[int] = []
        for line in lines:
            if line == _PROBE_MARK:
                outputs.append([])
            elif line.startswith(f"{_STATUS_MARK} ") and len(statuses) < len(outputs):
                code = line.split(" ", 1)[1]
                statuses.append(int(code) if code.isdigit() else 1)
            elif outputs:
                outputs[-1].append(line)
            else:
                digest, _, path = line.partition("  ")
                if path in states and states[path].kind == "file" and len(digest) == 64:
                    states[path] = states[path]._replace(sha256=digest)
        return Snapshot(states, tuple(tuple(lines) for lines in outputs), tuple(statuses))


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


def _changes_so_far() -> frozenset:
    """This host's ops that have run and changed something (none before executing)."""
    if getattr(state, "current_stage", None) != StateStage.Execute:
        return frozenset()
    return frozenset(op_hash for op_hash, data in state.ops.get(host, {}).items()
                     if data.operation_meta.is_complete()
                     and (data.operation_meta.did_change()
                          or not data.operation_meta.did_succeed()))


class _Batch:
    """One host's batches: everything wanted so far, what was asked and what was answered."""

    def __init__(self) -> None:
        self.wanted_paths = set(shipped_paths())
        self.wanted_patterns = set(_PATTERNS)
        self.wanted_probes: dict[str, None] = {}  # in the order asked for
        # The paths each of this module's ops wrote, by op hash (``wrote``); None: unknown.
        self.written: dict[str, set[str] | None] = {}
        self.finished: int | None = None
        self.forget_answers(frozenset())

    def forget_answers(self, changes: frozenset) -> None:
        self.changes = changes
        self._drop_answered_probes()
        self.asked_paths: set[str] = set()
        self.asked_patterns: set[str] = set()
        # Paths to ask again although a pattern asked covers them.
        self.stale: set[str] = set()
        self.states: dict[str, PathState] = {}
        # Each probe's output lines (None: it failed).
        self.outputs: dict[str, list[str] | None] = {}

    def after(self, changes: frozenset) -> None:
        """
        Forget what the ops changed since the last question made stale: the paths they wrote
        when each said which (and every probe: a probe may read them), else everything.
        """
        new = changes - self.changes
        if any(self.written.get(op_hash) is None for op_hash in new):
            self.forget_answers(changes)
            return
        self.changes = changes
        for path in set().union(*(self.written[op_hash] for op_hash in new)):
            self.states.pop(path, None)
            self.asked_paths.discard(path)
            self.stale.add(path)
            self.wanted_paths.add(path)
        self._drop_answered_probes()
        self.outputs.clear()

    def _drop_answered_probes(self) -> None:
        """
        A probe answered before a change is run again only when asked for again (some start
        a program: the package list, the models' check); the ones not answered yet stay wanted.
        """
        if hasattr(self, "outputs"):
            self.wanted_probes = {probe: None for probe in self.wanted_probes
                                  if probe not in self.outputs}

    def covers(self, path: str) -> bool:
        return path not in self.stale and (path in self.asked_paths or any(
            PurePosixPath(path).match(pattern) for pattern in self.asked_patterns))

    def ask(self) -> None:
        """One fact for everything wanted and not asked yet."""
        paths = sorted(self.wanted_paths - self.asked_paths)
        patterns = sorted(self.wanted_patterns - self.asked_patterns)
        probes = [probe for probe in self.wanted_probes if probe not in self.outputs]
        found = host.get_fact(BoxState, paths=paths, patterns=tuple(patterns),
                              probes=tuple(probes)) or Snapshot({}, ())
        self.states.update(found.paths)
        for index, probe in enumerate(probes):
            lines = found.outputs[index] if index < len(found.outputs) else ()
            status = found.statuses[index] if index < len(found.statuses) else 0
            # As pyinfra's facts: a failed command's output is no answer.
            self.outputs[probe] = list(lines) if status == 0 else None
        self.asked_paths.update(paths)
        self.asked_patterns.update(patterns)
        self.stale.difference_update(paths)


def _finished_ops() -> int | None:
    """How many of this host's ops have finished (pyinfra's results), if the state says."""
    results = getattr(state, "get_results_for_host", None)
    if results is None:
        return None
    counts = results(host)
    return counts.ops + counts.error_ops + counts.ignored_error_ops


# What the concerns will ask in this run, said before the first question (``up_front``).
_UP_FRONT: list = []


def up_front(provider):
    """
    A concern's provider (a function of no arguments calling ``expect``, ``expect_fact``, ...)
    of what it will look at in this run: each is called before the host's first question, so
    that it asks all of it at once. Registered when the concern's module is imported.
    """
    _UP_FRONT.append(provider)
    return provider


def _batch() -> _Batch:
    batch = _batches.get(host.name)
    if batch is None:
        batch = _batches[host.name] = _Batch()
        for provider in _UP_FRONT:
            provider()
    # Only when an op has finished since the last look (a scan of every op at each question
    # made a fleet's run quadratic in ops).
    finished = _finished_ops()
    if finished is None or finished != batch.finished:
        batch.finished = finished
        changes = _changes_so_far()
        if changes != batch.changes:
            # What the box held before a change is no answer after: asked again when needed.
            batch.after(changes)
    return batch


def wrote(*paths: str) -> None:
    """
    The op running now writes these paths and nothing else the batch answers: once it has
    run, only they are asked again (without this, everything is).
    """
    op_hash = getattr(host, "current_op_hash", None)
    written = _batch().written
    if op_hash and (op_hash not in written or written[op_hash] is not None):
        written.setdefault(op_hash, set()).update(paths)


def _wrote_unknown() -> None:
    """The op running now hands over to one of pyinfra's: what it writes is not known."""
    op_hash = getattr(host, "current_op_hash", None)
    if op_hash:
        _batch().written[op_hash] = None


def expect(*paths: str) -> None:
    """Paths a concern is about to look at (written from data, not shipped): asked together."""
    _batch().wanted_paths.update(paths)


def expect_with_directories(*paths: str) -> None:
    """Paths an op will write, each with its directory (an upload needs to know it is there)."""
    expect(*paths, *(posixpath.dirname(path) for path in paths))


def expect_pattern(pattern: str) -> None:
    """Every path matching /directory/glob is about to be looked at (a missing one: absent)."""
    _glob_word(pattern)
    _batch().wanted_patterns.add(pattern)


def expect_output(*probes: str) -> None:
    """Read-only commands whose output a concern is about to need: run with the next batch."""
    _batch().wanted_probes.update(dict.fromkeys(probes))


def expect_all(paths=(), patterns=(), probes=()) -> None:
    """expect, expect_pattern and expect_output at once."""
    expect(*paths)
    for pattern in patterns:
        expect_pattern(pattern)
    expect_output(*probes)


def state_of(path: str) -> PathState | None:
    """path's state before this run (None: missing), asked with everything expected so far."""
    batch = _batch()
    if not batch.covers(path):
        batch.wanted_paths.add(path)
        batch.ask()
    return batch.states.get(path)


def _lines_of(probe: str) -> list[str] | None:
    batch = _batch()
    if probe not in batch.outputs:
        batch.wanted_probes[probe] = None
        batch.ask()
    return batch.outputs[probe]


def output_of(probe: str) -> str:
    """A read-only command's output (as pyinfra's Command fact, errors as no output)."""
    return "\n".join(_lines_of(probe) or [])


def fact_probe(fact_class: type[FactBase], **arguments) -> str:
    """A fact's command as a probe, guarded as pyinfra guards it when it needs a program."""
    fact = fact_class()
    command = fact.command(**arguments) if callable(fact.command) else fact.command
    text = command.get_raw_value() if isinstance(command, StringCommand) else str(command)
    required = (fact.requires_command(**arguments) if callable(fact.requires_command)
                else fact.requires_command)
    if required:
        text = (f"if command -v {required} >/dev/null 2>&1; then ( {text} ); "
                f"else echo '{_MISSING_COMMAND}'; fi")
    return text


def expect_fact(fact_class: type[FactBase], **arguments) -> None:
    """A read-only fact a concern is about to need: asked with the next batch."""
    expect_output(fact_probe(fact_class, **arguments))


def fact(fact_class: type[FactBase], **arguments):
    """
    A read-only fact answered from the batch: what ``host.get_fact`` would return (its
    process() of the output; its default when the command printed nothing or needs a program
    the box lacks). A command that fails fails the host, as pyinfra's own facts do.
    """
    instance = fact_class()
    # The command is made first: some facts keep its arguments for process() (File's path).
    lines = _lines_of(fact_probe(fact_class, **arguments))
    instance.command(**arguments)
    if lines is None:
        raise FactError(f"could not load fact: {fact_class.__name__} {arguments}")
    if not lines or lines == [_MISSING_COMMAND]:
        return instance.default()
    return instance.process(lines)


def sha256_of(path: str) -> str | None:
    """A file's sha256 (None: no such file), as pyinfra's Sha256File says (links followed)."""
    found = state_of(path)
    if found is None or found.kind == "file":
        return found.sha256 if found else None
    return host.get_fact(Sha256File, path=path)


def declares(*path_arguments: str, asks=None):
    """
    An operation that says, when it is called, what its body will look at: pyinfra runs the
    body later (while executing), so without this each such op would ask on its own.

    + path_arguments: the names of its keyword arguments that are paths it reads
    + asks: or (its keyword arguments) -> the paths, patterns and probes its body reads
    """
    def wrap(op):
        @functools.wraps(op)
        def call(*args, **kwargs):
            paths = [kwargs[name] for name in path_arguments if kwargs.get(name)]
            expect_with_directories(*paths)
            if asks:
                expect_all(*asks(**kwargs))
            return op(*args, **kwargs)

        call._inner = op._inner
        return call
    return wrap


def forget() -> None:
    """Drop what was learned (tests run many deploys in one process)."""
    _batches.clear()


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


@declares("dest")
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
    yield from _put(src, content, dest, mode=mode, user=user, group=group, **options)


def _put(src, content: bytes, dest: str, *, mode=None, user=None, group=None,
         in_directory: bool = False, **options):
    """
    What ``files.put`` yields for dest: its commands for the facts the batch already has when
    dest is a file or missing in a directory that is there (the facts it would ask), else
    pyinfra's own op.

    + in_directory: dest's directory is there (this op made it: the batch saw the box before)
    """
    found = state_of(dest)
    known = (not options.get("force") and mode is not True
             and (found is None or found.kind == "file")
             and (in_directory or _is(state_of(posixpath.dirname(dest)), "directory")))
    if not known or set(options) - {"add_deploy_dir", "create_remote_dir"}:
        _wrote_unknown()
        yield from files.put._inner(src=src, dest=dest, mode=mode, user=user, group=group,
                                    **options)
        return
    if isinstance(src, str) and options.get("add_deploy_dir", True) and state.cwd:
        src = os.path.join(state.cwd, src)
    mode = ensure_mode_int(mode)
    wrote(dest)
    if found is not None and found.sha256 == hashlib.sha256(content).hexdigest():
        # The same content: only what differs of mode and owner (files.put's own order).
        if mode and not _same_mode(found.mode, mode):
            _show_change("mode", found.mode, mode)
            yield file_utils.chmod(dest, mode)
        if (user and found.user != user) or (group and found.group != group):
            _show_change("chown", f"{found.user}:{found.group}", f"{user}:{group}")
            yield file_utils.chown(dest, user, group)
        return
    _show_diff(dest, content, exists=found is not None)
    temp_dir = (host.current_op_global_arguments or {}).get("_temp_dir")
    yield FileUploadCommand(src, dest, remote_temp_filename=host.get_temp_filename(
        dest, temp_directory=temp_dir))
    if user or group:
        yield file_utils.chown(dest, user, group)
    if mode:
        yield file_utils.chmod(dest, mode)


def _show_diff(dest: str, content: bytes, exists: bool) -> None:
    """With --diff, what files.put shows: the lines it will write (and the file's old ones)."""
    if not state.config.DIFF:
        return
    try:
        desired = content.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        desired = None
    current = []
    if exists:
        current = [line + "\n" for line in host.get_fact(FileContents, path=dest) or []]
    host.log(f"Will {'modify' if exists else 'create'} {format_text(dest, bold=True)}",
             logger.info)
    if desired is None:
        logger.info("Binary file uploaded")
    else:
        for line in generate_color_diff(current, desired):
            logger.info("  %s", line)
    logger.info("")


def _show_change(what: str, old, new) -> None:
    if state.config.DIFF:
        logger.info("%s %s", what, format_text(str(old), "red"))
        logger.info("%s %s", what, format_text(str(new), "green"))


@declares("dest")
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


@declares("path")
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
    if state_of(path) is None or state_of(path).kind == "directory":
        # mkdir -p: and any missing parent.
        wrote(path, *(str(parent) for parent in PurePosixPath(path).parents))
    else:
        _wrote_unknown()
    yield from files.directory._inner(path=path, mode=mode, user=user, group=group)


@declares(asks=lambda path, marker=None, **_: (
    [], [], [fact_probe(Block, path=path, marker=marker, begin=None, end=None)]))
@operation()
def block(path: str, content=None, marker=None, present: bool = True):
    """
    ``files.block`` (the marked block at the end of the file), answered from the batch when
    the block already is as wanted (or, to remove, not there); else pyinfra's own op.

    + path, content, marker, present: as for ``files.block``
    """
    # Asked as files.block asks it (the same arguments: the same question).
    current = fact(Block, path=path, marker=marker, begin=None, end=None)
    if present:
        lines = content.split("\n") if isinstance(content, str) else list(content or [])
        # files.block's own no-change case: the markers found, the lines between them equal.
        if current and current == lines:
            host.noop("content already present")
            return
    elif current is None:
        host.noop("no remove required: file did not exist")
        return
    elif current == []:
        host.noop("no remove required: markers not found")
        return
    _wrote_unknown()
    yield from files.block._inner(path=path, content=content, marker=marker, present=present)


@operation()
def tree(src: str, dest: str, mode: str = "644", dir_mode: str = "755"):
    """
    A shipped flat directory at dest (``files.sync`` without deletion, bytecode left out):
    each file answered from the batch, the changed ones uploaded as ``files.put`` does.

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
        wrote(dest, *(str(parent) for parent in PurePosixPath(dest).parents))
        if state_of(dest) is not None and state_of(dest).kind != "directory":
            _wrote_unknown()
        yield from files.directory._inner(path=dest, mode=dir_mode)
        changed = True
    for entry in entries:
        if entry.is_file() and entry.suffix != ".pyc":
            target = f"{dest}/{entry.name}"
            content = entry.read_bytes()
            if not holds(target, content, mode):
                # The directory is there now: it was, or the op above made it.
                yield from _put(str(entry), content, target, mode=mode, in_directory=True)
                changed = True
    if not changed:
        host.noop(f"{dest} is up to date")
