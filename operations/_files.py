"""
The deploy's questions about the box, asked in batches. pyinfra's file ops ask a fact or three
per path (``files.put``: the file, its directory, its checksum), a process each on the box and a
round trip each over SSH, which made them four fifths of a no-op converge. Here one fact
(``BoxState``) stats and hashes every path the deploy ships (``files/`` and ``templates/`` are
laid out by destination) and what the concerns said they would look at (``expect``), and runs
the read-only probes they asked for (``output_of``, ``fact``). pyinfra's own ops then run
unchanged: while a host has a batch, ``Host.get_fact`` answers the file facts they ask (File,
Directory, Link, Sha1File, Sha256File) and any fact whose probe was asked, from it (``answer``,
through pyinfra's own ``process()``); what it cannot answer is asked of the box as before.

What a batch saw is the box before this run. While the run executes, an op that changed
something makes it stale: the next question asks again (pyinfra's own facts do the same). An
op that says which paths it wrote (``wrote``, ``declares``' writes) has only those asked again.

``RED_BATCH=off`` asks every question on its own, as stock pyinfra does (bench/speedups.py
measures what the batch saves).
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import re
import shlex
from pathlib import PurePosixPath
from typing import NamedTuple

from pyinfra import host, state
from pyinfra.api import FactBase, OperationValueError, StringCommand
from pyinfra.api.exceptions import FactError
from pyinfra.api.host import Host
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host
from pyinfra.facts.files import Block, Directory, File, Link, Sha1File, Sha256File
from pyinfra.operations import files

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
# sha256sum's and sha1sum's lines, told apart by their digest's length.
_DIGESTS = {64: "sha256", 40: "sha1"}
# What a probe of a fact prints when the program the fact needs is missing (as pyinfra's).
_MISSING_COMMAND = "##PYINFRA_NOCMD##"


class PathState(NamedTuple):
    kind: str  # file, directory, link or other
    mode: str  # octal digits, as stat prints them: "644"
    user: str
    group: str
    size: int
    sha256: str | None  # regular files only
    sha1: str | None = None  # regular files only
    # stat's %A %X %Y %Z ("-rw-r--r-- atime mtime ctime"): what pyinfra's File fact parses
    stat: str | None = None


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
    Kind, mode, owner, size, times and (regular files) sha256 and sha1 of each path that exists,
    and the output and exit status of each probe (stderr ignored): three processes for all the
    paths, one shell for everything. Paths with a newline or a backslash are left out (the
    hashing tools escape those).

    Output: ``Snapshot(paths={path: PathState}, outputs=(lines of each probe, ...),
    statuses=(exit status of each probe, ...))``.

    + paths: absolute paths to look at
    + patterns: /directory/glob patterns, expanded on the box
    + probes: read-only shell commands whose output is wanted
    """

    _RUN = (f"echo '{_PROBE_MARK}'; ( ", f" ) </dev/null 2>/dev/null; echo \"{_STATUS_MARK} $?\"; ")

    def command(self, paths, patterns=(), probes=()):
        words = " ".join([*(shlex.quote(path) for path in paths),
                          *(_glob_word(pattern) for pattern in patterns)])
        # Without operands sha256sum would read its stdin.
        looks = (f"stat --printf '%F\\t%a\\t%U\\t%G\\t%s\\t%A %X %Y %Z\\t%n\\n' -- {words} "
                 f"2>/dev/null; echo '--'; sha256sum -- {words} 2>/dev/null; "
                 f"sha1sum -- {words} 2>/dev/null; " if words else "echo '--'; ")
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
    def looked(path: str, mode: str = "644", size: int = 0) -> str:
        """The line its look prints for a regular file (for the plan tests' fake boxes)."""
        return f"regular file\t{mode}\troot\troot\t{size}\t{_symbolic('file', mode)} 0 0 0\t{path}"

    @staticmethod
    def default() -> Snapshot:
        return Snapshot({}, ())

    def process(self, output) -> Snapshot:
        states: dict[str, PathState] = {}
        lines = iter(output)
        for line in lines:
            if line == "--":
                break
            kind, mode, user, group, size, stat, path = (line.split("\t", 6) + [""] * 7)[:7]
            if path and size.isdigit():
                states[path] = PathState(_KINDS.get(kind, "other"), mode, user, group,
                                         int(size), None, None, stat or None)
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
                algorithm = _DIGESTS.get(len(digest))
                if algorithm and path in states and states[path].kind == "file":
                    states[path] = states[path]._replace(**{algorithm: digest})
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

    def __init__(self, preload: bool = True) -> None:
        self.wanted_paths = set(shipped_paths()) if preload else set()
        self.wanted_patterns = set(_PATTERNS) if preload else set()
        self.wanted_probes: dict[str, None] = {}  # in the order asked for
        # The paths each op said it wrote, by op hash (``wrote``, ``declares``' writes).
        self.written: dict[str, set[str]] = {}
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


def batching() -> bool:
    """Whether questions are batched (RED_BATCH=off: each asked on its own, as stock pyinfra)."""
    return os.environ.get("RED_BATCH", "on") != "off"


def _batch() -> _Batch:
    if not batching():
        # Nothing kept or said up front: the question at hand is all it asks.
        return _Batch(preload=False)
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
    if op_hash:
        _batch().written.setdefault(op_hash, set()).update(paths)


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


def declares(*path_arguments: str, asks=None, writes=None):
    """
    An operation that says, when it is called, what its body will look at: pyinfra runs the
    body later (while executing), so without this each such op would ask on its own.

    + path_arguments: the names of its keyword arguments that are paths it reads
    + asks: or (its keyword arguments) -> the paths, patterns and probes its body reads
    + writes: (its keyword arguments) -> the paths it writes (else, once it has changed
      something, everything is asked again)
    """
    def wrap(op):
        @functools.wraps(op)
        def call(*args, **kwargs):
            paths = [kwargs[name] for name in path_arguments if kwargs.get(name)]
            expect_with_directories(*paths)
            if asks:
                expect_all(*asks(**kwargs))
            meta = op(*args, **kwargs)
            op_hash = getattr(meta, "_hash", None)
            if writes and op_hash:
                _batch().written.setdefault(op_hash, set()).update(writes(**kwargs))
            return meta

        call._inner = op._inner
        return call
    return wrap


def _with_parents(path: str) -> list[str]:
    """path and every directory above it (what ``mkdir -p`` may make)."""
    return [path, *(str(parent) for parent in PurePosixPath(path).parents if str(parent) != "/")]


# pyinfra's own ops, their facts answered from the batch (``answer``), said up front.
put = declares("dest", writes=lambda dest, **_: _with_parents(dest))(files.put)
template = declares("dest", writes=lambda dest, **_: _with_parents(dest))(files.template)
directory = declares("path", writes=lambda path, **_: _with_parents(path))(files.directory)
block = declares(
    asks=lambda path, marker=None, **_: (
        [], [], [fact_probe(Block, path=path, marker=marker, begin=None, end=None)]),
    writes=lambda path, **_: [path])(files.block)


# The file facts pyinfra's ops ask, answered from a path's state: the kind each one wants.
_STAT_FACTS = {File: "file", Directory: "directory", Link: "link"}
_HASH_FACTS = {Sha1File: "sha1", Sha256File: "sha256"}
# stat's %A type letter for a kind (states made without %A).
_TYPE_LETTER = {"file": "-", "directory": "d", "link": "l"}
UNKNOWN = object()


def _symbolic(kind: str, mode: str) -> str | None:
    """stat's %A for a kind and octal mode ("file", "644" -> "-rw-r--r--"; None: unknown)."""
    letter = _TYPE_LETTER.get(kind)
    if letter is None or not mode.isdigit():
        return None
    bits = int(mode, 8)
    return letter + "".join("rwx"[i % 3] if bits & (0o400 >> i) else "-" for i in range(9))


def _stat_line(path: str, found: PathState) -> str | None:
    """What pyinfra's File fact reads from the box (its stat -c format), from a path's state."""
    stat = found.stat or _symbolic(found.kind, found.mode)
    if stat is None:
        return None
    symbolic, *times = stat.split(" ")
    atime, mtime, ctime = [*times, "", "", ""][:3]
    return (f"user={found.user} group={found.group} mode={symbolic} atime={atime} "
            f"mtime={mtime} ctime={ctime} size={found.size} '{path}'")


def answer(fact_class, args=(), kwargs=None):
    """
    A fact pyinfra's ops ask, from this host's batch: what the box would answer (the fact's
    own process() of the same stat line), or UNKNOWN where the batch does not know (a link's
    target, a path it leaves out, global arguments): then the box is asked.
    """
    kwargs = dict(kwargs or {})
    # Only a batch the deploy has begun (none with RED_BATCH=off): making one here would run
    # the concerns' up-front questions inside this one (a fact they need asked twice). The
    # batch's own question goes to the box.
    if (fact_class is BoxState or host.name not in _batches
            or any(name.startswith("_") for name in kwargs)):
        return UNKNOWN
    if fact_class in _STAT_FACTS or fact_class in _HASH_FACTS:
        path = kwargs.pop("path", None) if not args else (args[0] if len(args) == 1 else None)
        if (kwargs or not isinstance(path, str) or not path.startswith("/")
                or "\n" in path or "\\" in path):
            return UNKNOWN
        return _file_fact(fact_class, path)
    if args or not isinstance(fact_class, type) or not issubclass(fact_class, FactBase):
        return UNKNOWN
    probe = fact_probe(fact_class, **kwargs)
    batch = _batch()
    if probe not in batch.outputs and probe not in batch.wanted_probes:
        return UNKNOWN
    return fact(fact_class, **kwargs)


def _file_fact(fact_class, path: str):
    found = state_of(path)
    if found is None:
        return None
    if fact_class in _HASH_FACTS:
        digest = getattr(found, _HASH_FACTS[fact_class]) if found.kind == "file" else None
        return digest or UNKNOWN
    line = _stat_line(path, found)
    # A link's target is not in the batch.
    if line is None or (found.kind == "link" and fact_class is Link):
        return UNKNOWN
    return fact_class().process([line])


# (Imported twice, as a reloading test does, it still wraps pyinfra's own.)
_stock_get_fact = getattr(Host.get_fact, "__wrapped__", Host.get_fact)


def stock_get_fact(box: Host, fact_class, *args, **kwargs):
    """pyinfra's own Host.get_fact: the box asked, whatever the batch holds."""
    return _stock_get_fact(box, fact_class, *args, **kwargs)


def _get_fact(self, name_or_cls, *args, **kwargs):
    # Only for the host whose deploy is running (a batch belongs to it).
    if ctx_host.get() is self:
        found = answer(name_or_cls, args, kwargs)
        if found is not UNKNOWN:
            return found
    return _stock_get_fact(self, name_or_cls, *args, **kwargs)


Host.get_fact = functools.wraps(_stock_get_fact)(_get_fact)


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


def holds(dest: str, content: bytes, mode=None, user=None, group=None) -> bool:
    """Whether dest, as the batch saw it, is a regular file with this content and ownership."""
    found = state_of(dest)
    return (_is(found, "file", mode, user, group)
            and found.sha256 == hashlib.sha256(content).hexdigest())


