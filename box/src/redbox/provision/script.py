"""
Running a provisioning script: its own process group, a timeout (SIGTERM, then SIGKILL), and its
output timestamped into provisioning.log by a stamper process (`red-provision stamp`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from redbox.core import log as logs_
from redbox.provision.common import CAPTURED_ENV

# Seconds between SIGTERM and SIGKILL for a script that ran out of time.
KILL_GRACE = 10


def interpreter(path: str) -> tuple[list[str], str]:
    """How to run a script: by its shebang when it has one (as Vast does), else with bash."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(256)
    except OSError:
        first = b""
    if first.startswith(b"#!") and first[2:].strip():
        with contextlib.suppress(OSError):
            os.chmod(path, os.stat(path).st_mode | 0o700)
        shebang = first.decode("utf-8", "replace").strip()
        return [path], f"by its shebang ({shebang})"
    return ["bash", path], "with bash (no shebang)"


def run_script(path: str, timeout: int, logs: str | None, log,
               nice: int = 0) -> tuple[str, int | None]:
    """
    Run a script by its shebang (else with bash) at this much lower priority, its output
    timestamped into the log; (outcome, exit code).
    """
    # -I: the installed package, never a directory that happens to be the working one.
    stamper_command = [sys.executable, "-I", "-m", "redbox.provision", "stamp", "--prefix",
                       "script"]
    if logs:
        stamper_command += ["--log", os.path.join(logs, "provisioning.log")]
    # The stamper lives in its own session and ends when the last writer closes the pipe: a
    # server the script left running in the background keeps logging, and never gets SIGPIPE.
    stamper = subprocess.Popen(stamper_command, stdin=subprocess.PIPE, start_new_session=True)
    command, how = interpreter(path)
    if nice:
        command, how = ["nice", "-n", str(nice), *command], f"{how} at niceness +{nice}"
    log(f"running {path} {how} (timeout {timeout} s; its output follows, as 'script:')")
    clock = time.monotonic()
    try:
        script = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stamper.stdin,
                                  stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, CAPTURED_ENV: "1"})
    except OSError as error:
        log(f"cannot run {path}: {error}")
        return "script-failed", None
    finally:
        stamper.stdin.close()
    outcome = "ok"
    try:
        code = script.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"{path} timed out after {timeout} s (PROVISIONING_TIMEOUT): stopping its process "
            f"group (SIGTERM, SIGKILL {KILL_GRACE} s later)")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(script.pid, signal.SIGTERM)
        try:
            code = script.wait(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(script.pid, signal.SIGKILL)
            code = script.wait()
        # What the script started in its group goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(script.pid, signal.SIGKILL)
        outcome = "timeout"
    try:
        stamper.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log("the script left processes running in the background; their output goes on "
            "into this log")
    seconds = time.monotonic() - clock
    if outcome == "timeout":
        log(f"{path} was stopped after {seconds:.0f} s")
    elif code == 0:
        log(f"{path} finished OK in {seconds:.1f} s")
    else:
        outcome = "script-failed"
        log(f"ERROR: {path} exited with status {code} after {seconds:.1f} s "
            "(its output is above)")
    return outcome, code


def cmd_stamp(args) -> int:
    """Copy stdin to the log (and stdout) line by line with a timestamp and a prefix."""
    echo = True
    log = None
    if args.log:
        try:
            log = open(args.log, "a", encoding="utf-8")
        except OSError:
            log = None
    for raw in sys.stdin.buffer:
        line = logs_.line(f"{args.prefix}:", raw.decode("utf-8", "replace").rstrip()) + "\n"
        if log:
            with contextlib.suppress(OSError):
                log.write(line)
                log.flush()
        if echo:
            try:
                sys.stdout.write(line)
                sys.stdout.flush()
            except (OSError, ValueError):
                echo = False
    return 0
