"""
Red's own operations, table-driven in pyinfra's style: facts in, commands out, and the
no-change case. Each row runs the operation's generator (``op._inner``, as pyinfra's own
operation tests do) on a fake host that answers the row's facts; nothing runs anywhere.
"""

from __future__ import annotations

import grp
import hashlib
import logging
import os
import pwd
import socket
import subprocess
from io import StringIO
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import ClassVar

import pytest
from pyinfra.api import (
    FileUploadCommand,
    FunctionCommand,
    OperationError,
    OperationValueError,
    StringCommand,
)
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_state
from pyinfra.operations import apt, files

from operations import _files, facts, notebooks, ops, runtime, settings, visomaster
from redbox.core.log import SHELL_STAMP, SHELL_TIMESTAMP
from tests.conftest import ROOT


class FakeHost:
    """
    Answers facts from a table: ``{(FactName, arg prefix, ...): value}``, a key matching when
    each of its arguments starts the fact's argument; unknown facts get the fact's default.
    """

    name = "@fake/ops"
    # What the settings resolver reads of a host: no --data, no connector of its own.
    inventory = SimpleNamespace(get_override_data=dict)
    connector_cls = None
    # What pyinfra's own file ops read of a host outside a run.
    def __init__(self, facts: dict):
        self.current_op_global_arguments: dict = {}
        self.current_op_hash = None
        self.facts = facts
        self.noops: list[str] = []
        self.data: dict = {}

    def get_fact(self, fact, *args, **kwargs):
        if fact is _files.BoxState:
            return self._box_state(**kwargs)
        given = [str(value) for value in (*args, *kwargs.values())]
        for key, value in self.facts.items():
            if key == BOX:
                continue
            name, *prefixes = key
            if name != fact.__name__ or len(prefixes) != len(given):
                continue
            if all(actual.startswith(prefix)
                   for prefix, actual in zip(prefixes, given, strict=True)):
                return value
        return fact.default()

    def _box_state(self, paths, patterns=(), probes=()) -> _files.Snapshot:
        """The batch's answer from the row's box: its paths asked and its probes' outputs."""
        states, outputs = self.facts.get(BOX, ({}, {}))
        found = {path: value for path, value in states.items() if path in paths
                 or any(PurePosixPath(path).match(pattern) for pattern in patterns)}
        return _files.Snapshot(found, tuple(
            tuple(next((out for prefix, out in outputs.items() if probe.startswith(prefix)),
                       "").split("\n"))
            for probe in probes))

    def noop(self, description: str) -> None:
        self.noops.append(description)

    @staticmethod
    def get_temp_dir_config() -> str:
        return "/tmp"

    @staticmethod
    def get_temp_filename(dest: str, temp_directory=None) -> str:
        return f"/tmp/pyinfra-{hashlib.sha256(dest.encode()).hexdigest()[:40]}"


class StockHost(FakeHost):
    """
    Answers pyinfra's own file facts path by path from a batch's states, as the box they
    describe would: what pyinfra's ops yield for the very facts the batch had.
    """

    _KIND: ClassVar[dict[str, str]] = {"File": "file", "Directory": "directory",
                                       "Link": "link"}

    def __init__(self, states: dict):
        super().__init__({})
        self.states = states

    def get_fact(self, fact, *args, **kwargs):
        name = fact.__name__
        found = self.states.get(kwargs.get("path", args[0] if args else None))
        if name in self._KIND:
            if found is None or found.kind != self._KIND[name]:
                return found and False
            return {"user": found.user, "group": found.group, "mode": int(found.mode),
                    "size": found.size}
        if name in ("Sha256File", "Sha1File"):
            return found and getattr(found, name[:-4].lower())
        if name == "Md5File":
            return None
        return super().get_fact(fact, *args, **kwargs)


class BoxHost(StockHost):
    """
    One box in these states as the deploy's hosts meet it: a fact answered from the batch
    where it can be (as the patched Host.get_fact does), else asked of the box; what was asked.
    """

    def __init__(self, states: dict):
        super().__init__(states)
        self.asked_facts: list[str] = []

    def get_fact(self, fact, *args, **kwargs):
        found = _files.answer(fact, args, kwargs)
        if found is not _files.UNKNOWN:
            return found
        self.asked_facts.append(fact.__name__)
        if fact is _files.BoxState:
            return _files.Snapshot({path: found for path, found in self.states.items()
                                    if path in kwargs["paths"]}, ())
        return super().get_fact(fact, *args, **kwargs)


# What pyinfra's own file ops read of the run's state: no --diff, no deploy dir.
FAKE_STATE = SimpleNamespace(config=SimpleNamespace(DIFF=False), cwd=None, inventory=None)


def shown(command) -> str:
    """A yielded command as a line: shell text, ``upload DEST: CONTENT`` or ``call F: ARGS``."""
    if isinstance(command, str):
        return command
    if isinstance(command, StringCommand):
        return command.get_raw_value()
    if isinstance(command, FileUploadCommand):
        src = command.src
        content = src.getvalue() if hasattr(src, "getvalue") else Path(src).name
        content = content.decode() if isinstance(content, bytes) else content
        return f"upload {command.dest}: {content}"
    if isinstance(command, FunctionCommand):
        # The first argument is the command it runs.
        return f"call {command.function.__name__}: {shown(command.args[0])}"
    raise AssertionError(f"unexpected command {command!r}")


# The batch's own fact reader (the fixture below swaps it for the op tables).
BATCHED_FACT = _files.fact


@pytest.fixture(autouse=True)
def ops_alone(monkeypatch):
    """
    Each op on its own: the deploy's up-front questions are not asked, and a fact an op reads
    through the batch comes from the row's table (the batch's facts are tested on a real
    box below).
    """
    monkeypatch.setattr(_files, "_UP_FRONT", [])
    monkeypatch.setattr(_files, "fact", lambda fact_class, **arguments: ctx_host.get().get_fact(
        fact_class, **arguments))


def run(op, facts: dict, host=None, **kwargs) -> tuple[list[str], list[str]]:
    """The commands an operation yields for these facts, and its no-change notes."""
    fake = host or FakeHost(facts)
    # What the batch of files learned belongs to one run.
    _files.forget()
    try:
        with ctx_host.use(fake), ctx_state.use(FAKE_STATE):
            # The host's batch, begun as the deploy begins it when an op is called.
            _files.expect()
            commands = [shown(command) for command in op._inner(**kwargs)]
    finally:
        _files.forget()
    return commands, fake.noops


def stock(op, states: dict, **kwargs) -> list[str]:
    """What pyinfra's own op yields on a box in these states (the batch's PathStates)."""
    return run(op, {}, host=StockHost(states), **kwargs)[0]


def check(op, facts, kwargs, commands, noop):
    got, noops = run(op, facts, **kwargs)
    assert got == commands
    # Nothing to do is said (pyinfra's no-change), and only then.
    assert (noops == [noop]) if noop else (noops == [] and got)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 (pyinfra's own checksum)


# A file whose content is no longer what was shipped.
DRIFTED = {"sha256": sha("drifted"), "sha1": sha1("drifted")}


# The row's box as the batch (BoxState) sees it: {path: PathState}, {probe prefix: output}.
BOX = "box"


def batch(states: dict, outputs: dict | None = None) -> dict:
    """Facts: what the batch finds on the box (any paths, patterns and probes asked)."""
    return {BOX: (states, outputs or {})}


# -- secret ------------------------------------------------------------------------------------

SECRET = "/etc/red/secrets/token"
GENERATE = ("umask 077 && head -c 48 /dev/urandom | base64 | tr -dc A-Za-z0-9 | head -c 24 > "
            f"{SECRET}.new && mv -f {SECRET}.new {SECRET}")
STORE = f"chmod 600 {SECRET}.new && mv -f {SECRET}.new {SECRET}"


def stored(mode="600", size=24, content="old"):
    """The batch's answer for the secret's file."""
    return batch({SECRET: _files.PathState("file", mode, "root", "root", size, sha(content))})


@pytest.mark.parametrize(("facts", "kwargs", "commands", "noop"), [
    ({}, {}, [GENERATE], None),
    (stored(size=0, content=""), {}, [GENERATE], None),
    (stored(), {}, [], f"{SECRET} already holds a secret"),
    (stored(mode="644"), {}, [f"chmod 600 {SECRET}"], None),
    ({}, {"value": "s3cret-x"}, [f"upload {SECRET}.new: s3cret-x", STORE], None),
    (stored(), {"value": "s3cret-x"}, [f"upload {SECRET}.new: s3cret-x", STORE], None),
    (stored(content="s3cret-x"), {"value": "s3cret-x"}, [],
     f"{SECRET} already holds this secret"),
    (stored(mode="640", content="s3cret-x"), {"value": "s3cret-x"}, [f"chmod 600 {SECRET}"],
     None),
], ids=["missing", "empty", "kept", "kept-wrong-mode", "given-new", "given-changed",
        "given-same", "given-same-wrong-mode"])
def test_secret(facts, kwargs, commands, noop):
    check(ops.secret, facts, {"path": SECRET, **kwargs}, commands, noop)


def test_secret_value_never_shows_in_a_command_line():
    commands, _ = run(ops.secret, {}, path=SECRET, value="s3cret-x")
    assert not any("s3cret-x" in line for line in commands if not line.startswith("upload "))


# -- venv --------------------------------------------------------------------------------------

VENV = "/opt/red/venv"
PROBE = f"{VENV}/bin/python -c"
WANTED = "python3.10 -c"
CREATE = f"python3.10 -m venv {VENV}"


PYVENV_CFG = {f"{VENV}/pyvenv.cfg": _files.PathState("file", "644", "root", "root", 90, "x")}


@pytest.mark.parametrize(("facts", "commands", "noop"), [
    (batch({}, {WANTED: "3 10"}), [CREATE], None),
    (batch(PYVENV_CFG, {PROBE: f"{VENV}/bin/python 3 10", WANTED: "3 10"}), [],
     f"{VENV} is a venv of python3.10"),
    (batch(PYVENV_CFG, {PROBE: f"{VENV}/bin/python 3 11", WANTED: "3 10"}),
     [f"mv {VENV} {VENV}.moved-aside-{SHELL_STAMP}", CREATE], None),
    # A directory that is no venv (no pyvenv.cfg) is built into, not moved.
    (batch({}, {WANTED: "3 10"}), [CREATE], None),
    # No python3.10 yet (installed later in this run): the venv is made, nothing moved.
    (batch(PYVENV_CFG, {PROBE: f"{VENV}/bin/python 3 11"}),
     [f"mv {VENV} {VENV}.moved-aside-{SHELL_STAMP}", CREATE], None),
], ids=["missing", "right-python", "other-python-moved-aside", "not-a-venv", "no-python-yet"])
def test_venv(facts, commands, noop):
    check(ops.venv, facts, {"path": VENV, "python": "python3.10"}, commands, noop)


# -- pip_requirements --------------------------------------------------------------------------

LOCK = "jupyterlab==4.0.0\n"
STAMP = f"{VENV}/.red-lab.stamp"
REQS = "/workspace/App/requirements.txt"
PIP = f"/opt/red/tool/bin/uv pip install --no-cache --python {VENV}/bin/python"
# The stamp of REQS (hash "ab"*32) installed with one extra index and a ref.
FILE_STAMP = hashlib.sha256("\n".join(["ab" * 32, "--extra-index-url=https://x.test",
                                       "ref=v1"]).encode()).hexdigest()
FILE_KWARGS = {"requirements_file": REQS, "pip_args": ["--extra-index-url=https://x.test"],
               "stamp_key": "ref=v1", "log": "/logs/pip.log"}
FILE_INSTALL = (
    f"( echo '== uv pip install -r {REQS}' {SHELL_TIMESTAMP} ; cd /workspace/App && "
    f"{PIP} --color never -r {REQS} --extra-index-url=https://x.test ) >> /logs/pip.log "
    "2>&1 && echo "
    f"{FILE_STAMP} > {STAMP} || {{ rc=$?; tail -n 20 /logs/pip.log >&2; printf '%s %s (exit %s): "
    f"%s; details in %s\\n' {SHELL_TIMESTAMP} "
    f"'uv: installing {REQS} into {VENV} FAILED' \"$rc\" \"$(tail -n 1 /logs/pip.log "
    "2>/dev/null)\" /logs/pip.log >> /logs/startup.log 2>/dev/null; exit $rc; }"
)


def file_state(sha256: str, size: int = 65) -> _files.PathState:
    return _files.PathState("file", "644", "root", "root", size, sha256)


def stamp(digest: str) -> dict:
    """The stamp as `echo` wrote it: the digest and a newline."""
    return {STAMP: file_state(sha(f"{digest}\n"))}


REQS_FILE = {REQS: file_state("ab" * 32)}


@pytest.mark.parametrize(("facts", "kwargs", "commands", "noop"), [
    ({}, {"requirements": LOCK},
     [f"upload {VENV}/red-lab.txt: {LOCK}",
      f"{PIP} -q -r {VENV}/red-lab.txt && echo {sha(LOCK)} > {STAMP}"], None),
    (batch(stamp("0" * 64)), {"requirements": LOCK},
     [f"upload {VENV}/red-lab.txt: {LOCK}",
      f"{PIP} -q -r {VENV}/red-lab.txt && echo {sha(LOCK)} > {STAMP}"], None),
    (batch(stamp(sha(LOCK))), {"requirements": LOCK}, [],
     f"{VENV} already has lab installed"),
    ({}, FILE_KWARGS, [], f"{REQS} does not exist: nothing to install"),
    (batch(REQS_FILE), FILE_KWARGS, [FILE_INSTALL], None),
    (batch({**REQS_FILE, **stamp(FILE_STAMP)}), FILE_KWARGS, [],
     f"{VENV} already has lab installed"),
    # Another ref with the same file: a new stamp, so pip runs again.
    (batch({**REQS_FILE, **stamp(FILE_STAMP)}),
     {**FILE_KWARGS, "stamp_key": "ref=v2"}, ["<changed>"], None),
    # A requirements file behind a link is hashed as pyinfra does (the link followed).
    ({BOX: ({REQS: _files.PathState("link", "777", "root", "root", 9, None)}, {}),
      ("Sha256File", REQS): "ab" * 32}, FILE_KWARGS, [FILE_INSTALL], None),
    # The tool venv's first install: pip brings uv, the lock's pin, unless it is there.
    ({}, {"requirements": LOCK, "uv_from": "uv==0.13.9"},
     [f"upload {VENV}/red-lab.txt: {LOCK}",
      "{ test -x /opt/red/tool/bin/uv || /opt/red/tool/bin/pip install -q --no-cache-dir "
      f"--disable-pip-version-check uv==0.13.9 ; }} && {PIP} -q -r {VENV}/red-lab.txt && "
      f"echo {sha(LOCK)} > {STAMP}"], None),
], ids=["text-fresh", "text-changed", "text-same", "file-missing", "file-fresh", "file-same",
        "file-new-ref", "file-behind-a-link", "uv-bootstrapped"])
def test_pip_requirements(facts, kwargs, commands, noop):
    if commands == ["<changed>"]:
        got, noops = run(ops.pip_requirements, facts, venv=VENV, stamp_name="lab", **kwargs)
        assert noops == [] and len(got) == 1 and FILE_STAMP not in got[0]
        return
    check(ops.pip_requirements, facts, {"venv": VENV, "stamp_name": "lab", **kwargs},
          commands, noop)


def test_the_tool_venv_bootstraps_uv_from_the_locks_own_pin():
    lock = (settings.ROOT / runtime.TOOL_LOCK).read_text()
    assert runtime.uv_pin(lock) == "uv==0.13.9"
    with pytest.raises(ValueError, match="pins uv 0 times"):
        runtime.uv_pin("pyinfra==3.10.0\n")


def test_pip_requirements_wants_one_source():
    for kwargs in ({}, {"requirements": LOCK, "requirements_file": REQS}):
        with pytest.raises(OperationValueError):
            run(ops.pip_requirements, {}, venv=VENV, stamp_name="lab", **kwargs)


# -- authorized_keys ---------------------------------------------------------------------------

KEYS = "/root/.ssh/authorized_keys"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey me@laptop"
OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther them@work"
APPEND = (f"umask 077 && touch {KEYS} && {{ [ ! -s {KEYS} ] || [ -z \"$(tail -c1 {KEYS} )\" ] "
          f"|| echo >> {KEYS} ; }} && cat {KEYS}.red-new >> {KEYS} && rm -f {KEYS}.red-new && "
          f"chmod 600 {KEYS}")


@pytest.mark.parametrize(("present", "keys", "commands", "noop"), [
    ([], [KEY], [f"upload {KEYS}.red-new: {KEY}\n", APPEND], None),
    ([OTHER], [KEY, OTHER], [f"upload {KEYS}.red-new: {KEY}\n", APPEND], None),
    ([KEY], [KEY], [], f"{KEYS} has every key"),
    # The same key with another comment, or behind options, is already there.
    (["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey old-comment"], [KEY], [], f"{KEYS} has every key"),
    ([f'from="10.0.0.0/8",no-pty {KEY}'], [KEY], [], f"{KEYS} has every key"),
    ([], [], [], f"{KEYS} has every key"),
], ids=["empty", "one-missing", "present", "other-comment", "with-options", "none-given"])
def test_authorized_keys(present, keys, commands, noop):
    facts = {("AuthorizedKeys", "root", KEYS): present}
    check(ops.authorized_keys, facts, {"keys": keys}, commands, noop)


# -- the notebook upload -----------------------------------------------------------------------

SRC = str(ROOT / "files/notebooks/notebooks/find_provisioning_script.ipynb")
SHIPPED = hashlib.sha256(Path(SRC).read_bytes()).hexdigest()
NOTEBOOK = "/notebooks/find.ipynb"
RECORD = "/var/lib/red/notebooks/find.ipynb.sha256"
REMEMBER = f"echo {SHIPPED} > {RECORD}"
UPLOAD = [f"upload {NOTEBOOK}.red-new: find_provisioning_script.ipynb",
          f"chmod 644 {NOTEBOOK}.red-new && mv -f {NOTEBOOK}.red-new {NOTEBOOK} && {REMEMBER}"]
EDITED, OLD = "e" * 64, "0" * 64


@pytest.mark.parametrize(("current", "recorded", "commands", "noop"), [
    (SHIPPED, SHIPPED, [], f"{NOTEBOOK} is the notebook Red ships"),
    (SHIPPED, None, [REMEMBER], None),
    (None, None, UPLOAD, None),
    (None, OLD, UPLOAD, None),
    # An older version Red shipped, unedited: replaced.
    (OLD, OLD, UPLOAD, None),
    # Edited by its user, and Red ships what it shipped last time: kept as it is.
    (EDITED, SHIPPED, [], f"{NOTEBOOK} was edited by its user: kept as it is"),
    # Edited, and Red ships a new version: the edited one is moved aside first.
    (EDITED, OLD, ["<moved aside>", *UPLOAD], None),
    (EDITED, None, ["<moved aside>", *UPLOAD], None),
], ids=["shipped", "shipped-unrecorded", "missing", "deleted", "older", "edited-same-version",
        "edited-new-version", "edited-unrecorded"])
def test_notebook(current, recorded, commands, noop):
    # The notebook (its sha256 is current) and the record, as `echo` wrote it.
    facts = batch({
        **({NOTEBOOK: file_state(current)} if current else {}),
        **({RECORD: file_state(sha(f"{recorded}\n"))} if recorded else {}),
    })
    kwargs = {"src": SRC, "dest": NOTEBOOK, "record": RECORD, "logs_dir": "/logs"}
    got, noops = run(notebooks._notebook, facts, **kwargs)
    if commands[:1] == ["<moved aside>"]:
        aside, got = got[0], got[1:]
        commands = commands[1:]
        assert "aside=/notebooks/find.moved-aside-$stamp.ipynb" in aside
        assert f'mv -- {NOTEBOOK} "$aside" || exit 1' in aside
        assert ">> /logs/startup.log" in aside
    assert got == commands
    assert (noops == [noop]) if noop else noops == []


# -- the checkout ------------------------------------------------------------------------------

URL, REF, DEST = "file:///srv/app.git", "v1", "/workspace/App"
CHECKOUT = ("call _run_checkout: /opt/red/bin/red-app-checkout --url file:///srv/app.git --ref v1 "
            "--dest /workspace/App --log /logs/checkout.log --retries 3 --backoff 2.0")


@pytest.mark.parametrize(("report", "commands", "noop"), [
    (None, [CHECKOUT], None),
    ({"in_state": False, "state": "missing"}, [CHECKOUT], None),
    ({"in_state": False, "state": "wrong_commit"}, [CHECKOUT], None),
    ({"in_state": True, "state": "in_state"}, [], f"{DEST} is {URL} at {REF}"),
], ids=["tool-missing", "missing", "wrong-commit", "in-state"])
def test_checkout(report, commands, noop):
    facts = {("ToolReport", "/opt/red/bin/red-app-checkout",
              f"--check --url {URL} --ref {REF} --dest {DEST}"): report}
    kwargs = {"url": URL, "ref": REF, "dest": DEST, "log": "/logs/checkout.log", "retries": 3,
              "backoff": 2}
    check(visomaster._checkout, facts, kwargs, commands, noop)


def test_checkout_quotes_what_it_is_given():
    commands, _ = run(visomaster._checkout, {}, url="file:///srv/my app.git", ref="v1",
                      dest="/workspace/my app", log="/logs/c.log", retries=0, backoff=0)
    assert "--url 'file:///srv/my app.git' --ref v1 --dest '/workspace/my app'" in commands[0]


# -- the deploy's files, checked in one batch --------------------------------------------------

SHIPPED = "/opt/red/bin/red-xvnc"
WRAPPER = (ROOT / "files/desktop" / SHIPPED.lstrip("/")).read_text()
SAME = _files.PathState("file", "755", "root", "root", len(WRAPPER), sha(WRAPPER), sha1(WRAPPER))
BIN = {"/opt/red/bin": _files.PathState("directory", "755", "root", "root", 4096, None)}
UPLOAD_WRAPPER = [f"upload {SHIPPED}: red-xvnc", f"chmod 755 {SHIPPED}"]


@pytest.mark.parametrize(("states", "kwargs", "commands"), [
    ({SHIPPED: SAME, **BIN}, {}, []),
    ({SHIPPED: SAME, **BIN}, {"mode": "0755"}, []),
    ({SHIPPED: SAME, **BIN}, {"user": "root", "group": "root"}, []),
    ({SHIPPED: SAME._replace(**DRIFTED), **BIN}, {}, UPLOAD_WRAPPER),
    ({SHIPPED: SAME._replace(mode="644"), **BIN}, {}, [f"chmod 755 {SHIPPED}"]),
    ({SHIPPED: SAME, **BIN}, {"user": "nobody"}, [f"chown nobody {SHIPPED}"]),
    ({SHIPPED: SAME._replace(**DRIFTED, mode="600"), **BIN},
     {"user": "root", "group": "staff"},
     [f"upload {SHIPPED}: red-xvnc", f"chown root:staff {SHIPPED}", f"chmod 755 {SHIPPED}"]),
    (BIN, {}, UPLOAD_WRAPPER),
    ({SHIPPED: SAME._replace(kind="directory", sha256=None), **BIN}, {}, None),
    ({SHIPPED: SAME._replace(kind="link", sha256=None), **BIN}, {}, None),
    ({}, {}, None),
    ({SHIPPED: SAME._replace(**DRIFTED)}, {}, None),
], ids=["same", "same-mode-spelled-0755", "same-owner", "changed-content", "changed-mode",
        "other-owner", "changed-all", "missing", "a-directory", "a-link",
        "missing-in-an-unknown-directory", "changed-in-an-unknown-directory"])
def test_put_is_pyinfras_own_asking_the_box_only_through_the_batch(states, kwargs, commands):
    src = str(ROOT / "files/desktop" / SHIPPED.lstrip("/"))
    arguments = {"src": src, "dest": SHIPPED, "mode": "755", **kwargs}
    box = BoxHost(states)
    got, noops = run(_files.put, {}, host=box, **arguments)
    # pyinfra's own op asking its own facts of a box in these states, command for command.
    assert (got, noops) == run(files.put, {}, host=StockHost(states), **arguments)
    assert (noops == [f"file {SHIPPED} is already uploaded"]) if commands == [] else noops == []
    if commands is not None:
        assert got == commands
    else:
        assert any(line.startswith(("upload ", "mkdir")) for line in got), got
    # Its file, directory and checksum facts were the batch's (a directory at dest: asked
    # again for the file in it).
    assert set(box.asked_facts) == {"BoxState"}


def test_put_shows_the_diff_files_put_shows(caplog):
    """With --diff, the lines pyinfra's files.put logs for a changed file, its old ones read."""
    states = {"/etc/red/a.conf": _file("old\nkept\n"), "/etc/red": TREE_DIR}
    logs = {}
    for name, op, host in (("ours", _files.put, BoxHost(states)),
                           ("stock", files.put, StockHost(states))):
        host.log = lambda message, log_func: log_func(message)
        host.facts = {("FileContents", "/etc/red/a.conf"): ["old", "kept"]}
        caplog.clear()
        diffing = SimpleNamespace(**{**vars(FAKE_STATE), "config": SimpleNamespace(DIFF=True)})
        _files.forget()
        with caplog.at_level(logging.INFO, logger="pyinfra"), ctx_host.use(host), \
                ctx_state.use(diffing):
            list(op._inner(src=StringIO("new\nkept\n"), dest="/etc/red/a.conf", mode="644"))
        _files.forget()
        logs[name] = [record.getMessage() for record in caplog.records]
    assert logs["ours"] == logs["stock"]
    assert any("Will modify" in line for line in logs["ours"])
    assert any("new" in line for line in logs["ours"])
    assert any("old" in line for line in logs["ours"])


class RecordingHost(FakeHost):
    def __init__(self, facts: dict):
        super().__init__(facts)
        self.asked: list[dict] = []

    def get_fact(self, fact, *args, **kwargs):
        self.asked.append(kwargs)
        return super().get_fact(fact, *args, **kwargs)


def test_paths_are_asked_in_batches_each_once():
    fake = RecordingHost(batch({"/etc/red/a": SAME}))
    _files.forget()
    try:
        with ctx_host.use(fake), ctx_state.use(FAKE_STATE):
            _files.expect("/etc/red/a", "/etc/red/b")
            # The first question asks every shipped path, the patterns and what was expected.
            assert _files.state_of("/etc/red/a") == SAME
            assert _files.state_of("/etc/red/b") is None
            assert _files.state_of(SHIPPED) is None
            assert _files.state_of("/etc/supervisor/conf.d/xvnc.conf") is None
            first = fake.asked[0]
            assert {"/etc/red/a", "/etc/red/b", SHIPPED} <= set(first["paths"])
            assert first["patterns"] == ("/etc/supervisor/conf.d/*.conf",)
            assert len(fake.asked) == 1
            # Then one fact per batch of what is new: expected paths go with the next miss.
            _files.expect("/etc/red/c")
            assert _files.state_of("/etc/red/d") is None
            assert [sorted(ask["paths"]) for ask in fake.asked[1:]] == \
                [["/etc/red/c", "/etc/red/d"]]
            assert _files.state_of("/etc/red/c") is None and len(fake.asked) == 2
    finally:
        _files.forget()


def test_a_venv_and_its_install_stamps_are_one_question():
    lab = {STAMP: file_state(sha(f"{sha(LOCK)}\n"))}
    fake = RecordingHost(batch({**PYVENV_CFG, **lab},
                               {PROBE: f"{VENV}/bin/python 3 10", WANTED: "3 10"}))
    _files.forget()
    try:
        with ctx_host.use(fake), ctx_state.use(FAKE_STATE):
            assert list(ops.venv._inner(path=VENV, python="python3.10")) == []
            assert list(ops.pip_requirements._inner(
                venv=VENV, stamp_name="lab", requirements=LOCK)) == []
    finally:
        _files.forget()
    assert len(fake.asked) == 1
    assert f"{VENV}/.red-*.stamp" in fake.asked[0]["patterns"]
    assert [probe.split(" -c")[0] for probe in fake.asked[0]["probes"]] == \
        [f"{VENV}/bin/python", "python3.10"]


class Meta:
    """An op's outcome as pyinfra keeps it (OperationMeta)."""

    def __init__(self, complete: bool, changed: bool):
        self.complete, self.changed = complete, changed

    def is_complete(self) -> bool:
        return self.complete

    def did_change(self) -> bool:
        return self.changed

    def did_succeed(self) -> bool:
        return True


def test_while_executing_a_change_makes_the_next_question_ask_again():
    fake = RecordingHost(batch({"/etc/red/a": SAME}, {"probe": "before"}))
    ops: dict = {}
    executing = SimpleNamespace(**vars(FAKE_STATE), current_stage=StateStage.Execute,
                                ops={fake: ops})
    _files.forget()
    try:
        with ctx_host.use(fake), ctx_state.use(executing):
            assert _files.state_of("/etc/red/a") == SAME and _files.output_of("probe") == "before"
            ops["unchanged"] = SimpleNamespace(operation_meta=Meta(True, False))
            ops["running"] = SimpleNamespace(operation_meta=Meta(False, False))
            assert _files.state_of("/etc/red/a") == SAME and len(fake.asked) == 2
            # An op changed the box: what was asked is asked again, the paths at once, an
            # answered probe when it is asked for.
            ops["changed"] = SimpleNamespace(operation_meta=Meta(True, True))
            fake.facts[BOX] = ({}, {"probe": "after"})
            assert _files.state_of("/etc/red/a") is None
            assert "/etc/red/a" in fake.asked[2]["paths"] and fake.asked[2]["probes"] == ()
            assert fake.asked[2]["patterns"] == ("/etc/supervisor/conf.d/*.conf",)
            assert _files.output_of("probe") == "after"
            assert len(fake.asked) == 4 and fake.asked[3]["probes"] == ("probe",)
    finally:
        _files.forget()


def test_after_an_op_that_says_what_it_wrote_only_that_is_asked_again():
    conf = "/etc/supervisor/conf.d/a.conf"
    fake = RecordingHost(batch({"/etc/red/a": SAME, "/etc/red/b": SAME, conf: SAME},
                               {"probe": "before"}))
    ops: dict = {}
    executing = SimpleNamespace(**vars(FAKE_STATE), current_stage=StateStage.Execute,
                                ops={fake: ops})

    def ran(op_hash: str, *written: str) -> None:
        fake.current_op_hash = op_hash
        if written:
            _files.wrote(*written)
        fake.current_op_hash = None
        ops[op_hash] = SimpleNamespace(operation_meta=Meta(True, True))

    _files.forget()
    try:
        with ctx_host.use(fake), ctx_state.use(executing):
            _files.expect_all(["/etc/red/b"], probes=["probe"])
            assert _files.state_of("/etc/red/a") == SAME and _files.state_of(conf) == SAME
            assert _files.output_of("probe") == "before" and len(fake.asked) == 1
            ran("put-a", "/etc/red/a", conf)
            fake.facts[BOX] = ({"/etc/red/b": SAME}, {"probe": "after"})
            # What it did not write is still known; what it wrote is asked again, by name
            # even where a pattern had covered it, both together.
            assert _files.state_of("/etc/red/b") == SAME and len(fake.asked) == 1
            assert _files.state_of("/etc/red/a") is None
            assert sorted(fake.asked[1]["paths"]) == ["/etc/red/a", conf]
            assert fake.asked[1]["patterns"] == () and fake.asked[1]["probes"] == ()
            assert _files.state_of(conf) is None and len(fake.asked) == 2
            # A probe may read anything: asked again, when it is asked for (some start a
            # program: not with every question after a change).
            assert _files.output_of("probe") == "after" and len(fake.asked) == 3
            assert fake.asked[2]["probes"] == ("probe",) and fake.asked[2]["paths"] == []
            # An op that did not say what it wrote (pyinfra's own, a shell): everything.
            ran("shell")
            assert _files.state_of("/etc/red/b") == SAME and len(fake.asked) == 4
            assert "/etc/red/b" in fake.asked[3]["paths"]
    finally:
        _files.forget()


def test_template_renders_like_pyinfra_and_answers_from_the_batch():
    src = str(ROOT / "templates/base/etc/default/locale.j2")
    rendered, _ = run(files.template, {}, src=src, dest="/etc/default/locale", mode="644",
                      locale="C.UTF-8")
    content = next(line.split(": ", 1)[1] for line in rendered if line.startswith("upload "))
    state = {"/etc/default/locale": _file(content), "/etc/default": TREE_DIR}
    box = BoxHost(state)
    commands, noops = run(_files.template, {}, host=box, src=src, dest="/etc/default/locale",
                          mode="644", locale="C.UTF-8")
    assert (commands, noops) == ([], ["file /etc/default/locale is already uploaded"])
    assert box.asked_facts == ["BoxState"]
    changed, _ = run(_files.template, {}, host=BoxHost(state), src=src,
                     dest="/etc/default/locale", mode="644", locale="de_DE.UTF-8")
    assert changed == stock(files.template, state, src=src, dest="/etc/default/locale",
                            mode="644", locale="de_DE.UTF-8")
    assert changed[0].startswith("upload /etc/default/locale: ") and "de_DE" in changed[0]


@pytest.mark.parametrize(("state", "mode", "same"), [
    (_files.PathState("directory", "755", "root", "root", 4096, None), "755", True),
    (_files.PathState("directory", "700", "root", "root", 4096, None), "755", False),
    (_files.PathState("file", "755", "root", "root", 1, sha("x")), "755", False),
    (None, "755", False),
], ids=["same", "changed-mode", "a-file", "missing"])
def test_directory_answers_from_the_batch(state, mode, same):
    path = "/opt/red/bin"
    states = {path: state} if state else {}
    if state and state.kind == "file":
        # Refused by both, as pyinfra refuses it (nothing of the user's is removed).
        for op, host in ((_files.directory, BoxHost(states)), (files.directory, StockHost(states))):
            with pytest.raises(OperationError, match="exists and is not a directory"):
                run(op, {}, host=host, path=path, mode=mode)
        return
    box = BoxHost(states)
    commands, noops = run(_files.directory, {}, host=box, path=path, mode=mode)
    assert box.asked_facts == ["BoxState"]
    if same:
        assert (commands, noops) == ([], [f"directory {path} already exists"])
    else:
        expected = stock(files.directory, states, path=path, mode=mode)
        assert commands == expected and expected


def test_the_batch_covers_every_shipped_destination_and_its_parents():
    paths = set(_files.shipped_paths())
    for tree, suffix in (("files", ""), ("templates", ".j2")):
        for item in (ROOT / tree).rglob("*"):
            if item.is_file() and "__pycache__" not in item.parts:
                concern = item.relative_to(ROOT / tree).parts[0]
                dest = "/" + item.relative_to(ROOT / tree / concern).as_posix()
                dest = dest.removesuffix(suffix)
                if dest.startswith("/etc/supervisor/conf.d/"):
                    continue  # by pattern: every program's config
                assert dest in paths
                assert str(Path(dest).parent) in paths | {"/"}
    assert "/etc/supervisor/conf.d/program.conf" not in paths


def test_box_state_reads_a_real_tree_and_runs_its_probes(tmp_path):
    # The fact's command against this machine's own shell, stat and sha256sum.
    (tmp_path / "file").write_text("content\n")
    (tmp_path / "file").chmod(0o640)
    (tmp_path / "empty").write_text("")
    (tmp_path / "dir").mkdir(mode=0o700)
    (tmp_path / "dir").chmod(0o700)
    (tmp_path / "link").symlink_to(tmp_path / "file")
    (tmp_path / "with space").write_text("x")
    (tmp_path / "globbed.conf").write_text("g")
    (tmp_path / "a dir").mkdir()
    (tmp_path / "a dir" / ".red-x.stamp").write_text("s")
    for name in ("empty", "with space", "globbed.conf", "a dir/.red-x.stamp"):
        (tmp_path / name).chmod(0o644)
    names = ["file", "empty", "dir", "link", "with space", "missing"]
    fact = _files.BoxState()
    probes = ("printf 'one\\ntwo\\n'", "echo oops >&2; exit 3", "cat", "echo '--'; echo last",
              "echo partial; exit 2")
    command = fact.command(paths=[str(tmp_path / name) for name in names],
                           patterns=[f"{tmp_path}/*.conf", f"{tmp_path}/a dir/.red-*.stamp"],
                           probes=probes)
    # A probe reading stdin gets nothing (over SSH it would wait for ever).
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True,
                            input="not for the probes\n", timeout=10)
    answer = fact.process(result.stdout.splitlines())
    # Each probe's output (stdout only) and exit status.
    assert answer.outputs == (("one", "two"), (), (), ("--", "last"), ("partial",))
    assert answer.statuses == (0, 3, 0, 0, 2)
    states = answer.paths
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name

    def path(name):
        return str(tmp_path / name)

    def state(kind, mode, size, content=None):
        digests = (sha(content), sha1(content)) if content is not None else (None, None)
        return _files.PathState(kind, mode, user, group, size, *digests)

    # stat's %A and times, checked against the file facts by the oracle below.
    assert all(found.stat.split(" ")[0][0] in "-dl" for found in states.values())
    assert {path: found._replace(stat=None) for path, found in states.items()} == {
        path("file"): state("file", "640", 8, "content\n"),
        path("empty"): state("file", "644", 0, ""),
        path("dir"): state("directory", "700", (tmp_path / "dir").stat().st_size),
        path("link"): state("link", "777", len(str(tmp_path / "file"))),
        path("with space"): state("file", "644", 1, "x"),
        path("globbed.conf"): state("file", "644", 1, "g"),
        path("a dir/.red-x.stamp"): state("file", "644", 1, "s"),
    }
    # Probes alone: nothing is stat'ed, and sha256sum does not read stdin.
    alone = subprocess.run(["sh", "-c", fact.command(paths=[], probes=("echo hi",))],
                           capture_output=True, text=True, check=True, input="x\n", timeout=10)
    assert fact.process(alone.stdout.splitlines()) == _files.Snapshot({}, (("hi",),), (0,))


def test_a_pattern_must_be_a_directory_and_a_plain_glob():
    for bad in ("relative/*.conf", "/etc/$(reboot)", "/etc/a b*"):
        with pytest.raises(OperationValueError):
            _files.BoxState().command(paths=[], patterns=[bad])


# -- Debian packages, asked once per run -------------------------------------------------------

@pytest.mark.parametrize(("missing", "noop"), [
    ([], "2 packages already installed"),
    (["curl"], None),
])
def test_deb_packages(missing, noop):
    got, noops = run(ops._deb_packages, {}, packages=["git", "curl"], missing=missing)
    if noop:
        assert (got, noops) == ([], [noop])
    else:
        stock, _ = run(apt.packages, {}, packages=["git", "curl"], no_recommends=True)
        assert got == stock and any("apt-get" in line for line in got)


def _file(text: str) -> _files.PathState:
    return _files.PathState("file", "644", "root", "root", len(text), sha(text), sha1(text))


TREE_DIR = _files.PathState("directory", "755", "root", "root", 4096, None)


def test_ops_are_scanned_for_changes_only_when_one_has_finished():
    fake = RecordingHost(batch({"/etc/red/a": SAME}))
    counts = SimpleNamespace(ops=0, error_ops=0, ignored_error_ops=0)
    ops: dict = {}
    executing = SimpleNamespace(**vars(FAKE_STATE), current_stage=StateStage.Execute,
                                ops={fake: ops}, get_results_for_host=lambda host: counts)
    _files.forget()
    try:
        with ctx_host.use(fake), ctx_state.use(executing):
            assert _files.state_of("/etc/red/a") == SAME and len(fake.asked) == 1
            # Changed, but pyinfra has not counted it finished yet: not looked at.
            ops["changed"] = SimpleNamespace(operation_meta=Meta(True, True))
            assert _files.state_of("/etc/red/a") == SAME and len(fake.asked) == 1
            counts.ops = 1
            assert _files.state_of("/etc/red/a") == SAME and len(fake.asked) == 2
    finally:
        _files.forget()


def test_facts_asked_through_the_batch_are_pyinfras_own(tmp_path):
    """The oracle: each fact the deploy reads through the batch, against pyinfra's own
    get_fact on this machine (pyinfra's @local connector), on files in each state."""
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.facts.deb import DebPackages
    from pyinfra.facts.files import Block
    from pyinfra.facts.server import AuthorizedKeys, Command, LinuxDistribution

    marker = "# {mark} Red test block"
    texts = {"marked": "a\n# BEGIN Red test block\none\n\ntwo\n# END Red test block\nb\n",
             "empty": "# BEGIN Red test block\n# END Red test block\n",
             "unmarked": "a\n", "keys": "ssh-ed25519 AAAAC3Nz one\n\nssh-rsa AAAAB3 two\n"}
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    cases = [
        *((Block, {"path": str(tmp_path / name), "marker": marker})
          for name in ("marked", "empty", "unmarked", "missing")),
        (AuthorizedKeys, {"user": "root", "path": str(tmp_path / "keys")}),
        (AuthorizedKeys, {"user": "root", "path": str(tmp_path / "missing")}),
        (LinuxDistribution, {}),
        (DebPackages, {}),
        (facts.VastLaunchMode, {}),
        (visomaster._ShmMegabytes, {}),
        (facts.SupervisordRunning, {"socket": str(tmp_path / "supervisor.sock")}),
        (facts.PortListeners, {"ports": [port, port + 1]}),
        (facts.ToolReport, visomaster._models_check(str(tmp_path), str(tmp_path / "m.json"))),
        (Command, {"command": "printf 'one\\n\\ntwo\\n'"}),
    ]
    failing = (Command, {"command": "echo printed; exit 3"})
    inventory = Inventory((["@local"], {}))
    state = State(inventory, Config())
    local = inventory.get_host("@local")
    _files.forget()
    try:
        with ctx_state.use(state), ctx_host.use(local):
            for fact_class, arguments in cases:
                _files.expect_fact(fact_class, **arguments)
            for fact_class, arguments in cases:
                assert BATCHED_FACT(fact_class, **arguments) == \
                    _files.stock_get_fact(local, fact_class, **arguments), (fact_class, arguments)
            # A command that fails is an error both ways (pyinfra fails the host).
            with pytest.raises(PyinfraError):
                BATCHED_FACT(failing[0], **failing[1])
            with pytest.raises(PyinfraError):
                _files.stock_get_fact(local, failing[0], **failing[1])
    finally:
        listening.close()
        _files.forget()
    assert BATCHED_FACT is not _files.fact  # (the op tables' stand-in was in place)


def test_a_fact_asked_before_the_deploy_begins_its_batch_goes_to_the_box():
    """
    The concerns' up-front questions run when a host's batch begins; a fact asked before that
    (settings reading PID 1's environment) must not begin it: the up-front questions would
    ask that very fact again inside it.
    """
    from pyinfra.facts.files import File

    box = BoxHost({"/etc/red": TREE_DIR})
    _files.forget()
    try:
        with ctx_host.use(box), ctx_state.use(FAKE_STATE):
            assert box.get_fact(File, path="/etc/red") is False
            assert box.asked_facts == ["File"] and box.name not in _files._batches
            _files.expect("/etc/red")
            assert box.get_fact(settings.ContainerEnvironment) is None  # not a probe asked
            assert box.get_fact(File, path="/etc/red") is False
            assert box.asked_facts == ["File", "ContainerEnvironment", "BoxState"]
    finally:
        _files.forget()


def test_file_facts_answered_by_the_batch_are_pyinfras_own(tmp_path):
    """
    The oracle for pyinfra's file ops: File, Directory, Link, Sha1File and Sha256File as the
    patched Host.get_fact answers them from the batch, against pyinfra's own on this machine,
    for a file, a directory, links to each, a missing path and an odd mode; only a link's
    target and a link's checksum are left to the box.
    """
    from pyinfra.api import Config, Inventory, State
    from pyinfra.facts.files import Directory, File, Link, Sha1File, Sha256File

    (tmp_path / "file").write_text("content\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "odd").write_text("x")
    (tmp_path / "odd").chmod(0o4750)
    (tmp_path / "to-file").symlink_to(tmp_path / "file")
    (tmp_path / "to-dir").symlink_to(tmp_path / "dir")
    paths = [str(tmp_path / name) for name in ("file", "dir", "odd", "to-file", "to-dir",
                                                "missing")]
    inventory = Inventory((["@local"], {}))
    state = State(inventory, Config())
    local = inventory.get_host("@local")
    # Read once, so that the batch's hashing moves no atime the stock stat would then see.
    for path in paths[:3]:
        Path(path).is_file() and Path(path).read_bytes()
    _files.forget()
    left = set()
    try:
        with ctx_state.use(state), ctx_host.use(local):
            _files.expect(*paths)
            for fact_class in (File, Directory, Link, Sha1File, Sha256File):
                for path in paths:
                    answered = _files.answer(fact_class, (), {"path": path})
                    if answered is _files.UNKNOWN:
                        left.add((fact_class.__name__, Path(path).name))
                        continue
                    assert answered == _files.stock_get_fact(local, fact_class, path=path), \
                        (fact_class, path)
                    # What the deploy's hosts get: the same, without asking the box.
                    assert local.get_fact(fact_class, path=path) == answered
    finally:
        _files.forget()
    assert left == {("Link", "to-file"), ("Link", "to-dir"), ("Sha1File", "to-file"),
                    ("Sha256File", "to-file"), ("Sha1File", "to-dir"),
                    ("Sha256File", "to-dir"), ("Sha1File", "dir"), ("Sha256File", "dir")}


@pytest.mark.parametrize(("current", "present", "noop"), [
    (["A=1", "B=2"], True, "content already present"),
    (["A=1"], True, None),
    ([], True, None),
    (None, True, None),
    (["A=1"], False, None),
    ([], False, "no remove required: markers not found"),
    (None, False, "no remove required: file did not exist"),
], ids=["same", "changed", "no-markers", "no-file", "remove", "remove-no-markers",
        "remove-no-file"])
def test_block_is_pyinfras_own_and_answers_from_the_batch_when_it_would_change_nothing(
        current, present, noop):
    facts = {("Block", "/etc/environment", "# {mark} Red", "None", "None"): current}
    kwargs = {"path": "/etc/environment", "content": ["A=1", "B=2"], "marker": "# {mark} Red",
              "present": present}
    got, noops = run(_files.block, facts, **kwargs)
    theirs, their_noops = run(files.block, facts, **kwargs)
    assert got == theirs
    assert (noops == their_noops == [noop] and got == []) if noop else (got and noops == [])
