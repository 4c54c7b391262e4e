"""red-app-checkout: converge a directory to a git checkout of URL at REF, never losing user files.

Usage:
    red-app-checkout --url URL --ref REF --dest DIR [--log FILE] [--check]
                     [--retries N] [--backoff SECONDS] [--deadline SECONDS]

Runs on the target box (stdlib only, Python >= 3.10, git >= 2.35). It replaces pyinfra's
git.repo, which re-points a different remote silently, fails on a non-empty non-repo directory
and does not protect uncommitted work.

Modes
-----
--check   Print one JSON line describing the state; exit 0 when DIR is a clone of URL (remote
          "origin") whose HEAD is the commit REF resolves to (for a branch REF: the branch REF is
          checked out at the upstream branch head), exit 1 otherwise (also when the state cannot
          be determined). Never modifies anything (no fetch, no index refresh, no log file).
          A tag or a commit hash that resolves locally is trusted without network (tags are
          treated as immutable); a branch is compared with `git ls-remote` and, when offline,
          with the last fetched origin/REF (a warning says so). Uncommitted edits or untracked
          files do not make the state "out of state": they are the user's, not ours.
(default) Apply: converge DIR, print one JSON summary line on stdout, append timestamped lines to
          --log (default /logs/visomaster-checkout.log; stderr when it cannot be written).

Conflict handling (apply)
-------------------------
 1. DIR missing: clone into the sibling DIR.partial-<pid>, check out REF there, then rename it
    to DIR, so a half clone is never left at DIR. Stale DIR.partial-<pid> of dead processes are
    removed on the next run.
 2. Clone of URL already at REF: nothing changes (action "unchanged"; a tag/commit that resolves
    locally needs no network).
 3. Older ref / upstream moved: fetch origin (branches and tags, forced), then move HEAD: a tag or
    commit is checked out detached; a branch REF is checked out as local branch REF tracking
    origin/REF (reset to it; local commits are saved first, see 5).
 4. Uncommitted edits, staged files, untracked files (and ignored files that the new ref would
    overwrite): before HEAD moves, each such path is COPIED into the sibling backup directory
    DIR.user-files-<timestamp>/<same relative path> and every copy is compared byte for byte with
    its source (the run aborts before touching DIR when a copy fails). The tracked changes are
    also saved as a binary patch, .red-app-checkout.patch, and a manifest,
    .red-app-checkout-manifest.json, in that directory (unless a user file has that name).
    Then a normal (non forced) `git checkout` is tried: it keeps every edit that does not
    collide with the new ref. When git refuses (an edited file changed upstream, an untracked
    file is in the way), the paths in the way are removed (they are saved), a forced checkout
    is done and the user's version is put back for each file that upstream did not change and
    for each file the new ref does not track; a file upstream changed stays at
    REF's content in the tree and the user's version is in the backup directory (reported as
    in_worktree=false, with a warning). Every pre-existing user file is therefore byte for byte
    either in the tree or at the backup path named in the summary and the log. No stash is
    used: a stash is invisible to most users and `git stash -u` has had bugs with ignored
    files; a plain directory is easy to inspect (`diff -r BACKUP DIR`) and to copy back from.
 5. Local commits not reachable from origin's branches or from tags: a branch
    red-backup/<timestamp> (suffix -2, -3... when taken) is created at HEAD (and at a local
    branch REF that is about to be reset), reported in the summary and the log.
 6. DIR exists and is empty: cloned into the sibling DIR.partial-<pid>, whose entries are then
    moved into DIR (.git last), so DIR keeps its inode, owner, mode and mount.
 7. DIR has files but no .git: the fresh clone is made first; then DIR is renamed to
    DIR.moved-aside-<YYYYmmdd-HHMMSS> (suffix -2, -3... when taken) and the clone put in place.
 8. Broken .git (no HEAD, unreadable, HEAD commit missing, status fails): like 7.
 9. origin is a different URL (or missing): like 7; never re-pointed.
Trailing "/" and ".git" are ignored when comparing URLs, and file:// URLs equal their path.

Timestamps are UTC, YYYYmmdd-HHMMSS. (Tests may pin one with RED_APP_CHECKOUT_TIMESTAMP.)

Clone depth: a FULL clone (git clone --no-checkout, then git checkout). Detecting local commits
needs history ("rev-list HEAD --not --remotes=origin --tags"), which a shallow clone makes
unreliable (every commit below the shallow boundary looks unreachable); moving from one tag to
another in a shallow clone also needs unshallow/deepen steps. The app repository is small (no
LFS, models are downloaded separately), so the full history costs little.

Git hygiene: every git command trusts DIR (its absolute and real path, and the partial clone's;
never "*") as safe.directory, so a DIR owned by another user is not refused as "dubious
ownership". The exception goes into a global-scope config file of the run's own
(GIT_CONFIG_GLOBAL, which includes the user's global config): git 2.34 (Ubuntu 22.04) reads
safe.directory only from the system and global scopes, not from `-c` (honoured from 2.38).
Hooks are disabled (core.hooksPath=/dev/null), core.fsmonitor is off (`false` from git 2.36;
before that the value is a hook's path, so it is set empty), prompts are
off (GIT_TERMINAL_PROMPT=0), GIT_CEILING_DIRECTORIES stops git from finding a parent repository
when DIR/.git is broken, and inherited GIT_DIR-like variables are dropped. Values are never
passed through a shell. A concurrent run is serialized with flock on DIR's parent directory.

Network: clone, fetch and ls-remote are retried --retries times (default 3, so at most 4
attempts) with exponential backoff (--backoff, default 2 s: 2, 4, 8 s), all of them within one
total --deadline (default 1800 s, 0: none; a git command still running then is killed). When all
attempts fail,
nothing is left behind (no DIR.partial-*, DIR untouched), a one-line error goes to stderr and the
log, and the exit code is 2; the next run converges.

Exit codes: 0 ok / in state; 1 (--check) apply would change something; 2 network (clone/fetch)
failure; 3 REF not found at URL; 4 other failure (e.g. git missing, dubious ownership despite
safe.directory, filesystem error). The JSON line is printed in every case.

Apply summary (one JSON line on stdout):
  {"tool": "red-app-checkout", "mode": "apply", "ok": bool, "exit_code": int,
   "action": "unchanged" | "cloned" | "updated" | "error", "reason": str,
   "dest", "url", "ref", "ref_type": "tag" | "branch" | "commit" | null,
   "commit": sha | null, "previous_commit": sha | null, "branch": str | null,
   "moved_aside": [path], "backup_branches": [{"name", "commit", "commits"}],
   "user_files_backup": path | null,
   "user_files": [{"path": rel, "backup": abs path, "in_worktree": bool}],
   "warnings": [str], "error": str | null, "log": path}
Check output: {"tool", "mode": "check", "in_state": bool, "state": "in_state" | "missing" |
   "not_a_directory" | "empty" | "not_a_repo" | "broken_repo" | "different_remote" |
   "wrong_commit" | "wrong_branch" | "ref_unknown" | "error", "reason", "dest", "url", "ref",
   "ref_type", "head", "target", "branch", "origin", "dirty", "local_commits", "warnings"}
"""

from __future__ import annotations

import argparse
import errno
import filecmp
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from redbox.core import aside as aside_
from redbox.core import lock
from redbox.core import log as logs_
from redbox.core.pids import alive as pid_alive
from redbox.core.retry import Attempts
from redbox.settings import parse

TOOL = "red-app-checkout"
DEFAULT_LOG = "/logs/visomaster-checkout.log"
HEX_RE = re.compile(r"[0-9a-fA-F]{4,40}")
PATCH_NAME = ".red-app-checkout.patch"
MANIFEST_NAME = ".red-app-checkout-manifest.json"
DROP_ENV = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_COMMON_DIR", "GIT_PREFIX",
    "GIT_CEILING_DIRECTORIES",
)

# Clone, fetch and ls-remote together, retries and pauses included: a stalled remote ends here.
DEFAULT_DEADLINE = 1800.0
EXIT_OK, EXIT_CHANGE, EXIT_NETWORK, EXIT_REF, EXIT_OTHER = 0, 1, 2, 3, 4


class Fail(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# --------------------------------------------------------------------------------------------
# helpers


def utc_stamp() -> str:
    return os.environ.get("RED_APP_CHECKOUT_TIMESTAMP") or logs_.stamp()


# Hosts whose repository paths are case-insensitive (github.com/VisoMaster/VisoMaster is
# github.com/visomaster/visomaster): the path is compared lower-cased there.
CASE_INSENSITIVE_HOSTS = ("github.com", "gitlab.com", "bitbucket.org", "codeberg.org")
_DEFAULT_PORTS = {"http": "80", "https": "443", "ssh": "22", "git": "9418"}
_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(\[[^\]]+\]|[^:/]+):(?!//)(.*)$")


def remote_key(url: str) -> str:
    """
    What identifies a remote as git hosts see it: host (case-insensitive) and path, whatever
    the transport. https://github.com/VisoMaster/VisoMaster, ...VisoMaster.git and
    git@github.com:visomaster/VisoMaster.git are one remote; a user name, a default port and a
    trailing ".git" or "/" do not count. Local paths and file:// URLs compare as normalized
    paths.
    """
    u = url.strip()
    if u.startswith("file://"):
        u = u[len("file://"):]
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/]*)(.*)$", u)
    scp = None if m or u.startswith("/") else _SCP_LIKE.match(u)
    if m:
        scheme, netloc, path = m.group(1).lower(), m.group(2), m.group(3)
        hostport = netloc.rpartition("@")[2].lower()
        host, _, port = hostport.rpartition(":") if re.search(r":\d+$", hostport) \
            else (hostport, "", "")
        if port and port == _DEFAULT_PORTS.get(scheme.replace("git+", "")):
            port = ""
        where = host + (f":{port}" if port else "")
    elif scp:
        where, path = scp.group(1).lower(), "/" + scp.group(2)
    else:
        return _strip(os.path.normpath(u) if u.startswith("/") else u)
    host = where.split(":")[0]
    path = re.sub(r"/+", "/", path)
    if host in CASE_INSENSITIVE_HOSTS:
        path = path.lower()
    return where + _strip(path)


def _strip(path: str) -> str:
    path = path.rstrip("/")
    if path.lower().endswith(".git"):
        path = path[:-4]
    return path.rstrip("/")


def same_remote(a: str, b: str) -> bool:
    return remote_key(a) == remote_key(b)


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    # prefer a line starting with fatal:/error:
    for ln in lines:
        if ln.startswith(("fatal:", "error:")):
            return ln
    return lines[-1] if lines else ""


def same_content(a: str, b: str) -> bool:
    """True when paths a and b hold the same thing (symlink target, file bytes, dir tree)."""
    if os.path.islink(a) or os.path.islink(b):
        return (os.path.islink(a) and os.path.islink(b)
                and os.readlink(a) == os.readlink(b))
    if os.path.isfile(a) and os.path.isfile(b):
        return filecmp.cmp(a, b, shallow=False)
    if os.path.isdir(a) and os.path.isdir(b):
        ea, eb = sorted(os.listdir(a)), sorted(os.listdir(b))
        if ea != eb:
            return False
        return all(same_content(os.path.join(a, e), os.path.join(b, e)) for e in ea)
    return False


def copy_entry(src: str, dst: str) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
    elif os.path.isdir(src):
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy2(src, dst)


# --------------------------------------------------------------------------------------------
# git runner


def git_version() -> tuple[int, int]:
    """git's (major, minor), (0, 0) when unknown (then the old-git settings are used)."""
    try:
        out = subprocess.run(["git", "--version"], capture_output=True, text=True,
                             check=False, stdin=subprocess.DEVNULL).stdout
    except OSError:
        return (0, 0)
    match = re.search(r"(\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def user_global_configs(env: dict[str, str]) -> list[str]:
    """The global config files git would read for the user: included in the run's own."""
    if env.get("GIT_CONFIG_GLOBAL"):
        return [env["GIT_CONFIG_GLOBAL"]]
    home = env.get("HOME") or os.path.expanduser("~")
    xdg = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return [path for path in (os.path.join(xdg, "git", "config"), os.path.join(home, ".gitconfig"))
            if os.path.isfile(path)]


class Git:
    def __init__(self, extra_safe: list[str] | None = None):
        self.extra_safe = list(extra_safe or [])
        self._version: tuple[int, int] | None = None
        self._config_dir: tempfile.TemporaryDirectory | None = None

    def _global_config(self, safe: list[str], env: dict[str, str]) -> str:
        """A global-scope config file for this run: the user's, plus the safe directories."""
        if self._config_dir is None:
            self._config_dir = tempfile.TemporaryDirectory(prefix="red-app-checkout-git-")
        lines = [f"[include]\n\tpath = {path}\n" for path in user_global_configs(env)]
        lines += ["[safe]\n", *(f"\tdirectory = {path}\n" for path in safe)]
        text = "".join(lines)
        path = os.path.join(self._config_dir.name,
                            hashlib.sha256(text.encode()).hexdigest()[:16] + ".gitconfig")
        if not os.path.exists(path):
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
        return path

    def _fsmonitor_off(self) -> str:
        if self._version is None:
            self._version = git_version()
        return "false" if self._version >= (2, 36) else ""

    def _safe_dirs(self, repo: str | None) -> list[str]:
        out: list[str] = []
        for p in ([repo] if repo else []) + self.extra_safe:
            for q in (os.path.abspath(p), os.path.realpath(p)):
                if q not in out:
                    out.append(q)
        return out

    def run(self, args: list[str], repo: str | None = None, cwd: str | None = None,
            check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        # These stay on the command line: it wins over a repository's own config.
        cmd = [
            "git",
            "-c", "core.hooksPath=/dev/null",
            "-c", f"core.fsmonitor={self._fsmonitor_off()}",
            "-c", "advice.detachedHead=false",
            "-c", "http.lowSpeedLimit=1000",
            "-c", "http.lowSpeedTime=60",
        ]
        if repo:
            cmd += ["-C", repo]
        cmd += args
        env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
        env.update({"LC_ALL": "C", "LANGUAGE": "C", "GIT_TERMINAL_PROMPT": "0",
                    "GIT_OPTIONAL_LOCKS": "0", "GCM_INTERACTIVE": "never"})
        env["GIT_CONFIG_GLOBAL"] = self._global_config(self._safe_dirs(repo), env)
        if repo:
            env["GIT_CEILING_DIRECTORIES"] = os.path.dirname(os.path.realpath(repo))
        try:
            proc = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, check=False, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc = subprocess.CompletedProcess(cmd, -9, exc.stdout or b"",
                                               f"fatal: no answer within {timeout:.0f} s "
                                               "(--deadline)".encode())
        except FileNotFoundError as exc:
            raise Fail(EXIT_OTHER, "git is not installed (not found on PATH)") from exc
        proc.out = os.fsdecode(proc.stdout)  # type: ignore[attr-defined]
        proc.err = proc.stderr.decode("utf-8", "replace")  # type: ignore[attr-defined]
        if "dubious ownership" in proc.err:
            raise Fail(EXIT_OTHER, f"git refused {repo or cwd}: {last_line(proc.err)}")
        if check and proc.returncode != 0:
            raise Fail(EXIT_OTHER, f"git {' '.join(args[:2])} failed in {repo or cwd}: "
                                   f"{last_line(proc.err)}")
        return proc

    def out(self, args: list[str], repo: str | None = None) -> str:
        return self.run(args, repo=repo).out.strip()  # type: ignore[attr-defined]

    def maybe(self, args: list[str], repo: str | None = None) -> str | None:
        p = self.run(args, repo=repo, check=False)
        return p.out.strip() if p.returncode == 0 else None  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# state


class Ctx:
    def __init__(self, args: argparse.Namespace, log: logs_.Log):
        self.url: str = args.url
        self.ref: str = args.ref
        self.dest: str = os.path.abspath(args.dest)
        self.retries: int = max(0, args.retries)
        self.backoff: float = max(0.0, args.backoff)
        # One budget for all of this run's network steps (clone, fetch, ls-remote).
        self.network = Attempts(1, 0, deadline=args.deadline or None)
        self.log = log
        self.partial = f"{self.dest}.partial-{os.getpid()}"
        self.git = Git(extra_safe=[self.partial])
        self.warnings: list[str] = []

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        self.log(f"WARNING: {msg}")


def inspect(ctx: Ctx) -> dict:  # noqa: PLR0911 (one return per state)
    """Classify DEST without modifying anything."""
    d = ctx.dest
    st: dict = {"kind": None, "reason": "", "head": None, "branch": None, "origin": None,
                "dirty": None}
    if not os.path.lexists(d):
        st.update(kind="missing", reason="destination does not exist")
        return st
    if not os.path.isdir(d):
        st.update(kind="not_a_directory", reason="destination exists but is not a directory")
        return st
    if not os.listdir(d):
        st.update(kind="empty", reason="destination is an empty directory")
        return st
    if not os.path.lexists(os.path.join(d, ".git")):
        st.update(kind="not_a_repo", reason="destination has files but no .git")
        return st
    g = ctx.git
    top = g.run(["rev-parse", "--show-toplevel"], repo=d, check=False)
    if top.returncode != 0:
        st.update(kind="broken_repo", reason=f"broken .git: {last_line(top.err)}")
        return st
    if os.path.realpath(top.out.strip()) != os.path.realpath(d):
        st.update(kind="broken_repo", reason="broken .git: git does not see DEST as a work tree")
        return st
    head = g.maybe(["rev-parse", "--verify", "-q", "HEAD^{commit}"], repo=d)
    if not head:
        st.update(kind="broken_repo", reason="broken .git: HEAD does not name a commit")
        return st
    status = g.run(["status", "--porcelain=v1", "-z", "--untracked-files=all"], repo=d,
                   check=False)
    if status.returncode != 0:
        st.update(kind="broken_repo", reason=f"broken .git: git status: {last_line(status.err)}")
        return st
    st["head"] = head
    st["dirty"] = bool(status.out.strip("\0"))
    st["branch"] = g.maybe(["symbolic-ref", "-q", "--short", "HEAD"], repo=d) or None
    origin = g.maybe(["config", "--get", "remote.origin.url"], repo=d)
    st["origin"] = origin
    if origin is None:
        st.update(kind="different_remote", reason="repository has no remote 'origin'")
        return st
    if not same_remote(origin, ctx.url):
        st.update(kind="different_remote", reason=f"origin is {origin}, not {ctx.url}")
        return st
    st.update(kind="repo", reason="clone of URL")
    return st


def resolve_local(g: Git, repo: str, ref: str) -> tuple[str, str] | None:
    sha = g.maybe(["rev-parse", "--verify", "-q", f"refs/tags/{ref}^{{commit}}"], repo=repo)
    if sha:
        return "tag", sha
    sha = g.maybe(["rev-parse", "--verify", "-q", f"refs/remotes/origin/{ref}^{{commit}}"],
                  repo=repo)
    if sha:
        return "branch", sha
    if HEX_RE.fullmatch(ref):
        sha = g.maybe(["rev-parse", "--verify", "-q", f"{ref}^{{commit}}"], repo=repo)
        if sha and sha.lower().startswith(ref.lower()):
            return "commit", sha
    return None


def with_retries(ctx: Ctx, what: str, fn) -> subprocess.CompletedProcess:
    """fn(timeout) until it exits 0: --retries more times, backing off, within --deadline."""
    tries = Attempts(ctx.retries + 1, ctx.backoff, deadline=ctx.network.remaining())
    last = ""
    for i in tries:
        proc = fn(tries.remaining())
        if proc.returncode == 0:
            if i > 1:
                ctx.log(f"{what}: attempt {i}/{tries.attempts} succeeded")
            return proc
        last = last_line(proc.err) or f"exit code {proc.returncode}"
        ctx.log(f"{what}: attempt {i}/{tries.attempts} failed: {last}")
    raise Fail(EXIT_NETWORK, f"{what} failed {tries.summary()}: {last}")


def ls_remote(ctx: Ctx, repo: str | None) -> tuple[str, str] | None:
    """(type, sha) of REF at URL, or None when URL has no such tag/branch. Fail on error."""
    ref = ctx.ref
    proc = with_retries(ctx, f"git ls-remote {ctx.url}", lambda timeout: ctx.git.run(
        ["ls-remote", ctx.url, f"refs/tags/{ref}", f"refs/tags/{ref}^{{}}",
         f"refs/heads/{ref}"], repo=repo, check=False, timeout=timeout))
    refs = {}
    for line in proc.out.splitlines():
        if "\t" in line:
            sha, name = line.split("\t", 1)
            refs[name.strip()] = sha.strip()
    if f"refs/tags/{ref}^{{}}" in refs:
        return "tag", refs[f"refs/tags/{ref}^{{}}"]
    if f"refs/tags/{ref}" in refs:
        return "tag", refs[f"refs/tags/{ref}"]
    if f"refs/heads/{ref}" in refs:
        return "branch", refs[f"refs/heads/{ref}"]
    return None


def count_unpushed(g: Git, repo: str, rev: str) -> int:
    out = g.maybe(["rev-list", "--count", rev, "--not", "--remotes=origin", "--tags"], repo=repo)
    try:
        return int(out or "0")
    except ValueError:
        return 0


# --------------------------------------------------------------------------------------------
# check


def do_check(ctx: Ctx) -> tuple[dict, int]:
    st = inspect(ctx)
    res = {"tool": TOOL, "mode": "check", "in_state": False, "state": st["kind"],
           "reason": st["reason"], "dest": ctx.dest, "url": ctx.url, "ref": ctx.ref,
           "ref_type": None, "head": st["head"], "target": None, "branch": st["branch"],
           "origin": st["origin"], "dirty": st["dirty"], "local_commits": None,
           "warnings": ctx.warnings}
    if st["kind"] != "repo":
        return res, EXIT_CHANGE
    g, d = ctx.git, ctx.dest
    loc = resolve_local(g, d, ctx.ref)
    target = None
    if loc and loc[0] in ("tag", "commit"):
        target = loc
    else:
        try:
            target = ls_remote(ctx, d)
        except Fail as exc:
            if loc:
                ctx.warnings.append(f"offline ({exc.message}); compared with the last fetched "
                                    f"origin/{ctx.ref}")
                target = loc
            else:
                res.update(state="ref_unknown",
                           reason=f"cannot resolve {ctx.ref!r} locally nor reach URL: "
                                  f"{exc.message}")
                return res, EXIT_CHANGE
        if target is None and loc:
            target = loc
        if target is None:
            res.update(state="ref_unknown", reason=f"{ctx.ref!r} is not a tag or branch at URL "
                                                   "nor a commit known locally")
            return res, EXIT_CHANGE
    res["ref_type"], res["target"] = target
    res["local_commits"] = count_unpushed(g, d, "HEAD")
    if st["head"] != target[1]:
        res.update(state="wrong_commit", reason=f"HEAD is {st['head'][:12]}, {ctx.ref} is "
                                                f"{target[1][:12]}")
        return res, EXIT_CHANGE
    if target[0] == "branch" and st["branch"] != ctx.ref:
        res.update(state="wrong_branch",
                   reason=f"HEAD is at the right commit but branch {ctx.ref} is not checked out")
        return res, EXIT_CHANGE
    res.update(in_state=True, state="in_state", reason=f"HEAD is {ctx.ref} ({target[1][:12]})")
    return res, EXIT_OK


# --------------------------------------------------------------------------------------------
# apply


def cleanup_stale_partials(ctx: Ctx) -> None:
    for p in glob.glob(glob.escape(ctx.dest) + ".partial-*"):
        m = re.search(r"\.partial-(\d+)$", p)
        if not m or int(m.group(1)) == os.getpid() or pid_alive(int(m.group(1))):
            continue
        ctx.log(f"removing stale partial clone {p}")
        shutil.rmtree(p, ignore_errors=True)


def checkout_args(ref_type: str, ref: str, sha: str, force: bool) -> list[str]:
    f = ["-f"] if force else []
    if ref_type == "branch":
        return ["checkout", *f, "-B", ref, "--track", f"origin/{ref}"]
    return ["checkout", *f, "--detach", sha]


def fresh_clone(ctx: Ctx, st: dict, summary: dict) -> None:
    g, partial = ctx.git, ctx.partial
    if os.path.lexists(partial):
        shutil.rmtree(partial, ignore_errors=True)
    ctx.log(f"cloning {ctx.url} into {partial} ({st['reason']})")

    def attempt(timeout: float | None) -> subprocess.CompletedProcess:
        shutil.rmtree(partial, ignore_errors=True)
        return g.run(["clone", "--no-checkout", "--origin", "origin", "--", ctx.url, partial],
                     cwd=os.path.dirname(ctx.dest), check=False, timeout=timeout)

    try:
        with_retries(ctx, f"git clone {ctx.url}", attempt)
        loc = resolve_local(g, partial, ctx.ref)
        if not loc:
            raise Fail(EXIT_REF, f"ref {ctx.ref!r} not found in {ctx.url}")
        g.run(checkout_args(loc[0], ctx.ref, loc[1], force=True), repo=partial)
        head = g.out(["rev-parse", "HEAD"], repo=partial)
        if head != loc[1]:
            raise Fail(EXIT_OTHER, f"checkout of {ctx.ref} in {partial} ended at {head}")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    d = ctx.dest
    try:
        if st["kind"] in ("not_a_directory", "not_a_repo", "broken_repo", "different_remote"):
            aside = move_aside(ctx)
            summary["moved_aside"].append(aside)
        install_clone(ctx)
    except BaseException:
        if os.path.lexists(partial):
            ctx.log(f"install failed; removing {partial}")
            shutil.rmtree(partial, ignore_errors=True)
        raise
    summary.update(action="cloned", ref_type=loc[0], commit=loc[1],
                   branch=ctx.ref if loc[0] == "branch" else None)
    ctx.log(f"cloned {ctx.url} at {ctx.ref} ({loc[0]} {loc[1]}) into {d}")
    if st["kind"] == "different_remote" and summary["moved_aside"]:
        summary["carried_over"] = carry_over(ctx, summary["moved_aside"][-1])


# Git-ignored files at least this big are what a remote change must not make the user fetch
# again (models, TensorRT engines); smaller ignored files stay in the moved-aside tree.
CARRY_MIN_BYTES = 1 << 20


def ignored_files(g: Git, repo: str) -> list[str]:
    """Untracked files the repository's own rules ignore (relative paths)."""
    out = g.run(["ls-files", "-z", "--others", "--ignored", "--exclude-standard"], repo=repo,
                check=False).out
    return [rel for rel in out.split("\0") if rel]


def carry_over(ctx: Ctx, aside: str) -> dict:
    """
    Move (rename: same filesystem, never a copy) the old tree's large git-ignored files into
    the new clone, where the new tree ignores them too and has nothing at that path: a change
    of remote (or flavor) keeps gigabytes of models and engines. Returns what moved.
    """
    g, d = ctx.git, ctx.dest
    candidates = [rel for rel in ignored_files(g, aside)
                  if os.path.isfile(os.path.join(aside, rel))
                  and not os.path.islink(os.path.join(aside, rel))
                  and os.path.getsize(os.path.join(aside, rel)) >= CARRY_MIN_BYTES
                  and not os.path.lexists(os.path.join(d, rel))]
    ignored_here: set[str] = set()
    for start in range(0, len(candidates), 200):
        check = g.run(["-c", "core.quotePath=false", "check-ignore", "--",
                       *candidates[start:start + 200]], repo=d,
                      check=False)
        ignored_here.update(rel for rel in check.out.splitlines() if rel)
    moved, kept, size = [], [], 0
    for rel in candidates:
        if rel not in ignored_here:
            kept.append(rel)  # the new tree would track or show it: it stays aside
            continue
        target = os.path.join(d, rel)
        try:
            if parent_blocked(d, rel):
                kept.append(rel)
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            length = os.path.getsize(os.path.join(aside, rel))
            os.rename(os.path.join(aside, rel), target)
        except OSError as exc:
            ctx.log(f"could not move {rel} from {aside} ({exc}): it stays there")
            kept.append(rel)
            continue
        moved.append(rel)
        size += length
    if moved:
        ctx.log(f"carried {len(moved)} git-ignored file(s) ({size} bytes) from {aside} into "
                f"{d} (moved, not copied): {', '.join(moved)}")
    if kept:
        ctx.log(f"left {len(kept)} large ignored file(s) in {aside}: {', '.join(kept)}")
    return {"from": aside, "files": moved, "bytes": size, "left": kept}


def move_aside(ctx: Ctx) -> str:
    d = ctx.dest
    aside = aside_.moved_aside(d, utc_stamp())
    try:
        os.rename(d, aside)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EBUSY, errno.EPERM, errno.EACCES) \
                or not os.path.isdir(d) or os.path.islink(d):
            raise
        # DIR is probably a mount point: move its entries instead
        os.mkdir(aside)
        for entry in sorted(os.listdir(d)):
            shutil.move(os.path.join(d, entry), os.path.join(aside, entry))
    ctx.log(f"moved existing {d} aside to {aside}: nothing in it was deleted")
    return aside


def install_clone(ctx: Ctx) -> None:
    d, partial = ctx.dest, ctx.partial
    if not os.path.lexists(d):
        os.rename(partial, d)
        return
    if not os.path.isdir(d) or os.listdir(d):
        raise Fail(EXIT_OTHER, f"{d} is not empty; refusing to install the clone into it")
    entries = sorted(os.listdir(partial), key=lambda e: (e == ".git", e))
    for entry in entries:
        shutil.move(os.path.join(partial, entry), os.path.join(d, entry))
    os.rmdir(partial)


def tree_map(g: Git, repo: str, rev: str) -> dict[str, str]:
    out = g.run(["ls-tree", "-r", "-z", "--full-tree", rev], repo=repo).out
    res = {}
    for rec in out.split("\0"):
        if "\t" in rec:
            meta, path = rec.split("\t", 1)
            res[path] = meta  # "mode type sha"
    return res


def status_paths(g: Git, repo: str) -> list[str]:
    out = g.run(["status", "--porcelain=v1", "-z", "--untracked-files=all"], repo=repo).out
    toks = out.split("\0")
    paths: list[str] = []
    i = 0
    while i < len(toks):
        tok = toks[i]
        i += 1
        if len(tok) < 4:
            continue
        xy, path = tok[:2], tok[3:]
        if xy[0] in "RC":
            i += 1  # skip the original path
        path = path.rstrip("/")
        if os.path.lexists(os.path.join(repo, path)) and path not in paths:
            paths.append(path)
    return paths


def in_the_way(repo: str, target: dict[str, str], index: set[str]) -> list[str]:
    """Untracked or ignored paths that checking out `target` would overwrite."""
    found: list[str] = []
    for path in target:
        if path in index:
            continue
        parts = path.split("/")
        for k in range(1, len(parts) + 1):
            pre = "/".join(parts[:k])
            full = os.path.join(repo, pre)
            if not os.path.lexists(full):
                break
            if k < len(parts):
                if os.path.isdir(full) and not os.path.islink(full):
                    continue
                if pre not in index and pre not in found:
                    found.append(pre)
                break
            if pre not in found:
                found.append(pre)
    return found


def backup_user_files(ctx: Ctx, paths: list[str], old_head: str) -> str:
    d, g = ctx.dest, ctx.git
    bdir = aside_.user_files(d, utc_stamp())
    os.makedirs(bdir)
    ctx.log(f"saving {len(paths)} user file(s) to {bdir} before moving HEAD")
    for rel in paths:
        src, dst = os.path.join(d, rel), os.path.join(bdir, rel)
        problem = None
        try:
            copy_entry(src, dst)
            if not same_content(src, dst):
                problem = "the copy differs from the original"
        except OSError as exc:
            problem = str(exc)
        if problem:
            shutil.rmtree(bdir, ignore_errors=True)  # only copies; the originals are untouched
            raise Fail(EXIT_OTHER, f"cannot back up {src} to {dst}: {problem}; "
                                   f"nothing in {d} was changed")
        ctx.log(f"saved {rel} -> {dst}")
    extras = {}
    patch = g.run(["diff", "--binary", "HEAD"], repo=d, check=False)
    if patch.returncode == 0 and patch.stdout:
        extras[PATCH_NAME] = patch.stdout
    manifest = {"tool": TOOL, "dest": d, "head_before": old_head, "url": ctx.url,
                "ref": ctx.ref, "time": utc_stamp(), "files": paths,
                "restore_hint": f"diff -r {bdir} {d}; copy back what you need"}
    extras[MANIFEST_NAME] = (json.dumps(manifest, indent=2) + "\n").encode()
    for name, data in extras.items():
        p = os.path.join(bdir, name)
        if os.path.lexists(p):
            ctx.warn(f"not writing {p}: a user file has that name")
            continue
        with open(p, "wb") as fh:
            fh.write(data)
    return bdir


class MovePlan:
    """What moving HEAD from the old commit to the target commit will touch."""

    def __init__(self, g: Git, d: str, sha: str):
        self.head_map = tree_map(g, d, "HEAD")
        self.target_map = tree_map(g, d, sha)
        index = set(p for p in g.run(["ls-files", "-z"], repo=d).out.split("\0") if p)
        dirty = status_paths(g, d)
        self.way = in_the_way(d, self.target_map, index)
        paths = dirty + [p for p in self.way if p not in dirty]
        dirs = [p for p in paths
                if os.path.isdir(os.path.join(d, p)) and not os.path.islink(os.path.join(d, p))]
        # a directory that is saved whole covers the files below it
        self.paths = [p for p in paths if not any(p.startswith(x + "/") for x in dirs)]

    def upstream_owns(self, rel: str) -> bool:
        """True when the target tracks rel with content other than the old HEAD's."""
        if rel not in self.target_map:
            return False
        return rel in self.way or self.head_map.get(rel) != self.target_map.get(rel)


def parent_blocked(d: str, rel: str) -> bool:
    parts = rel.split("/")
    for k in range(1, len(parts)):
        pre = os.path.join(d, *parts[:k])
        if os.path.lexists(pre) and (os.path.islink(pre) or not os.path.isdir(pre)):
            return True
    return False


def restore_after_force(ctx: Ctx, bdir: str, plan: MovePlan) -> None:
    d = ctx.dest
    for rel in plan.paths:
        src, dst = os.path.join(bdir, rel), os.path.join(d, rel)
        if os.path.isdir(src) and not os.path.islink(src):
            continue
        if plan.upstream_owns(rel) or parent_blocked(d, rel):
            continue  # the user's version stays in the backup only
        if os.path.lexists(dst):
            if same_content(src, dst):
                continue
            if rel not in plan.target_map or (os.path.isdir(dst) and not os.path.islink(dst)):
                continue  # something else is there now; keep it, user's copy is in the backup
            os.unlink(dst)
        copy_entry(src, dst)
        ctx.log(f"restored your version of {rel} into the work tree")


def fetch_target(ctx: Ctx, st: dict, summary: dict) -> tuple[str, str] | None:
    """(ref_type, sha) HEAD must move to, or None when nothing has to change."""
    g, d, ref = ctx.git, ctx.dest, ctx.ref
    old_head = st["head"]
    loc = resolve_local(g, d, ref)
    if loc and loc[0] in ("tag", "commit") and loc[1] == old_head:
        summary.update(action="unchanged", reason=f"HEAD is already {ref}", ref_type=loc[0],
                       commit=old_head, branch=st["branch"])
        return None
    ctx.log(f"fetching {ctx.url} into {d}")
    with_retries(ctx, f"git fetch {ctx.url}", lambda timeout: g.run(
        ["fetch", "--force", "--no-recurse-submodules", "origin",
         "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"],
        repo=d, check=False, timeout=timeout))
    loc = resolve_local(g, d, ref)
    if not loc:
        raise Fail(EXIT_REF, f"ref {ref!r} not found in {ctx.url}")
    ref_type, sha = loc
    summary.update(ref_type=ref_type, commit=sha)
    if old_head == sha and (ref_type != "branch" or st["branch"] == ref):
        summary.update(action="unchanged", reason=f"HEAD is already {ref}", branch=st["branch"])
        return None
    summary["reason"] = (f"moving HEAD from {old_head[:12]} to {ref} ({sha[:12]})"
                         if old_head != sha else f"checking out branch {ref}")
    return loc


def save_local_commits(ctx: Ctx, summary: dict, ref_type: str, old_head: str) -> None:
    g, d, ref = ctx.git, ctx.dest, ctx.ref
    to_save = [("HEAD", old_head)]
    if ref_type == "branch":
        local_branch = g.maybe(["rev-parse", "--verify", "-q", f"refs/heads/{ref}"], repo=d)
        if local_branch and local_branch != old_head:
            to_save.append((f"branch {ref}", local_branch))
    stamp = utc_stamp()
    for label, rev in to_save:
        n = count_unpushed(g, d, rev)
        if n <= 0:
            continue
        name = f"red-backup/{stamp}"
        k = 2
        while g.maybe(["rev-parse", "--verify", "-q", f"refs/heads/{name}"], repo=d):
            name = f"red-backup/{stamp}-{k}"
            k += 1
        g.run(["branch", "--no-track", name, rev], repo=d)
        summary["backup_branches"].append({"name": name, "commit": rev, "commits": n})
        ctx.warn(f"{n} local commit(s) at {label} ({rev[:12]}) are not on {ctx.url}: kept on "
                 f"branch {name} (git -C {d} log {name})")


def move_head(ctx: Ctx, summary: dict, ref_type: str, sha: str, old_head: str) -> None:
    g, d, ref = ctx.git, ctx.dest, ctx.ref
    plan = MovePlan(g, d, sha)
    bdir = None
    if plan.paths:
        bdir = backup_user_files(ctx, plan.paths, old_head)
        summary["user_files_backup"] = bdir
    proc = g.run(checkout_args(ref_type, ref, sha, force=False), repo=d, check=False)
    if proc.returncode != 0:
        if bdir is None:
            raise Fail(EXIT_OTHER, f"git checkout {ref} failed: {last_line(proc.err)}")
        ctx.log(f"git checkout refused ({last_line(proc.err)}); your files are saved in {bdir}; "
                "forcing the checkout and putting back what does not collide")
        for rel in plan.way:  # saved and verified above; git may not replace a directory
            p = os.path.join(d, rel)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            elif os.path.lexists(p):
                os.unlink(p)
        g.run(checkout_args(ref_type, ref, sha, force=True), repo=d)
        restore_after_force(ctx, bdir, plan)
    head = g.out(["rev-parse", "HEAD"], repo=d)
    if head != sha:
        raise Fail(EXIT_OTHER, f"checkout ended at {head}, expected {sha}")
    branch = g.maybe(["symbolic-ref", "-q", "--short", "HEAD"], repo=d) or None
    summary.update(action="updated", branch=branch)
    if bdir:
        for rel in plan.paths:
            saved = os.path.join(bdir, rel)
            kept = same_content(os.path.join(d, rel), saved)
            summary["user_files"].append({"path": rel, "backup": saved, "in_worktree": kept})
            if not kept:
                ctx.warn(f"{rel}: {ref} has its own version; yours is at {saved}")
        ctx.log(f"user files saved in {bdir} (same relative paths); compare with diff -r {bdir} "
                f"{d} and copy back what you need; tracked changes are also in "
                f"{os.path.join(bdir, PATCH_NAME)} (git apply --3way)")
    ctx.log(f"{d} moved from {old_head} to {ref} ({sha})")


def update_existing(ctx: Ctx, st: dict, summary: dict) -> None:
    summary["previous_commit"] = st["head"]
    target = fetch_target(ctx, st, summary)
    if target is None:
        return
    ref_type, sha = target
    save_local_commits(ctx, summary, ref_type, st["head"])
    move_head(ctx, summary, ref_type, sha, st["head"])


def do_apply(ctx: Ctx) -> tuple[dict, int]:
    summary: dict = {"tool": TOOL, "mode": "apply", "ok": False, "exit_code": EXIT_OTHER,
                     "action": "error", "reason": "", "dest": ctx.dest, "url": ctx.url,
                     "ref": ctx.ref, "ref_type": None, "commit": None, "previous_commit": None,
                     "branch": None, "moved_aside": [], "backup_branches": [],
                     "user_files_backup": None, "user_files": [], "warnings": ctx.warnings,
                     "error": None, "log": ctx.log.path}
    lock_fd = None
    try:
        parent = os.path.dirname(ctx.dest)
        os.makedirs(parent, exist_ok=True)
        try:
            lock_fd = os.open(parent, os.O_RDONLY)
            # Checkouts of one parent run one after the other (each is bounded by --deadline).
            lock.acquire(lock_fd, None)
        except OSError as exc:
            ctx.log(f"could not lock {parent} ({exc}); continuing without a lock")
        cleanup_stale_partials(ctx)
        ctx.log(f"converging {ctx.dest} to {ctx.url} at {ctx.ref}")
        st = inspect(ctx)
        summary["reason"] = st["reason"]
        if st["kind"] == "repo":
            update_existing(ctx, st, summary)
        else:
            summary["previous_commit"] = st["head"]
            fresh_clone(ctx, st, summary)
        summary.update(ok=True, exit_code=EXIT_OK)
        ctx.log(f"done: {summary['action']} ({summary['reason']}); HEAD {summary['commit']}")
        return summary, EXIT_OK
    except Fail as exc:
        summary.update(error=exc.message, exit_code=exc.code)
        ctx.log(f"ERROR: {exc.message}")
        return summary, exc.code
    except OSError as exc:
        msg = f"filesystem error: {exc}"
        summary.update(error=msg, exit_code=EXIT_OTHER)
        ctx.log(f"ERROR: {msg}")
        return summary, EXIT_OTHER
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=TOOL, description="Converge DIR to a clone of URL at REF "
                                "without losing user files (see the script's docstring).")
    p.add_argument("--url", required=True)
    p.add_argument("--ref", required=True)
    p.add_argument("--dest", required=True)
    p.add_argument("--log", default=DEFAULT_LOG)
    p.add_argument("--check", action="store_true")
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--backoff", type=float, default=2.0)
    p.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE,
                   help="seconds all network steps together may take (0: no limit)")
    a = p.parse_args(argv)
    if not a.url or a.url.startswith("-"):
        p.error("--url must not be empty or start with '-'")
    try:
        a.ref = parse.git_ref(a.ref)
    except parse.Invalid:
        p.error(f"--ref {a.ref!r} is not a valid tag, branch or commit name")
    if not a.dest or a.dest.rstrip("/") in ("", "/"):
        p.error("--dest must name a directory below /")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = logs_.Log(None if args.check else args.log, f"{TOOL}[{os.getpid()}]")
    ctx = Ctx(args, log)
    if args.check:
        try:
            res, code = do_check(ctx)
        except Fail as exc:
            res = {"tool": TOOL, "mode": "check", "in_state": False, "state": "error",
                   "reason": exc.message, "dest": ctx.dest, "url": ctx.url, "ref": ctx.ref,
                   "warnings": ctx.warnings}
            code = EXIT_CHANGE
            print(f"{TOOL}: {exc.message}", file=sys.stderr)
        print(json.dumps(res, sort_keys=True))
        return code
    summary, code = do_apply(ctx)
    print(json.dumps(summary, sort_keys=True))
    if code != EXIT_OK:
        print(f"{TOOL}: error: {summary['error']}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
