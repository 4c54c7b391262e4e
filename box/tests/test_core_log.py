"""redbox.core.log: one timestamp format, the startup log, the logs dir and its fallback."""

import io
import re
import subprocess

import pytest

from redbox.core import log

STAMPED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")


@pytest.mark.parametrize(
    ("function", "pattern"),
    [
        (log.timestamp, r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"),
        (log.stamp, r"\d{8}-\d{6}"),
    ],
)
def test_times_are_utc_in_one_format(function, pattern):
    assert re.fullmatch(pattern, function())


@pytest.mark.parametrize(
    ("shell", "pattern"),
    [
        (log.SHELL_TIMESTAMP, r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"),
        (log.SHELL_STAMP, r"\d{8}-\d{6}"),
    ],
)
def test_the_shell_forms_expand_to_the_same_format_as_one_word(shell, pattern):
    out = subprocess.run(["sh", "-c", f"set -- {shell}; echo $#; echo \"$1\""],
                         capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "TZ": "Pacific/Kiritimati"}).stdout
    count, value = out.split()
    assert count == "1" and re.fullmatch(pattern, value)
    # UTC whatever the box's zone: the same hour as Python's.
    assert value[:11] == (log.timestamp() if "T" in value else log.stamp())[:11]


@pytest.mark.parametrize(
    ("logs_dir", "expected"),
    [("/logs", "/logs/startup.log"), ("/var/log/red", "/var/log/red/startup.log")],
)
def test_the_startup_log_path(logs_dir, expected):
    assert log.startup_log(logs_dir) == expected


def test_append_writes_one_stamped_line_per_line(tmp_path):
    path = tmp_path / "sub" / "startup.log"
    assert log.append(str(path), "settings", ["a bad value: using 1", "another"])
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert all(STAMPED.match(line) for line in lines)
    assert [line[21:] for line in lines] == ["settings: a bad value: using 1",
                                             "settings: another"]
    assert not log.append(str(tmp_path / "sub" / "startup.log" / "x"), "t", ["x"])


@pytest.mark.parametrize(
    ("file_ok", "echo", "in_file", "in_echo", "in_stderr"),
    [
        (True, False, 1, 0, 0),   # the file only
        (True, True, 1, 1, 0),    # the file and the echo stream
        (False, False, 0, 0, 2),  # no file: a warning and the line on stderr
        (False, True, 0, 1, 1),   # no file: a warning on stderr, the line still echoed
    ],
)
def test_log_lines_go_to_the_file_the_echo_or_stderr(tmp_path, capsys, file_ok, echo, in_file,
                                                     in_echo, in_stderr):
    path = tmp_path / "tool.log"
    if not file_ok:
        path.mkdir()  # a directory cannot be appended to
    stream = io.StringIO() if echo else None
    log.Log(str(path), "tool[1]", echo=stream)("hello")
    assert (len(path.read_text().splitlines()) if file_ok else 0) == in_file
    assert (stream.getvalue().count("tool[1] hello") if stream else 0) == in_echo
    err = capsys.readouterr().err
    assert len(err.splitlines()) == in_stderr
    if not file_ok:
        assert "cannot write log" in err


def test_a_log_without_a_path_writes_nothing(capsys):
    log.Log(None, "x")("quiet")
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""


@pytest.mark.parametrize(
    ("wanted_ok", "fallback_ok", "expected", "said"),
    [
        (True, True, "wanted", ""),
        (False, True, "fallback", "logs go to {fallback}"),
        (False, False, None, "logs go to stderr only"),
    ],
)
def test_the_logs_dir_falls_back_and_says_so(tmp_path, capsys, wanted_ok, fallback_ok, expected,
                                             said):
    # A directory below a regular file cannot be created, not even by root.
    (tmp_path / "file").write_text("")
    dirs = {"wanted": tmp_path / ("wanted" if wanted_ok else "file/wanted"),
            "fallback": tmp_path / ("fallback" if fallback_ok else "file/fallback")}
    got = log.usable_logs_dir(str(dirs["wanted"]), str(dirs["fallback"]), "red-x")
    assert got == (str(dirs[expected]) if expected else None)
    err = capsys.readouterr().err
    if said:
        assert err.startswith(f"red-x: {dirs['wanted']} is not writable (")
        assert said.format(fallback=dirs["fallback"]) in err and len(err.splitlines()) == 1
    else:
        assert err == ""
