"""
red-app-pip: install the app's requirements file into its venv, bounded.

    red-app-pip --venv V --requirements FILE [--extra-index-url URL]... [--key TEXT]
                [--deadline S] [--timeout S] [--retries N] [--backoff S]
                [--state FILE] [--status FILE] [--log FILE] [--check | --force]
    red-app-pip --retry-now [--state FILE]     # the last install again, now, despite its backoff

- pip runs with a socket timeout (connect and read) and few retries, and the whole install has a
  deadline: past it pip's process group is stopped. pip alone has none (a blackholed index costs
  it ~98 s per package per index: ~39 minutes on VisoMaster's file).
- Index lines of the file itself (``--extra-index-url URL`` on a line of its own) are pip's to
  use; an index option written on a requirement line is one pip ignores: it is passed on pip's
  command line instead.
- Each failure is recorded in the state file with its cause (which index or host, refused, timed
  out, or the package pip could not find) and a backoff (``--backoff`` seconds, doubling per
  failure, at most 6 h): a converge inside it does not repeat the install, one after it does,
  and so does one whose inputs (file, indexes, key) changed. ``--retry-now`` forces it.
- What was installed is a stamp in the venv (the inputs' SHA-256): a venv rebuilt for another
  Python starts without one; an image that baked the install ships it.
- Progress (packages collected, bytes announced, the install phase) goes to the log as pip writes
  it and to the status JSON (``redbox.core.progress``) as step "pip" with a percent.

``--check`` prints one JSON object and changes nothing: state installed, needed, backoff or
missing (no such requirements file). Exit codes: 0 installed, 1 failed, 2 missing file,
3 skipped in backoff.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

from redbox.core import state
from redbox.core.log import Log, timestamp
from redbox.core.progress import STATUS_FILE, Reporter
from redbox.core.retry import backoff_seconds, rerun_arguments

TOOL = "red-app-pip"
STATE_FILE = "/var/lib/red/visomaster-pip.json"
# Seconds pip gets after SIGTERM at the deadline, before SIGKILL.
STOP_GRACE = 5
_INDEX_OPTION = re.compile(r"(?:^|\s)(--extra-index-url|--index-url|-i)(?:\s*=\s*|\s+)(\S+)")
_SIZE = re.compile(r"\(([0-9.]+) (kB|MB|GB|bytes)\)")
_UNITS = {"bytes": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}
_FETCH_FAILED = re.compile(r"Could not fetch URL (\S+?):? (.*?)(?: - skipping)?$")
_FETCHING = re.compile(r"Fetching project page and analyzing links: (\S+)")
_NOT_FOUND = re.compile(r"No matching distribution found for (\S+)")


# -- the requirements file


def index_options(text: str) -> tuple[list[str], list[str]]:
    """
    (file-level index URLs pip uses itself, index URLs on requirement lines pip ignores):
    the second kind goes on pip's command line.
    """
    used, ignored = [], []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        urls = [match[2] for match in _INDEX_OPTION.finditer(line)]
        if not urls:
            continue
        (used if line.startswith("-") else ignored).extend(urls)
    return used, ignored


def requirement_count(text: str) -> int:
    """Requirement lines (not options, not comments): a floor for the packages pip collects."""
    return sum(1 for raw in text.splitlines()
               if (line := raw.strip()) and not line.startswith(("#", "-")))


def inputs_key(text: str, pip_args: list[str], key: str) -> str:
    return hashlib.sha256("\n".join([hashlib.sha256(text.encode()).hexdigest(), *pip_args,
                                     key]).encode()).hexdigest()


def host_of(url: str) -> str:
    try:
        parts = urlsplit(url)
        return parts.netloc.rpartition("@")[2] or url
    except ValueError:
        return url


# -- pip's output


def _reason(text: str) -> str:
    """pip's long connection error, as a few words."""
    lowered = text.lower()
    for needle, short in (("connection refused", "connection refused"),
                          ("read timed out", "read timed out"),
                          ("connecttimeout", "connect timed out"),
                          ("timed out", "timed out"),
                          ("name or service not known", "host name not resolved"),
                          ("temporary failure in name resolution", "host name not resolved"),
                          ("ssl", "TLS error"), ("404", "HTTP 404")):
        if needle in lowered:
            return short
    return text[:120]


def causes(pip_log: str) -> dict:
    """Which indexes pip asked (by host, how often) and what failed, from pip's --log file."""
    queried: Counter = Counter()
    failed: dict[str, Counter] = {}
    missing = []
    for line in pip_log.splitlines():
        if match := _FETCHING.search(line):
            queried[host_of(match[1])] += 1
        elif match := _FETCH_FAILED.search(line):
            failed.setdefault(host_of(match[1]), Counter())[_reason(match[2])] += 1
        elif match := _NOT_FOUND.search(line):
            missing.append(match[1])
    return {"queried": dict(queried),
            "failed_hosts": {host: dict(reasons) for host, reasons in failed.items()},
            "not_found": list(dict.fromkeys(missing))}


def cause_text(found: dict, deadline_hit: float | None, code: int | None) -> str:
    parts = []
    if deadline_hit is not None:
        parts.append(f"deadline of {deadline_hit:g} s reached, pip stopped")
    for host, reasons in found["failed_hosts"].items():
        parts.append(f"index {host}: " + ", ".join(f"{why} x{count}"
                                                   for why, count in reasons.items()))
    if found["not_found"]:
        parts.append("no matching distribution for " + ", ".join(found["not_found"][:5]))
    if not parts:
        parts.append(f"pip exited {code}")
    return "; ".join(parts)


class PipProgress:
    """Turns pip's output lines into (percent, detail): collecting 0-80 %, installing 80-99 %."""

    def __init__(self, expected: int):
        self.expected = max(1, expected)
        self.seen = 0
        self.bytes = 0.0
        self.phase = "resolving"
        self.current = ""

    def feed(self, line: str) -> bool:
        """True when the line moved the progress."""
        text = line.strip()
        if text.startswith(("Collecting ", "Requirement already satisfied: ")):
            self.seen += 1
            self.current = text.split()[1] if text.startswith("Collecting") else text.split()[3]
            self.phase = "collecting"
        elif text.startswith(("Downloading ", "Using cached ")):
            if match := _SIZE.search(text):
                self.bytes += float(match[1]) * _UNITS[match[2]]
        elif text.startswith("Installing collected packages:"):
            self.phase = "installing"
            self.current = f"{len(text.split(':', 1)[1].split(','))} packages"
        elif text.startswith("Successfully installed"):
            self.phase = "installed"
        else:
            return False
        return True

    def percent(self) -> float:
        if self.phase == "installed":
            return 100
        if self.phase == "installing":
            return 90
        return 80 * self.seen / max(self.expected, self.seen + 1)

    def detail(self) -> str:
        size = f", {self.bytes / 1e9:.2f} GB announced" if self.bytes >= 1e8 else (
            f", {self.bytes / 1e6:.1f} MB announced" if self.bytes else "")
        if self.phase in ("installing", "installed"):
            return f"{self.phase} {self.current}"
        return f"{self.phase} {self.current} ({self.seen} packages so far{size})".replace(
            "  ", " ")


# -- the state



def check(a: argparse.Namespace, now: float | None = None) -> dict:
    """What a converge should do: installed, needed, backoff or missing."""
    now = time.time() if now is None else now
    try:
        with open(a.requirements, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        return {"state": "missing", "requirements": a.requirements,
                "error": error.strerror or str(error)}
    args = pip_arguments(a, text)
    key = inputs_key(text, args, a.key)
    stamp = stamp_path(a.venv)
    try:
        with open(stamp, encoding="utf-8") as handle:
            if handle.read().strip() == key:
                return {"state": "installed", "key": key, "stamp": stamp}
    except OSError:
        pass
    record = state.read(a.state) or {}
    if record.get("key") == key and record.get("result") == "failed" and not a.force:
        until = float(record.get("next_try_after") or 0)
        if now < until:
            return {"state": "backoff", "key": key, "failures": record.get("failures"),
                    "cause": record.get("cause"), "next_try_after": timestamp(until),
                    "seconds_left": round(until - now)}
    return {"state": "needed", "key": key, "args": args}


def stamp_path(venv: str) -> str:
    return os.path.join(venv, ".red-visomaster.stamp")


def pip_arguments(a: argparse.Namespace, text: str) -> list[str]:
    """pip's arguments besides -r: bounds, then the command line's and the ignored indexes."""
    _, ignored = index_options(text)
    urls = list(dict.fromkeys([*a.extra_index_url, *ignored]))
    return ["--timeout", f"{a.timeout:g}", "--retries", str(a.retries),
            *(f"--extra-index-url={url}" for url in urls)]


# -- running pip


def run_pip(command: list[str], cwd: str, deadline: float, log: Log, *, out,
            progress: PipProgress, reporter: Reporter) -> tuple[int | None, bool]:
    """pip's exit code (None when stopped) and whether the deadline stopped it."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, errors="replace",
                               start_new_session=True)

    def pump() -> None:
        for line in process.stdout:
            out.write(line)
            out.flush()
            if progress.feed(line):
                reporter.update("running", progress.percent(), progress.detail())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        process.wait(timeout=deadline)
        stopped = False
    except subprocess.TimeoutExpired:
        stopped = True
        log(f"deadline of {deadline:g} s reached: stopping pip (process group {process.pid})")
        _stop(process)
    reader.join(timeout=5)
    return (None if stopped else process.returncode), stopped


def _stop(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def install(a: argparse.Namespace) -> int:
    log = Log(None, f"{TOOL}:", echo=sys.stdout)
    reporter = Reporter(a.status, "pip")
    decided = check(a)
    if decided["state"] == "missing":
        message = (f"requirements file {a.requirements} does not exist "
                   f"({decided['error']}): nothing installed")
        log(message)
        reporter.update("failed", None, message, force=True)
        return 2
    if decided["state"] == "installed":
        log(f"{a.venv} already has {a.requirements} installed")
        return 0
    if decided["state"] == "backoff":
        log(f"skipped: the last {decided['failures']} install(s) of these inputs failed "
            f"({decided['cause']}); next try after {decided['next_try_after']} "
            f"(`{TOOL} --retry-now` tries now)")
        reporter.update("backoff", None, f"waiting until {decided['next_try_after']} after: "
                        f"{decided['cause']}", force=True)
        return 3
    with open(a.requirements, encoding="utf-8") as handle:
        text = handle.read()
    used, ignored = index_options(text)
    pip_log = f"{a.state}.pip-debug.log"
    state.remove(pip_log)
    command = [os.path.join(a.venv, "bin", "pip"), "install", "--no-cache-dir",
               "--disable-pip-version-check", "--progress-bar", "off", "--log", pip_log,
               "-r", a.requirements, *decided["args"]]
    if any(line.strip().startswith(("--index-url", "-i ")) for line in text.splitlines()):
        log(f"note: {a.requirements} sets --index-url: pip then drops the command line's "
            "extra indexes (put them in the file as --extra-index-url lines)")
    log(f"pip install -r {a.requirements} (deadline {a.deadline:g} s; file's indexes: "
        f"{' '.join(used) or 'none'}; from requirement lines pip ignores: "
        f"{' '.join(ignored) or 'none'}): {shlex.join(command)}")
    progress = PipProgress(requirement_count(text))
    reporter.update("running", 0, f"starting pip for {os.path.basename(a.requirements)}",
                    force=True)
    started = time.monotonic()
    code, stopped = run_pip(command, os.path.dirname(os.path.abspath(a.requirements)),
                            a.deadline, log, out=sys.stdout, progress=progress,
                            reporter=reporter)
    seconds = time.monotonic() - started
    try:
        with open(pip_log, encoding="utf-8", errors="replace") as handle:
            found = causes(handle.read())
    except OSError:
        found = causes("")
    previous = state.read(a.state) or {}
    record = {"key": decided["key"], "requirements": a.requirements, "venv": a.venv,
              "argv": a.argv, "finished": timestamp(), "seconds": round(seconds, 1),
              "queried": found["queried"]}
    if code == 0:
        with open(stamp_path(a.venv), "w", encoding="utf-8") as handle:
            handle.write(decided["key"] + "\n")
        state.write(a.state, {**record, "result": "installed", "failures": 0})
        reporter.update("done", 100, f"{a.requirements} installed in {seconds:.0f} s",
                        force=True)
        log(f"installed {a.requirements} into {a.venv} in {seconds:.1f} s")
        return 0
    failures = (previous.get("failures") or 0) + 1 if previous.get("key") == decided["key"] \
        else 1
    wait = backoff_seconds(failures, a.backoff)
    cause = cause_text(found, a.deadline if stopped else None, code)
    state.write(a.state, {**record, "result": "failed", "failures": failures, "cause": cause,
                          "failed_hosts": found["failed_hosts"],
                          "not_found": found["not_found"],
                          "next_try_after": time.time() + wait,
                          "next_try_after_text": timestamp(time.time() + wait)})
    message = (f"FAILED after {seconds:.0f} s: {cause}; failure {failures} of these inputs, next "
               f"try after {timestamp(time.time() + wait)} (`{TOOL} --retry-now` tries now)")
    log(message)
    reporter.update("failed", progress.percent(), message, force=True)
    return 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=TOOL, description=__doc__.split("\n")[1])
    p.add_argument("--venv")
    p.add_argument("--requirements")
    p.add_argument("--extra-index-url", action="append", default=[])
    p.add_argument("--key", default="", help="anything else that makes an install different")
    p.add_argument("--deadline", type=float, default=1800)
    p.add_argument("--timeout", type=float, default=15, help="pip's connect/read timeout")
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--backoff", type=float, default=600)
    p.add_argument("--state", default=STATE_FILE)
    p.add_argument("--status", default=STATUS_FILE)
    p.add_argument("--check", action="store_true")
    p.add_argument("--force", action="store_true", help="ignore the backoff")
    p.add_argument("--retry-now", action="store_true",
                   help="run the last recorded install again now")
    args = rerun_arguments(p, argv, "install", ("--check", "--force"))
    if not (args.venv and args.requirements):
        p.error("--venv and --requirements are required")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check:
        print(json.dumps(check(args), sort_keys=True))
        return 0
    return install(args)


if __name__ == "__main__":
    sys.exit(main())
