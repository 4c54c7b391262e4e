"""
red-app-pip: install the app's flavor into its own venv with uv, bounded and recorded.

    red-app-pip --venv V --requirements FILE --flavor NAME [--extra-index-url URL]...
                [--also REQ]... [--key TEXT] [--deadline S] [--timeout S] [--retries N]
                [--backoff S] [--cache-dir DIR] [--python-dir DIR] [--python-mirror URL]
                [--state FILE] [--status FILE] [--check | --force]
    red-app-pip --retry-now [--state FILE]     # the last install again, now, despite its backoff

- The flavor (``redbox.app.flavors``) says which Pythons the app runs on, the index strategy,
  pre-releases and Red's overrides of that upstream's known breakages (uv's ``--overrides``).
- The venv is the flavor's own: made with ``uv venv`` on the first of the flavor's Pythons the
  box has (``python3.X`` on PATH), else on a uv-managed one (``--python-dir``, downloaded from
  ``--python-mirror`` when given; a baked image has it already). A venv of another flavor or
  Python is moved aside (nothing deleted), never installed over.
- uv downloads in parallel; its cache (``--cache-dir``) can live on the workspace volume. Each
  HTTP request has a timeout and few retries (UV_HTTP_TIMEOUT, UV_HTTP_RETRIES), and the whole
  install a deadline: past it uv's process group is stopped.
- uv refuses index options written on a requirement line (upstream's ``tensorrt==10.6.0
  --extra-index-url ...``): the file is installed from a copy without them, their URLs on the
  command line, as the file's own index lines are.
- Each failure is recorded in the state file with its cause (which index or host, refused, timed
  out, or the resolver's conflict) and a backoff (``--backoff`` seconds, doubling per failure,
  at most 6 h): a converge inside it does not repeat the install, one after it does, and so does
  one whose inputs (file, flavor, indexes, key) changed. ``--retry-now`` forces it.
- What was installed is a stamp in the venv (the inputs' SHA-256); an image that baked the
  install ships it.
- Progress (packages resolved, downloads announced, the install) goes to the log as uv writes
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
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

from redbox.app.flavors import FLAVORS, Flavor
from redbox.core import state
from redbox.core.aside import moved_aside
from redbox.core.log import Log, timestamp
from redbox.core.progress import STATUS_FILE, Reporter
from redbox.core.retry import backoff_seconds, rerun_arguments

TOOL = "red-app-pip"
STATE_FILE = "/var/lib/red/visomaster-pip.json"
# Seconds uv gets after SIGTERM at the deadline, before SIGKILL.
STOP_GRACE = 5
# What the venv was made for: "<flavor> <python>".
FLAVOR_MARK = ".red-flavor"
_INDEX_OPTION = re.compile(r"(?:^|\s)(--extra-index-url|--index-url|-i)(?:\s*=\s*|\s+)(\S+)")
_SIZE = re.compile(r"\(([0-9.]+)\s*(KiB|MiB|GiB|B)\)")
_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}
_FETCH_FAILED = re.compile(r"Failed to (?:fetch|download)[^:]*:\s*`?([a-z]+://[^`\s]+)")
_RESOLVED = re.compile(r"^Resolved (\d+) packages?")
_NOT_FOUND = re.compile(r"(?:Because )?there is no version of ([^\s,]+)")


# -- the requirements file


def index_options(text: str) -> tuple[list[str], list[str]]:
    """
    (the file's own index lines' URLs, index URLs written on requirement lines): uv refuses
    the second kind, so those go on its command line.
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


def without_line_options(text: str) -> str:
    """The file without the index options of its requirement lines (their URLs move)."""
    out = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")) and _INDEX_OPTION.search(line):
            raw = _INDEX_OPTION.sub("", line).strip()  # noqa: PLW2901 - the cleaned line
        out.append(raw)
    return "\n".join(out) + "\n"


def requirement_count(text: str) -> int:
    """Requirement lines (not options, not comments): a floor for the packages uv resolves."""
    return sum(1 for raw in text.splitlines()
               if (line := raw.strip()) and not line.startswith(("#", "-")))


def inputs_key(text: str, uv_args: list[str], key: str) -> str:
    return hashlib.sha256("\n".join([hashlib.sha256(text.encode()).hexdigest(), *uv_args,
                                     key]).encode()).hexdigest()


def host_of(url: str) -> str:
    try:
        parts = urlsplit(url)
        return parts.netloc.rpartition("@")[2] or url
    except ValueError:
        return url


# -- the flavor's Python and venv


def python_for(flavor: Flavor) -> tuple[str, str]:
    """(what uv venv gets as --python, its version): the box's own when it has one."""
    for version in flavor.pythons:
        found = shutil.which(f"python{version}")
        # One that answers (a pyenv shim for a version it lacks does not).
        if found and _answers(found, version):
            return found, version
    return flavor.pythons[0], flavor.pythons[0]


def _answers(python: str, version: str) -> bool:
    try:
        done = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip() == version


def venv_python_version(venv: str) -> str | None:
    """The venv's Python as pyvenv.cfg says (3.11), None without one."""
    try:
        with open(os.path.join(venv, "pyvenv.cfg"), encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return None
    found = re.search(r"^version(?:_info)?\s*=\s*(\d+\.\d+)", text, re.MULTILINE)
    return found[1] if found else None


def venv_fits(venv: str, mark: str) -> str:
    """keep, adopt (a fresh venv of the right Python: the image's), create or replace."""
    try:
        with open(os.path.join(venv, FLAVOR_MARK), encoding="utf-8") as handle:
            return "keep" if handle.read().strip() == mark else "replace"
    except OSError:
        pass
    version = venv_python_version(venv)
    if version is None:
        return "replace" if os.path.lexists(venv) else "create"
    fresh = not os.path.exists(stamp_path(venv))
    return "adopt" if fresh and version == mark.split()[1] else "replace"


# -- uv's output


def _reason(text: str) -> str:
    """uv's long connection error, as a few words."""
    lowered = text.lower()
    for needle, short in (("connection refused", "connection refused"),
                          ("operation timed out", "timed out"),
                          ("timed out", "timed out"),
                          ("dns error", "host name not resolved"),
                          ("failed to lookup address", "host name not resolved"),
                          ("certificate", "TLS error"), ("tls", "TLS error"),
                          ("404 not found", "HTTP 404"), ("403 forbidden", "HTTP 403")):
        if needle in lowered:
            return short
    return text[:120]


def causes(uv_log: str) -> dict:
    """What failed, from uv's output: hosts and why, packages not found, the resolver's word."""
    failed: dict[str, Counter] = {}
    missing, conflict = [], ""
    lines = uv_log.splitlines()
    for number, line in enumerate(lines):
        if match := _FETCH_FAILED.search(line):
            why = " ".join(lines[number + 1:number + 8])
            failed.setdefault(host_of(match[1]), Counter())[_reason(why)] += 1
        elif match := _NOT_FOUND.search(line):
            missing.append(match[1].rstrip(".,"))
        if "Because " in line and not conflict:
            sentence = " ".join(part.strip(" ╰─▶│") for part in lines[number:number + 6])
            conflict = sentence[sentence.index("Because "):].split(" And because ")[0][:400]
    return {"failed_hosts": {host: dict(reasons) for host, reasons in failed.items()},
            "not_found": list(dict.fromkeys(missing)), "conflict": conflict}


def cause_text(found: dict, deadline_hit: float | None, code: int | None) -> str:
    parts = []
    if deadline_hit is not None:
        parts.append(f"deadline of {deadline_hit:g} s reached, uv stopped")
    for host, reasons in found["failed_hosts"].items():
        parts.append(f"index {host}: " + ", ".join(f"{why} x{count}"
                                                   for why, count in reasons.items()))
    if found["conflict"]:
        parts.append(f"no solution: {found['conflict']}")
    elif found["not_found"]:
        parts.append("no matching distribution for " + ", ".join(found["not_found"][:5]))
    if not parts:
        parts.append(f"uv exited {code}")
    return "; ".join(parts)


class UvProgress:
    """uv's lines as (percent, detail): resolving 0-10 %, downloading 10-90 %, installing."""

    def __init__(self, expected: int):
        self.expected = max(1, expected)
        self.resolved = 0
        self.downloads = 0
        self.done = 0
        self.bytes = 0.0
        self.phase = "resolving"
        self.current = ""

    def feed(self, line: str) -> bool:
        """True when the line moved the progress."""
        text = line.strip()
        if match := _RESOLVED.match(text):
            self.resolved, self.phase = int(match[1]), "downloading"
        elif text.startswith("Downloading "):
            self.downloads += 1
            self.current = text.split()[1]
            if match := _SIZE.search(text):
                self.bytes += float(match[1]) * _UNITS[match[2]]
        elif text.startswith("Downloaded "):
            self.done += 1
        elif text.startswith("Prepared "):
            self.phase, self.current = "installing", text.split(" in ")[0][len("Prepared "):]
        elif text.startswith("Installed ") or text.startswith("Audited "):
            self.phase = "installed"
        else:
            return False
        return True

    def percent(self) -> float:
        if self.phase == "installed":
            return 100
        if self.phase == "installing":
            return 90
        if self.phase == "resolving":
            return 0
        return 10 + 80 * self.done / max(1, self.downloads)

    def detail(self) -> str:
        size = f", {self.bytes / 1e9:.2f} GB announced" if self.bytes >= 1e8 else (
            f", {self.bytes / 1e6:.1f} MB announced" if self.bytes else "")
        if self.phase == "resolving":
            return "resolving"
        if self.phase in ("installing", "installed"):
            return f"{self.phase} {self.current or f'{self.resolved} packages'}"
        return (f"downloading {self.current} ({self.done} of {self.downloads} large downloads, "
                f"{self.resolved} packages{size})")


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
    flavor = FLAVORS[a.flavor]
    python, version = python_for(flavor)
    args = uv_arguments(a, text, flavor)
    key = inputs_key(text, [*args, *flavor.overrides],
                     f"{a.key} flavor={a.flavor} python={version}")
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
    return {"state": "needed", "key": key, "args": args, "python": python, "version": version}


def stamp_path(venv: str) -> str:
    return os.path.join(venv, ".red-visomaster.stamp")


def uv_arguments(a: argparse.Namespace, text: str, flavor: Flavor) -> list[str]:
    """uv pip install's arguments besides -r and --overrides: the flavor's and the indexes."""
    _, on_lines = index_options(text)
    urls = list(dict.fromkeys([*a.extra_index_url, *on_lines]))
    return [*(f"--extra-index-url={url}" for url in urls),
            f"--index-strategy={flavor.index_strategy}",
            *(["--prerelease=allow"] if flavor.prerelease else []), *a.also]


def uv_environment(a: argparse.Namespace) -> dict[str, str]:
    """uv's bounds and places: no user or project config, its cache, its Pythons."""
    env = {**os.environ, "UV_NO_CONFIG": "1", "UV_HTTP_TIMEOUT": f"{a.timeout:g}",
           "UV_HTTP_RETRIES": str(a.retries), "UV_PYTHON_INSTALL_DIR": a.python_dir,
           "NO_COLOR": "1"}
    if a.cache_dir:
        env["UV_CACHE_DIR"] = a.cache_dir
    else:
        env["UV_NO_CACHE"] = "1"
    if a.python_mirror:
        env["UV_PYTHON_INSTALL_MIRROR"] = a.python_mirror
    return env


# -- running uv


def run_uv(command: list[str], cwd: str, deadline: float, log: Log, *, out, env: dict,
           progress: UvProgress, reporter: Reporter) -> tuple[int | None, bool]:
    """uv's exit code (None when stopped) and whether the deadline stopped it."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, env=env,
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
        process.wait(timeout=max(1.0, deadline))
        stopped = False
    except subprocess.TimeoutExpired:
        stopped = True
        log(f"deadline of {deadline:g} s reached: stopping uv (process group {process.pid})")
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


class _Tee:
    """uv's output to stdout (the install log) and kept for the causes."""

    def __init__(self, out):
        self.out, self.lines = out, []

    def write(self, text: str) -> None:
        self.lines.append(text)
        self.out.write(text)

    def flush(self) -> None:
        self.out.flush()


def prepare_venv(a: argparse.Namespace, decided: dict, log: Log, *, tee: _Tee,
                 reporter: Reporter, started: float) -> tuple[int | None, bool]:
    """The flavor's venv on its Python: kept, adopted, created or (another one) moved aside."""
    mark = f"{a.flavor} {decided['version']}"
    fit = venv_fits(a.venv, mark)
    if fit in ("keep", "adopt"):
        if fit == "adopt":
            log(f"{a.venv} is a fresh venv of Python {decided['version']}: it becomes {a.flavor}'s")
        return _mark(a.venv, mark)
    if fit == "replace":
        aside = moved_aside(a.venv)
        os.rename(a.venv, aside)
        log(f"{a.venv} was made for {_made_for(a.venv, aside)}, not {mark}: moved aside to "
            f"{aside} (nothing deleted; remove it when you no longer need it)")
    managed = not os.path.isabs(decided["python"])
    where = (f"a uv-managed Python {decided['version']} in {a.python_dir}"
             + (f" (from {a.python_mirror})" if a.python_mirror else "")) if managed \
        else decided["python"]
    log(f"creating {a.venv} for {a.flavor} on {where}")
    reporter.update("running", 0, f"creating the venv on Python {decided['version']}",
                    force=True)
    command = [a.uv, "venv", a.venv, "--python", decided["python"],
               "--managed-python" if managed else "--no-managed-python"]
    code, stopped = run_uv(command, "/", a.deadline - (time.monotonic() - started), log,
                           out=tee, env=uv_environment(a), progress=UvProgress(1),
                           reporter=reporter)
    if code == 0:
        return _mark(a.venv, mark)
    return code, stopped


def _made_for(venv: str, aside: str) -> str:
    try:
        with open(os.path.join(aside, FLAVOR_MARK), encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return f"Python {venv_python_version(aside) or '?'}"


def _mark(venv: str, mark: str) -> tuple[int, bool]:
    with open(os.path.join(venv, FLAVOR_MARK), "w", encoding="utf-8") as handle:
        handle.write(mark + "\n")
    return 0, False


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
    started = time.monotonic()
    tee = _Tee(sys.stdout)
    code, stopped = prepare_venv(a, decided, log, tee=tee, reporter=reporter, started=started)
    progress = UvProgress(requirement_count(text))
    if code == 0:
        # uv's own copies of the file (without requirement-line options) and of the overrides.
        requirements = os.path.join(a.venv, "red-requirements.txt")
        with open(requirements, "w", encoding="utf-8") as handle:
            handle.write(without_line_options(text))
        overrides = os.path.join(a.venv, "red-overrides.txt")
        flavor = FLAVORS[a.flavor]
        with open(overrides, "w", encoding="utf-8") as handle:
            handle.write("".join(f"{line}\n" for line in flavor.overrides))
        command = [a.uv, "pip", "install", "--python", os.path.join(a.venv, "bin", "python"),
                   "-r", requirements, "--overrides", overrides, *decided["args"]]
        log(f"uv pip install -r {a.requirements} for {a.flavor} (deadline {a.deadline:g} s; "
            f"overrides: {', '.join(flavor.overrides) or 'none'}): {' '.join(command)}")
        reporter.update("running", 0, f"starting uv for {os.path.basename(a.requirements)}",
                        force=True)
        code, stopped = run_uv(command, os.path.dirname(os.path.abspath(a.requirements)),
                               a.deadline - (time.monotonic() - started), log, out=tee,
                               env=uv_environment(a), progress=progress, reporter=reporter)
    seconds = time.monotonic() - started
    found = causes("".join(tee.lines))
    previous = state.read(a.state) or {}
    record = {"key": decided["key"], "requirements": a.requirements, "venv": a.venv,
              "flavor": a.flavor, "python": decided["version"], "argv": a.argv,
              "finished": timestamp(), "seconds": round(seconds, 1)}
    if code == 0:
        with open(stamp_path(a.venv), "w", encoding="utf-8") as handle:
            handle.write(decided["key"] + "\n")
        state.write(a.state, {**record, "result": "installed", "failures": 0})
        reporter.update("done", 100, f"{a.requirements} installed in {seconds:.0f} s",
                        force=True)
        log(f"installed {a.requirements} ({a.flavor}, Python {decided['version']}) into "
            f"{a.venv} in {seconds:.1f} s")
        return 0
    failures = (previous.get("failures") or 0) + 1 if previous.get("key") == decided["key"] \
        else 1
    wait = backoff_seconds(failures, a.backoff)
    cause = cause_text(found, a.deadline if stopped else None, code)
    state.write(a.state, {**record, "result": "failed", "failures": failures, "cause": cause,
                          "failed_hosts": found["failed_hosts"],
                          "not_found": found["not_found"], "conflict": found["conflict"],
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
    p.add_argument("--flavor", choices=sorted(FLAVORS), default="upstream")
    p.add_argument("--extra-index-url", action="append", default=[])
    p.add_argument("--also", action="append", default=[],
                   help="one more requirement (the Jupyter kernel's ipykernel)")
    p.add_argument("--key", default="", help="anything else that makes an install different")
    p.add_argument("--deadline", type=float, default=1800)
    p.add_argument("--timeout", type=float, default=15, help="uv's timeout per HTTP request")
    p.add_argument("--retries", type=int, default=2, help="uv's retries per HTTP request")
    p.add_argument("--backoff", type=float, default=600)
    p.add_argument("--uv", default=os.path.join(os.path.dirname(sys.executable), "uv"))
    p.add_argument("--cache-dir", default="", help="uv's cache (none: no cache)")
    p.add_argument("--python-dir", default="/opt/red/python",
                   help="where uv keeps the Pythons it manages")
    p.add_argument("--python-mirror", default="",
                   help="where uv downloads its Pythons from (UV_PYTHON_INSTALL_MIRROR)")
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
