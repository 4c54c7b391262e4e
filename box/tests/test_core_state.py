"""redbox.core.state, redbox.core.aside, redbox.core.pids: small rules, one home each."""

import json
import os
import subprocess

import pytest

from redbox.core import aside, pids, state


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, None),
        ('{"a": 1}', {"a": 1}),
        ("{broken", "unreadable"),
    ],
)
def test_read_tells_missing_from_broken(tmp_path, content, expected):
    path = tmp_path / "s.json"
    if content is not None:
        path.write_text(content)
    got = state.read(str(path))
    assert (set(got) == {"unreadable"}) if expected == "unreadable" else got == expected


def test_write_is_atomic_sorted_and_leaves_no_staging_file(tmp_path):
    path = tmp_path / "d" / "s.json"
    state.write(str(path), {"b": 1, "a": [1]})
    state.write(str(path), {"b": 2, "a": [2]}, mode=0o600)
    assert json.loads(path.read_text()) == {"a": [2], "b": 2}
    assert path.read_text().index('"a"') < path.read_text().index('"b"')
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["s.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "s.json"
    state.write(str(path), {"ok": True})
    with pytest.raises(TypeError):
        state.write(str(path), {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]
    state.remove(str(path))
    state.remove(str(path))  # already gone: fine
    assert not path.exists()


@pytest.mark.parametrize(
    ("existing", "function", "expected"),
    [
        ([], aside.moved_aside, "app.moved-aside-20260101-000000"),
        (["app.moved-aside-20260101-000000"], aside.moved_aside,
         "app.moved-aside-20260101-000000-2"),
        (["app.moved-aside-20260101-000000", "app.moved-aside-20260101-000000-2"],
         aside.moved_aside, "app.moved-aside-20260101-000000-3"),
        ([], aside.user_files, "app.user-files-20260101-000000"),
        (["app.user-files-20260101-000000"], aside.user_files, "app.user-files-20260101-000000-2"),
    ],
)
def test_aside_names_are_unique_siblings(tmp_path, existing, function, expected):
    for name in existing:
        (tmp_path / name).mkdir()
    assert function(str(tmp_path / "app"), "20260101-000000") == str(tmp_path / expected)


def test_aside_names_default_to_now(tmp_path):
    name = os.path.basename(aside.moved_aside(str(tmp_path / "x")))
    assert name.startswith("x.moved-aside-") and len(name) == len("x.moved-aside-") + 15


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize(
    ("pid", "alive"),
    [
        (os.getpid(), True),
        (1, True),  # not ours to signal, still alive
        ("not a pid", False),
        (None, False),
        ("dead", False),
    ],
)
def test_pid_checks(pid, alive):
    assert pids.alive(_dead_pid() if pid == "dead" else pid) is alive
