"""red-app-models: fetch VisoMaster's model files until every one verifies.

Usage:
    red-app-models --repo DIR [--models-data app/processors/models_data.py] [--attempts N]
                   [--state FILE] [--streams N] [--read-timeout SECONDS]
                   [--downloader red|app] [--download-cmd "python download_models.py"]
                   [--python PYTHON] [--timeout SECONDS] [--deadline SECONDS]
                   [--backoff SECONDS] [--force] [--rehash] [--check]
    red-app-models --retry-now [--state FILE]   # the last download again, now

Runs on the target box (stdlib only, Python >= 3.10).

1. Reads the app's model list from --models-data (relative to --repo) WITHOUT importing it (the
   app's imports need torch): the file is parsed with `ast`, and every module-level list (or
   tuple) of dict literals having "local_path" and "hash" keys contributes entries. Values may
   be string literals, f-strings, "+" concatenations, names of earlier module-level constants,
   and simple path expressions (Path(__file__).resolve().parent / "x", os.path.join(...), ...).
   Lists inside try/if blocks are not module-level and are ignored (upstream's TensorRT engine
   list, built at run time, lives in a try block). local_path is resolved against the repo
   root. An entry whose path or hash cannot be evaluated, or that has no "url" (the downloader
   cannot fetch it), is listed under "skipped" and does not count.
2. Verifies every entry's SHA-256. When all verify, nothing is downloaded at all (--check,
   like --attempts 0, only verifies).
3. Otherwise fetches the files that do not verify, in up to --attempts rounds (default 3), each
   round bounded by --timeout seconds and all of them together by --deadline seconds:
   - by default with Red's own fetcher (redbox.app.fetch, --downloader red): --streams files
     at once (default 4, 1..16), each written to <file>.red-partial, resumed with a Range
     request after a cut, hashed while it streams and renamed over the model only once its
     SHA-256 is the listed one (a killed run never leaves a half-written model); GitHub's
     redirects are followed. A file whose download has the wrong SHA-256 twice, or that
     answers an HTTP 4xx, fails for this run (the failure names the file and the URL); a cut
     or refused connection is tried again by the next round (after a pause of 1 s, doubling).
     A full disk stops the run with one line naming the file and the bytes it still needs.
     The files a round fetched are not hashed again (their SHA-256 was computed on the way).
     Two runs at once never fetch the same file: each file is locked while it is fetched, and
     a second run WAITS for it (within its deadline), then takes the file the first one put
     in place without fetching it. The app's packages are not needed.
   - with --downloader app (implied by --download-cmd), the app's own downloader, run from the
     repo root (argv list, never a shell; default [PYTHON, "download_models.py"], PYTHON
     defaulting to this interpreter; --download-cmd is split with shlex), with its output
     forwarded to stderr, then every file verified again; its exit code is recorded but not
     trusted (the upstream one exits 0 after failed downloads); a run is killed after
     --timeout seconds. It imports the app: a failed install of the app's packages
     (--pip-state) is named as the cause instead of being run.
   A failed download is recorded with its cause and a backoff (--backoff seconds, doubling
   per failure of the same model list and downloader, up to 6 h): until then a run verifies
   but does not download (--force, or --retry-now, does); a changed model list downloads.
4. Writes the JSON state file atomically (default /var/lib/red/models-state.json) and prints
   the same JSON (without the cache) as one line on stdout.

A verified file's size, mtime, ctime and inode are cached in the state file, or in --cache FILE
(the deploy keeps it on the workspace volume, beside the files it describes, so a container
re-created on that volume does not hash gigabytes again; a cache there wins over the state's);
a later run trusts the cached SHA-256 while those are unchanged (--rehash ignores the cache).

State file:
  {"verified": bool, "checked": int, "ok": int,
   "failed": [{"file": rel path, "path": abs path, "model": name, "reason": "missing" |
               "sha256 mismatch" | "unreadable", "expected": sha256, "actual": sha256 | null,
               "size": int | null}],
   (reason "empty (0 bytes)": what upstream's downloader leaves after an integrity failure;
   a file Red's fetcher could not fetch adds "url" and "download_error", and one whose
   download had the wrong SHA-256 reads "sha256 mismatch" with that download's "actual")
   "skipped": [{"file", "model", "reason"}],
   "time": ISO-8601 UTC, "repo", "models_data", "attempts": N, "downloads_run": int (rounds
   or downloader runs), "downloader": "red" | "app", "streams": N, "download_cmd": argv | null,
   "download_runs": [{"attempt", "seconds", "output_tail": [str], and "exit_code" (app) or
                      "files", "fetched", "received", "errors": [{"file", "url", "error"}]}],
   "reason": one-line summary, "error": str | null, "cache": {abs path: {...}},
   "key": the inputs' sha256, "failures": failed downloads in a row of these inputs,
   "cause", "next_try_after" (ISO-8601), "next_try_epoch", "in_backoff": bool,
   "deadline_reached": bool (when --deadline stopped the runs), "argv": what --retry-now runs}

Exit codes: 0 all model files verified; 3 not verified (files failing, model list unreadable,
downloader missing), with a one-line reason on stderr; 2 usage error.
"""

from __future__ import annotations

import argparse
import ast
import collections
import hashlib
import json
import os
import posixpath
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import MappingProxyType

from redbox.app import fetch
from redbox.core import lock
from redbox.core import state as json_state
from redbox.core.log import timestamp
from redbox.core.progress import Reporter
from redbox.core.retry import (
    add_backoff_arguments,
    backoff_left,
    note_failures,
    rerun_arguments,
)

TOOL = "red-app-models"
DEFAULT_STATE = "/var/lib/red/models-state.json"
DEFAULT_MODELS_DATA = "app/processors/models_data.py"
EXIT_OK, EXIT_NOT_VERIFIED = 0, 3
# Red's fetcher: the pause before its second round (doubling after), what its key names.
ROUND_PAUSE = 1.0
RED_FETCHER = ["red-app-models", "fetch"]
HEX64 = frozenset("0123456789abcdef")


class Unsupported(Exception):
    """An expression the model-list reader does not evaluate."""


# --------------------------------------------------------------------------------------------
# reading models_data.py without importing it


PATH_FUNCS = ("Path", "PurePath", "PosixPath", "pathlib.Path", "pathlib.PurePath")
OS_PATH_FUNCS = MappingProxyType({
    "os.path.join": os.path.join, "os.path.dirname": os.path.dirname,
    "os.path.abspath": os.path.abspath, "os.path.normpath": os.path.normpath,
    "os.path.realpath": os.path.realpath, "os.path.expanduser": os.path.expanduser,
    "os.fspath": os.fspath, "str": str,
})


class Evaluator:

    def __init__(self, file_path: str):
        self.names: dict[str, object] = {"__file__": file_path}

    @staticmethod
    def dotted(node: ast.AST) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            parts.append(node.id)
            return ".".join(reversed(parts))
        return None

    def ev(self, node: ast.AST) -> object:  # noqa: PLR0911, PLR0912 (one branch per node type)
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float)):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.names:
                return self.names[node.id]
            raise Unsupported(f"unknown name {node.id}")
        if isinstance(node, ast.JoinedStr):
            return "".join(str(self.ev(v)) for v in node.values)
        if isinstance(node, ast.FormattedValue):
            val = self.ev(node.value)
            if node.conversion == ord("r"):
                val = repr(val)
            elif node.conversion == ord("a"):
                val = ascii(val)
            spec = str(self.ev(node.format_spec)) if node.format_spec else ""
            return format(val, spec)
        if isinstance(node, ast.BinOp):
            left, right = self.ev(node.left), self.ev(node.right)
            if isinstance(node.op, ast.Add) and isinstance(left, str) and isinstance(right, str):
                return left + right
            if isinstance(node.op, ast.Div) and isinstance(left, Path):
                return left / str(right)
            raise Unsupported("unsupported operator")
        if isinstance(node, ast.Attribute):
            base = self.ev(node.value)
            if isinstance(base, Path) and node.attr in ("parent", "name", "stem", "suffix"):
                return getattr(base, node.attr)
            raise Unsupported(f"unsupported attribute {node.attr}")
        if isinstance(node, ast.Call) and not node.keywords:
            return self.call(node)
        raise Unsupported(type(node).__name__)

    def call(self, node: ast.Call) -> object:
        name = self.dotted(node.func)
        args = [self.ev(a) for a in node.args]
        if name in PATH_FUNCS:
            return Path(*[str(a) for a in args]) if args else Path()
        if name in OS_PATH_FUNCS:
            return OS_PATH_FUNCS[name](*[os.fspath(a) if isinstance(a, Path) else a
                                        for a in args])
        if isinstance(node.func, ast.Attribute):
            base = self.ev(node.func.value)
            meth = node.func.attr
            if isinstance(base, Path) and meth in ("resolve", "absolute", "expanduser"):
                return Path(os.path.abspath(base))
            if isinstance(base, Path) and meth == "joinpath":
                return base.joinpath(*[str(a) for a in args])
            if isinstance(base, Path) and meth == "as_posix":
                return base.as_posix()
        raise Unsupported(f"unsupported call {name or '?'}")


def read_models(models_data: str) -> tuple[list[dict], list[dict]]:
    """(entries, skipped) from the module-level lists of model dicts in models_data."""
    with open(models_data, "rb") as fh:
        tree = ast.parse(fh.read(), filename=models_data)
    evaluator = Evaluator(os.path.abspath(models_data))
    entries: list[dict] = []
    skipped: list[dict] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets = [t.id for t in stmt.targets if isinstance(t, ast.Name)]
            value = stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) \
                and stmt.value is not None:
            targets, value = [stmt.target.id], stmt.value
        else:
            continue
        if isinstance(value, (ast.List, ast.Tuple)):
            for elt in value.elts:
                if isinstance(elt, ast.Dict):
                    read_dict(evaluator, elt, targets[0] if targets else "?", entries, skipped)
            continue
        try:
            val = evaluator.ev(value)
        except Unsupported:
            for t in targets:
                evaluator.names.pop(t, None)
            continue
        for t in targets:
            evaluator.names[t] = val
    return entries, skipped


def read_dict(evaluator: Evaluator, node: ast.Dict, list_name: str, entries: list[dict],
              skipped: list[dict]) -> None:
    raw: dict[str, ast.AST] = {}
    for k, v in zip(node.keys, node.values, strict=True):
        if isinstance(k, ast.Constant) and isinstance(k.value, str):
            raw[k.value] = v
    if "local_path" not in raw or "hash" not in raw:
        return
    vals: dict[str, object] = {}
    problems = []
    for key in ("model_name", "local_path", "hash", "url"):
        if key in raw:
            try:
                vals[key] = evaluator.ev(raw[key])
            except Unsupported as exc:
                problems.append(f"{key}: {exc}")
    model = str(vals.get("model_name", "?"))
    where = {"model": model, "list": list_name, "file": str(vals.get("local_path", "?"))}
    if problems:
        skipped.append({**where, "reason": "cannot evaluate " + "; ".join(problems)})
        return
    digest = str(vals["hash"]).strip().lower()
    if len(digest) != 64 or not set(digest) <= HEX64:
        skipped.append({**where, "reason": f"hash is not a SHA-256: {digest!r}"})
        return
    if not vals.get("url"):
        skipped.append({**where, "reason": "no url: the downloader cannot fetch it"})
        return
    entries.append({"model": model, "list": list_name, "local_path": os.fspath(vals["local_path"]),
                    "hash": digest, "url": str(vals["url"])})


# --------------------------------------------------------------------------------------------
# verification


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve(repo: str, local_path: str) -> str:
    p = local_path if os.path.isabs(local_path) else os.path.join(repo, local_path)
    return os.path.normpath(p)


def display(repo: str, path: str) -> str:
    rel = os.path.relpath(path, repo)
    return path if rel.startswith("..") else rel.replace(os.sep, posixpath.sep)


def stat_key(st: os.stat_result) -> dict:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "ino": st.st_ino}


def verify(repo: str, entries: list[dict], cache: dict, use_cache: bool) -> tuple[int, list]:
    """(number checked, failures); updates cache with newly verified files."""
    failed = []
    seen: set[tuple[str, str]] = set()
    for e in entries:
        path = resolve(repo, e["local_path"])
        if (path, e["hash"]) in seen:
            continue
        seen.add((path, e["hash"]))
        item = {"file": display(repo, path), "path": path, "model": e["model"],
                "expected": e["hash"], "actual": None, "size": None}
        try:
            st = os.stat(path)
        except FileNotFoundError:
            failed.append({**item, "reason": "missing"})
            cache.pop(path, None)
            continue
        except OSError as exc:
            failed.append({**item, "reason": "unreadable", "detail": str(exc)})
            continue
        item["size"] = st.st_size
        if st.st_size == 0:
            # What upstream's downloader leaves after an integrity failure (and exits 0).
            failed.append({**item, "reason": "empty (0 bytes)"})
            cache.pop(path, None)
            continue
        key = stat_key(st)
        cached = cache.get(path)
        if use_cache and cached and cached.get("sha256") == e["hash"] \
                and all(cached.get(k) == v for k, v in key.items()):
            continue
        try:
            actual = sha256_of(path)
        except OSError as exc:
            failed.append({**item, "reason": "unreadable", "detail": str(exc)})
            continue
        if actual != e["hash"]:
            failed.append({**item, "reason": "sha256 mismatch", "actual": actual})
            cache.pop(path, None)
            continue
        cache[path] = {**key, "sha256": actual}
    return len(seen), failed


# --------------------------------------------------------------------------------------------
# downloader


class FileProgress:
    """
    Per-file progress of a downloader run, read from the model files as they grow (the
    downloader's own output gives no totals): the file being written, its bytes, and the share
    of files done. Lines go to stderr (the models log) and the step "models" to the status JSON.
    """

    def __init__(self, repo: str, entries: list[dict], status: str | None, every: float = 2.0):
        self.paths = list(dict.fromkeys(resolve(repo, e["local_path"]) for e in entries))
        self.sizes = {e["hash"]: None for e in entries}
        self.reporter = Reporter(status, "models") if status else None
        self.every = every
        self.started = time.time()
        self.stop = threading.Event()
        self.last = ""

    def snapshot(self) -> tuple[float, str]:
        present, current, newest = 0, None, 0.0
        for path in self.paths:
            try:
                st = os.stat(path)
            except OSError:
                continue
            if st.st_size:
                present += 1
            if st.st_mtime >= max(newest, self.started - 1):
                newest, current = st.st_mtime, (path, st.st_size)
        percent = 100 * present / max(1, len(self.paths))
        doing = (f"; writing {os.path.basename(current[0])}: {current[1]} bytes"
                 if current else "")
        return percent, f"{present} of {len(self.paths)} model files present{doing}"

    def watch(self) -> None:
        while not self.stop.wait(self.every):
            self.report()

    def report(self) -> None:
        percent, detail = self.snapshot()
        if detail != self.last:
            self.last = detail
            print(f"{TOOL}: {detail} ({percent:.0f}%)", file=sys.stderr, flush=True)
            if self.reporter:
                self.reporter.update("running", percent, detail)


def run_downloader(cmd: list[str], repo: str, timeout: float | None,
                   progress: FileProgress | None = None) -> tuple[int | None, list]:
    """Run cmd in repo, echo its output to stderr; (exit code or None, last output lines)."""
    if progress is not None:
        threading.Thread(target=progress.watch, daemon=True).start()
    try:
        return _run_downloader(cmd, repo, timeout)
    finally:
        if progress is not None:
            progress.stop.set()
            progress.report()


def _run_downloader(cmd: list[str], repo: str, timeout: float | None) -> tuple[int | None, list]:
    tail: collections.deque = collections.deque(maxlen=20)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.Popen(cmd, cwd=repo, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        return None, [f"cannot start {cmd[0]}: {exc}"]
    timer = None
    if timeout:
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            sys.stderr.write(line)
            text = line.rstrip("\r\n").rsplit("\r", 1)[-1]
            if text.strip():
                tail.append(text[:300])
        rc = proc.wait()
    finally:
        if timer:
            timer.cancel()
    sys.stderr.flush()
    if timeout and rc == -9:
        tail.append(f"killed after {timeout:g} s (--timeout)")
    return rc, list(tail)


class FetchProgress:
    """
    Progress of Red's fetcher: files verified, bytes fetched, the files in flight; a line to
    stderr (the models log) every ``every`` seconds, the step "models" in the status JSON.
    """

    def __init__(self, status: str | None, checked: int, every: float = 2.0):
        self.reporter = Reporter(status, "models") if status else None
        self.checked = checked
        self.ok = 0
        self.every = every
        self.last = 0.0
        self.guard = threading.Lock()

    def __call__(self, fetcher: fetch.Fetcher) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        with self.guard:
            if now - self.last < self.every:
                return
            self.last = now
        self.report(fetcher)

    def report(self, fetcher: fetch.Fetcher | None) -> None:
        snap = fetcher.snapshot() if fetcher else {"ok": 0, "received": 0, "active": {}}
        ok = self.ok + snap["ok"]
        flying = [(os.path.basename(dest), have / total if total else 0.0)
                  for dest, (have, total) in sorted(snap["active"].items())]
        percent = 100 * (ok + sum(share for _, share in flying)) / max(1, self.checked)
        now = ", ".join(f"{name} {100 * share:.0f}%" for name, share in flying[:3])
        more = f" and {len(flying) - 3} more" if len(flying) > 3 else ""
        detail = (f"{ok} of {self.checked} model files verified; "
                  f"{fetch.human(snap['received'])} fetched"
                  + (f"; fetching {now}{more}" if flying else ""))
        print(f"{TOOL}: {detail} ({percent:.0f}%)", file=sys.stderr, flush=True)
        if self.reporter:
            self.reporter.update("running", percent, detail)


def fetch_round(a: argparse.Namespace, repo: str, entries: list[dict], todo: list[dict], *,
                limit: float | None, progress: FetchProgress) -> tuple[fetch.Result, dict]:
    """One round of Red's fetcher over the failing files; (its result, the run's record)."""
    urls: dict[str, str] = {}
    for e in entries:
        urls.setdefault(resolve(repo, e["local_path"]), e["url"])
    items = [fetch.Item(urls[f["path"]], f["path"], f["expected"], name=f["file"],
                        seen=fetch.file_key(f["path"])) for f in todo]
    tail: collections.deque = collections.deque(maxlen=20)

    def say(line: str) -> None:
        tail.append(line[:300])
        print(f"{TOOL}: {line}", file=sys.stderr, flush=True)

    fetcher = fetch.Fetcher(items, streams=a.streams, deadline=limit,
                            read_timeout=a.read_timeout, progress=progress, say=say)
    result = fetcher.run()
    progress.report(fetcher)
    record = {"files": len(items), "fetched": sum(1 for o in result.outcomes if o.ok),
              "received": result.received,
              "errors": [{"file": o.item.name, "url": o.item.url, "error": o.error}
                         for o in result.failed][:20],
              "seconds": round(result.seconds, 1), "output_tail": list(tail)}
    return result, record


def note_outcomes(result: fetch.Result, cache: dict, errors: dict) -> None:
    """Cache what the round verified on the way (no second hashing); keep what failed."""
    for o in result.outcomes:
        path = o.item.dest
        if o.ok:
            errors.pop(path, None)
            try:
                cache[path] = {**stat_key(os.stat(path)), "sha256": o.sha256}
            except OSError:
                cache.pop(path, None)
        else:
            errors[path] = {"url": o.item.url, "error": o.error, "final": o.final,
                            "sha256": o.sha256}


def explain(failed: list[dict], errors: dict) -> None:
    """A failing file's download error, its URL, and a wrong download's SHA-256."""
    for f in failed:
        e = errors.get(f["path"])
        if not e:
            continue
        f["url"], f["download_error"] = e["url"], e["error"]
        if f["reason"] == "missing" and e["sha256"] and "sha256 mismatch" in (e["error"] or ""):
            f["reason"], f["actual"] = "sha256 mismatch", e["sha256"]


# --------------------------------------------------------------------------------------------


def load_cache(state_path: str, cache_path: str | None = None) -> dict:
    """The verified files' record: --cache's when it has one, else the state file's."""
    for path in (cache_path, state_path):
        saved = json_state.read(path) if path else None
        cache = saved.get("cache") if isinstance(saved, dict) else None
        if isinstance(cache, dict):
            return cache
    return {}


def write_state(state_path: str, data: dict) -> str | None:
    """Write atomically; return an error message or None."""
    try:
        json_state.write(state_path, data)
    except OSError as exc:
        return f"cannot write state file {state_path}: {exc}"
    return None


def summarize(state: dict) -> str:
    if state["error"]:
        return state["error"]
    if state.get("deadline_reached") and not state["verified"]:
        return (f"{len(state['failed'])} of {state['checked']} model files not verified: the "
                f"deadline ran out after {state['downloads_run']} download run(s)")
    if state["verified"]:
        return f"all {state['checked']} model files verified"
    shown = ", ".join(f"{f['file']} ({f['reason']}"
                      + (f": {f['download_error']})" if f.get("download_error") else ")")
                      for f in state["failed"][:5])
    more = f" and {len(state['failed']) - 5} more" if len(state["failed"]) > 5 else ""
    return (f"{len(state['failed'])} of {state['checked']} model files failed verification "
            f"after {state['downloads_run']} download run(s): {shown}{more}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=TOOL, description="Fetch VisoMaster's models (Red's "
                                "fetcher, or the app's own downloader) and verify their "
                                "SHA-256.")
    p.add_argument("--repo", help="the app's checkout (required but with --retry-now)")
    p.add_argument("--models-data", default=DEFAULT_MODELS_DATA)
    p.add_argument("--attempts", type=int, default=3)
    p.add_argument("--state", default=DEFAULT_STATE)
    p.add_argument("--downloader", choices=("red", "app"), default=None,
                   help="red: Red's fetcher (the default); app: the app's download_models.py")
    p.add_argument("--streams", type=int, default=fetch.DEFAULT_STREAMS,
                   help=f"files Red's fetcher fetches at once ({fetch.MIN_STREAMS}.."
                        f"{fetch.MAX_STREAMS})")
    p.add_argument("--read-timeout", type=float, default=fetch.READ_TIMEOUT,
                   help="seconds Red's fetcher waits for a connection or a read")
    p.add_argument("--download-cmd", default=None,
                   help='the app downloader\'s command line (implies --downloader app), split '
                        'like a shell would (no shell is run); default: '
                        '"PYTHON download_models.py"')
    p.add_argument("--python", default=sys.executable,
                   help="the interpreter that runs the app's downloader")
    p.add_argument("--timeout", type=float, default=0,
                   help="seconds one round (one downloader run) may take (0: no limit)")
    p.add_argument("--deadline", type=float, default=0,
                   help="seconds for all the rounds together (0: no limit)")
    add_backoff_arguments(p, "--backoff", 0, "download")
    p.add_argument("--rehash", action="store_true", help="ignore cached hashes")
    p.add_argument("--cache", help="where the verified files' hashes are kept (default: in the "
                                   "state file)")
    p.add_argument("--check", action="store_true",
                   help="verify only, never download (like --attempts 0)")
    p.add_argument("--pip-state", help="red-app-pip's record: a failed install is the cause")
    p.add_argument("--status", help="the status JSON for per-file progress (step models)")
    a = rerun_arguments(p, argv, "download", ("--force", "--rehash"))
    if not a.repo:
        p.error("--repo is required")
    if a.attempts < 0:
        p.error("--attempts must be >= 0")
    if not fetch.MIN_STREAMS <= a.streams <= fetch.MAX_STREAMS:
        p.error(f"--streams must be {fetch.MIN_STREAMS}..{fetch.MAX_STREAMS}")
    if a.read_timeout <= 0:
        p.error("--read-timeout must be > 0")
    if a.check:
        a.attempts = 0
    a.downloader = a.downloader or ("app" if a.download_cmd else "red")
    a.cmd = shlex.split(a.download_cmd) if a.download_cmd else [a.python, "download_models.py"]
    if not a.cmd:
        p.error("--download-cmd is empty")
    # What the state's key names: the app's command line, or Red's fetcher.
    a.key_cmd = a.cmd if a.downloader == "app" else RED_FETCHER
    return a


def inputs_key(models_data: str, cmd: list[str]) -> str:
    """What makes a download another one: the model list and the downloader's command."""
    digest = hashlib.sha256(json.dumps(cmd).encode())
    try:
        with open(models_data, "rb") as handle:
            digest.update(handle.read())
    except OSError:
        pass
    return digest.hexdigest()


def record_outcome(state: dict, previous: dict, a: argparse.Namespace) -> None:
    """The failure count, cause and backoff: new after a failed download, else carried on."""
    note_failures(state, previous, tried=bool(state["downloads_run"]), cause=state["reason"],
                  base=a.backoff)
    # What --retry-now runs again: the last command line that could download.
    state["argv"] = a.argv if a.attempts else previous.get("argv")


def converge(a: argparse.Namespace, repo: str, models_data: str, state: dict,
             previous: dict) -> None:
    try:
        entries, skipped = read_models(models_data)
    except (OSError, SyntaxError, ValueError) as exc:
        state["error"] = f"cannot read the model list {models_data}: {exc}"
        return
    state["skipped"] = skipped
    if not entries:
        state["error"] = f"no model entries (dicts with local_path, hash, url) in {models_data}"
        return
    cache = {} if a.rehash else load_cache(a.state, a.cache)
    checked, failed = verify(repo, entries, cache, use_cache=not a.rehash)
    blocked = install_failed(a.pip_state, repo) \
        if failed and a.attempts and a.downloader == "app" else None
    if blocked:
        # The app's downloader imports the app's packages: without them every file would read
        # as "missing" or "sha256 mismatch", hiding the real cause. Red's fetcher needs none.
        state["error"] = (f"not downloaded: the app's packages are not installed ({blocked}); "
                          "the models are fetched by the first converge after the install")
        a.attempts = 0
    waiting = backoff_left(previous, state["key"]) if failed and a.attempts else 0
    if waiting and not a.force:
        # A failing download (a host down, a blackholed mirror) is not repeated at every boot.
        state["error"] = (f"not downloaded: the download failed {previous.get('failures')} "
                          f"time(s) ({previous.get('cause')}); next try after "
                          f"{previous.get('next_try_after')}; `{TOOL} --retry-now` tries now")
        a.attempts = 0
    rounds = red_rounds if a.downloader == "red" else app_rounds
    checked, failed, reporter = rounds(a, repo, entries, state, cache=cache,
                                       found=(checked, failed))
    state.update(checked=checked, failed=failed, ok=checked - len(failed),
                 verified=not failed, cache=cache)
    if reporter is not None and state["downloads_run"]:
        reporter.update(
            "done" if not failed else "failed", 100 * (checked - len(failed)) / max(1, checked),
            f"{checked - len(failed)} of {checked} model files verified", force=True)


class Clock:
    """--timeout per round, --deadline for all of them: the seconds a round may take."""

    def __init__(self, a: argparse.Namespace):
        self.timeout, self.deadline = a.timeout, a.deadline
        self.started = time.monotonic()

    def left(self) -> float | None:
        if not self.deadline:
            return None
        return self.deadline - (time.monotonic() - self.started)

    def limit(self) -> float | None:
        """None: no limit; 0: the deadline ran out."""
        left = self.left()
        if left is None:
            return self.timeout or None
        if left < 1:
            return 0
        return min(self.timeout or left, left)

    def start(self, state: dict) -> tuple[int, float | None] | None:
        """The next round's number and time limit, counted; None: the deadline ran out."""
        limit = self.limit()
        if limit == 0:
            state["deadline_reached"] = True
            return None
        state["downloads_run"] += 1
        return state["downloads_run"], limit


def app_rounds(a: argparse.Namespace, repo: str, entries: list[dict], state: dict, *,
               cache: dict, found: tuple[int, list]) -> tuple[int, list, Reporter | None]:
    """Run the app's downloader until the files verify (up to --attempts runs)."""
    checked, failed = found
    progress = FileProgress(repo, entries, a.status) if a.status else None
    clock = Clock(a)
    while failed and state["downloads_run"] < a.attempts:
        started = clock.start(state)
        if started is None:
            break
        n, limit = started
        print(f"{TOOL}: {len(failed)} of {checked} model files missing or wrong; running "
              f"{shlex.join(a.cmd)} in {repo} (attempt {n}/{a.attempts})", file=sys.stderr)
        t0 = time.monotonic()
        rc, tail = run_downloader(a.cmd, repo, limit, progress)
        state["download_runs"].append({"attempt": n, "exit_code": rc,
                                       "seconds": round(time.monotonic() - t0, 1),
                                       "output_tail": tail})
        if rc is None:
            checked, failed = verify(repo, entries, cache, use_cache=False)
            state["error"] = f"cannot run the downloader: {tail[-1]}" if failed else None
            break
        checked, failed = verify(repo, entries, cache, use_cache=False)
    return checked, failed, progress.reporter if progress else None


def red_rounds(a: argparse.Namespace, repo: str, entries: list[dict], state: dict, *,
               cache: dict, found: tuple[int, list]) -> tuple[int, list, Reporter | None]:
    """Fetch the failing files with Red's fetcher, in up to --attempts rounds."""
    checked, failed = found
    progress = FetchProgress(a.status, checked)
    errors: dict[str, dict] = {}  # path -> the last download error
    clock = Clock(a)
    while failed and state["downloads_run"] < a.attempts:
        todo = [f for f in failed if not errors.get(f["path"], {}).get("final")]
        if not todo:
            break  # what is left failed for good this run (a wrong SHA-256 twice, a 4xx)
        if state["downloads_run"]:
            pause = ROUND_PAUSE * 2 ** (state["downloads_run"] - 1)
            left = clock.left()
            time.sleep(pause if left is None else max(0.0, min(pause, left - 1)))
        started = clock.start(state)
        if started is None:
            break
        n, limit = started
        print(f"{TOOL}: {len(failed)} of {checked} model files missing or wrong; fetching "
              f"{len(todo)} with {min(a.streams, len(todo))} stream(s) (round "
              f"{n}/{a.attempts})", file=sys.stderr, flush=True)
        progress.ok = checked - len(failed)
        result, record = fetch_round(a, repo, entries, todo, limit=limit, progress=progress)
        state["download_runs"].append({"attempt": n, **record})
        note_outcomes(result, cache, errors)
        checked, failed = verify(repo, entries, cache, use_cache=True)
        if result.stopped:
            state["error"] = result.stopped
            break
        if result.deadline_reached:
            state["deadline_reached"] = True
            break
    explain(failed, errors)
    return checked, failed, progress.reporter


def install_failed(pip_state: str | None, repo: str) -> str | None:
    """
    Why the app's packages are missing, when red-app-pip's record says the install of this
    checkout's requirements failed (a record about another checkout says nothing about it).
    """
    record = json_state.read(pip_state) if pip_state else None
    if not isinstance(record, dict) or record.get("result") != "failed":
        return None
    if os.path.dirname(os.path.abspath(str(record.get("requirements")))) != repo:
        return None
    return (f"the last install of {record.get('requirements')} failed: {record.get('cause')}; "
            "`red-app-pip --retry-now` tries it now")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    repo = os.path.abspath(a.repo)
    models_data = a.models_data if os.path.isabs(a.models_data) \
        else os.path.join(repo, a.models_data)
    state: dict = {"verified": False, "checked": 0, "ok": 0, "failed": [], "skipped": [],
                   "time": timestamp(), "repo": repo, "models_data": models_data,
                   "attempts": a.attempts, "downloads_run": 0, "download_runs": [],
                   "downloader": a.downloader, "streams": a.streams,
                   "download_cmd": a.cmd if a.downloader == "app" else None,
                   "reason": "", "error": None, "cache": {}}
    lock_fd = None
    try:
        state_dir = os.path.dirname(os.path.abspath(a.state))
        os.makedirs(state_dir, exist_ok=True)
        lock_fd = os.open(state_dir, os.O_RDONLY)
        # One run per state file (a second one waits; each round is bounded by --timeout and
        # --deadline). Runs with other state files are kept off each other's files by the
        # fetcher's per-file locks.
        lock.acquire(lock_fd, None)
    except OSError:
        lock_fd = None
    try:
        previous = json_state.read(a.state)
        previous = previous if isinstance(previous, dict) else {}
        state["key"] = inputs_key(models_data, a.key_cmd)
        if not os.path.isdir(repo):
            state["error"] = f"repository directory {repo} does not exist"
        else:
            converge(a, repo, models_data, state, previous)
        state["time"] = timestamp()
        state["reason"] = summarize(state)
        record_outcome(state, previous, a)
        if a.cache:
            # The state keeps the outcome and the backoff (this container's); the hashes go
            # where the files are.
            problem = write_state(a.cache, {"cache": state.pop("cache")})
            problem = write_state(a.state, state) or problem
        else:
            problem = write_state(a.state, state)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)
    public = {k: v for k, v in state.items() if k != "cache"}
    public["state_file"] = a.state
    print(json.dumps(public, sort_keys=True))
    if problem:
        print(f"{TOOL}: warning: {problem}", file=sys.stderr)
    if state["verified"]:
        return EXIT_OK
    print(f"{TOOL}: NOT VERIFIED: {state['reason']}", file=sys.stderr)
    return EXIT_NOT_VERIFIED


if __name__ == "__main__":
    sys.exit(main())
