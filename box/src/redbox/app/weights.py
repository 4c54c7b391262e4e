"""
red-app-clip: the CLIP weights VisoMaster's text masks load (``clip.load('ViT-B/16')``),
fetched during provisioning into a persistent cache under the workspace and checked against a
known SHA-256, instead of at first use, unverified, into ``~/.cache/clip`` (lost with the
container, failing offline).

    red-app-clip --url URL --sha256 HEX --dir CACHE_DIR [--link ~/.cache/clip]
                 [--attempts N] [--backoff S] [--deadline S] [--connect-timeout S]
                 [--failure-backoff S] [--state FILE] [--status FILE] [--check | --force]
    red-app-clip --retry-now [--state FILE]   # the last download again, now

- CLIP's loader takes ``download_root`` only as an argument; the app passes none, so it looks in
  ``~/.cache/clip``: ``--link`` makes that a symlink to the cache. A real directory there is
  never deleted: a file in it with the right hash is moved into the cache (no second
  download), then the directory is moved aside (``<dir>.moved-aside-<stamp>``) and the link
  made. A file in the cache with the wrong SHA-256 is moved aside too.
- The download is Red's model fetcher (``redbox.app.fetch``) on one file: written to
  ``<file>.red-partial``, resumed with a Range request after a cut (a server ignoring Range
  restarts it), hashed while it arrives and renamed into place only when its SHA-256 is right
  (a killed run never leaves a file that passes); GitHub-style redirects are followed. A wrong
  SHA-256 is fetched once more, then fails naming the file and the URL, as an HTTP 4xx does.
  Up to ``--attempts`` rounds (``--backoff`` seconds before the second, doubling), all of them
  within ``--deadline`` seconds; each connect and read waits at most ``--connect-timeout``.
- A failed download is recorded in the state file (``--state``) with its cause and a backoff
  (``--failure-backoff`` seconds, doubling per failure of the same URL, hash and cache, up to
  6 h): until then a run verifies what is there but does not download (exit 3), and
  ``--check`` says so without touching the network; ``--force`` or ``--retry-now`` downloads.
  One run per state file: a second one waits for it, then finds the file it verified.
- A verified file's size, mtime, ctime and inode are kept in the state file: a later check
  trusts the SHA-256 while they are unchanged (no 335 MB hashed at every converge).
- Progress (bytes, percent) goes to stdout and to the status JSON as step "clip".

``--check`` prints one JSON object (path, linked, verified, in_backoff, failures, cause,
next_try_after) and changes nothing but the record of a file it had to hash. Otherwise the
last line is one JSON object (verified, path, sha256, error, attempts, failures,
next_try_after, ...). Exit codes: 0 verified; 1 not verified (the download failed: recorded);
3 not downloaded, inside the backoff of a recorded failure; 2 usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from urllib.parse import urlsplit

from redbox.app import fetch
from redbox.app.models import sha256_of, stat_key
from redbox.core import aside, lock, log
from redbox.core import state as json_state
from redbox.core.progress import STATUS_FILE, Reporter
from redbox.core.retry import (
    Attempts,
    add_backoff_arguments,
    backoff_left,
    note_failures,
    rerun_arguments,
)
from redbox.settings.registry import CLIP_SHA256, CLIP_URL

TOOL = "red-app-clip"
DEFAULT_STATE = "/var/lib/red/clip-state.json"
EXIT_OK, EXIT_FAILED, EXIT_HELD_OFF = 0, 1, 3
# What this tool wrote before it used Red's fetcher: adopted as the partial once.
OLD_PARTIAL = ".part"


def target_path(directory: str, url: str) -> str:
    return os.path.join(directory, os.path.basename(urlsplit(url).path) or "weights")


def verified(path: str, sha256: str) -> bool:
    try:
        return sha256_of(path) == sha256
    except OSError:
        return False


def trusted(path: str, sha256: str, cached: dict | None) -> bool:
    """The cached record says the file's SHA-256 is sha256, and the file is unchanged since."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return isinstance(cached, dict) and cached.get("path") == path \
        and cached.get("sha256") == sha256 \
        and all(cached.get(k) == v for k, v in stat_key(st).items())


def file_verifies(path: str, sha256: str, cached: dict | None) -> bool:
    """The file's SHA-256 is sha256: from the cached record while the file is unchanged."""
    return trusted(path, sha256, cached) or verified(path, sha256)


def cache_record(path: str, sha256: str) -> dict | None:
    try:
        return {"path": path, "sha256": sha256, **stat_key(os.stat(path))}
    except OSError:
        return None


def link_cache(link: str, directory: str, name: str, sha256: str, say) -> None:
    """Make ``link`` a symlink to ``directory``, keeping whatever was there."""
    if os.path.islink(link):
        if os.path.realpath(link) == os.path.realpath(directory):
            return
        os.unlink(link)  # a symlink elsewhere holds no data of its own
    elif os.path.isdir(link):
        found = os.path.join(link, name)
        if not os.path.exists(os.path.join(directory, name)) and verified(found, sha256):
            shutil.move(found, os.path.join(directory, name))
            say(f"moved the verified {found} into {directory}")
        moved = aside.moved_aside(link, log.stamp())
        os.rename(link, moved)
        say(f"{link} was a directory: moved aside to {moved} (nothing deleted)")
    elif os.path.lexists(link):
        moved = aside.moved_aside(link, log.stamp())
        os.rename(link, moved)
        say(f"{link} was a file: moved aside to {moved}")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(directory, link)
    say(f"{link} -> {directory} (where CLIP looks)")


def is_linked(a: argparse.Namespace) -> bool:
    return not a.link or (os.path.islink(a.link)
                          and os.path.realpath(a.link) == os.path.realpath(a.dir))


def inputs_key(a: argparse.Namespace) -> str:
    """What makes a download another one: the URL, the hash and where it goes."""
    return hashlib.sha256(json.dumps([a.url, a.sha256, os.path.abspath(a.dir)]).encode()
                          ).hexdigest()


def previous_state(path: str) -> dict:
    found = json_state.read(path)
    return found if isinstance(found, dict) and "unreadable" not in found else {}


class Progress:
    """The file's bytes as they arrive: a line every 10% to stdout, the step in the status."""

    def __init__(self, name: str, reporter: Reporter, say):
        self.name, self.reporter, self.say = name, reporter, say
        self.shown, self.have = -1, 0

    def __call__(self, fetcher: fetch.Fetcher) -> None:
        for have, total in fetcher.snapshot()["active"].values():
            if have < self.have:
                self.shown = -1  # started over
            self.have = have
            percent = 100 * have / total if total else None
            if percent is not None and int(percent // 10) > self.shown:
                self.shown = int(percent // 10)
                self.say(f"{self.name}: {have} of {total} bytes ({percent:.0f}%)")
            self.reporter.update("running", percent,
                                 f"{self.name}: {have} of {total if total else '?'} bytes")


def adopt_old_partial(path: str, say) -> None:
    """A partial this tool left before it used Red's fetcher is resumed, not left behind."""
    old, new = path + OLD_PARTIAL, path + fetch.PARTIAL
    if os.path.isfile(old) and not os.path.lexists(new):
        with contextlib.suppress(OSError):
            os.rename(old, new)
            say(f"resuming the earlier partial download {old}")


def download(a: argparse.Namespace, path: str, reporter: Reporter, say) -> dict:
    """Rounds of Red's fetcher for the one file; what they did."""
    name = os.path.basename(path)
    item = fetch.Item(a.url, path, a.sha256, seen=fetch.file_key(path))
    rounds = Attempts(a.attempts, a.backoff, a.deadline,
                      on_pause=lambda s: say(f"retrying in {s:g} s"))
    progress = Progress(name, reporter, say)
    done = {"attempts": 0, "received": 0, "how": None, "ok": False, "error": None}
    for attempt in rounds:
        done["attempts"] = attempt
        say(f"downloading {a.url} (attempt {attempt}/{rounds.attempts})")
        result = fetch.fetch([item], streams=1, deadline=rounds.remaining(),
                             read_timeout=a.connect_timeout, progress=progress, say=say)
        [outcome] = result.outcomes
        done["received"] += outcome.received
        if outcome.ok:
            done.update(ok=True, how=outcome.how, error=None)
            break
        done["error"] = f"{name}: {outcome.error}"
        if outcome.final or result.stopped:
            break  # another round would not help (a wrong SHA-256 twice, a 4xx, a full disk)
        if result.deadline_reached:
            rounds.out_of_time = True
            break
    if not done["ok"]:
        done["error"] = rounds.why_stopped(done["error"] or "not downloaded")
    return done


def converge(a: argparse.Namespace, previous: dict, say, reporter: Reporter) -> dict:
    """Link, verify, and download unless held off: the run's record (the state file)."""
    os.makedirs(a.dir, exist_ok=True)
    path = target_path(a.dir, a.url)
    key = inputs_key(a)
    record = {"tool": TOOL, "path": path, "url": a.url, "sha256": a.sha256, "link": a.link,
              "key": key, "verified": False, "error": None, "attempts": 0, "received": 0,
              "downloaded": False, "time": log.timestamp()}
    if a.link:
        try:
            link_cache(a.link, a.dir, os.path.basename(path), a.sha256, say)
        except OSError as error:
            say(f"cannot link {a.link} to {a.dir}: {error}")
    if file_verifies(path, a.sha256, previous.get("cache")):
        record["verified"] = True
        return record
    if backoff_left(previous, key) and not a.force:
        record["error"] = (f"not downloaded: the download failed {previous.get('failures')} "
                           f"time(s) ({previous.get('cause')}); next try after "
                           f"{previous.get('next_try_after')}; `{TOOL} --retry-now` tries now")
        say(record["error"])
        return record
    if os.path.exists(path):
        moved = aside.moved_aside(path, log.stamp())
        os.rename(path, moved)
        say(f"{path} has the wrong SHA-256: moved aside to {moved}")
    adopt_old_partial(path, say)
    done = download(a, path, reporter, say)
    record.update(downloaded=True, verified=done["ok"], error=done["error"],
                  attempts=done["attempts"], received=done["received"], how=done["how"])
    return record


def record_outcome(record: dict, previous: dict, a: argparse.Namespace) -> None:
    """The failure count, cause and backoff: new after a failed download, else carried on."""
    note_failures(record, previous, tried=record["downloaded"], cause=record["error"],
                  base=a.failure_backoff)
    if record["verified"]:
        record["cache"] = cache_record(record["path"], a.sha256)
    record["argv"] = a.argv  # what --retry-now runs again


def remember(state_path: str, path: str, sha256: str) -> None:
    """A file a check hashed and found right: its stat kept for the next check (when no run
    holds the state file; that run records it itself)."""
    try:
        fd = os.open(state_path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return
    try:
        if lock.acquire(fd, 0) is not None:
            json_state.write(state_path, {**previous_state(state_path),
                                          "cache": cache_record(path, sha256)})
    except OSError:
        pass
    finally:
        os.close(fd)


def check(a: argparse.Namespace) -> dict:
    """What a converge should do, read from the disk and the state file (no network)."""
    path = target_path(a.dir, a.url)
    previous = previous_state(a.state)
    good = trusted(path, a.sha256, previous.get("cache"))
    if not good and verified(path, a.sha256):
        good = True
        remember(a.state, path, a.sha256)
    held = not good and bool(backoff_left(previous, inputs_key(a)))
    report = {"tool": TOOL, "path": path, "linked": is_linked(a),
              "verified": good and is_linked(a), "in_backoff": held}
    if held:
        report.update({name: previous.get(name) for name in
                       ("failures", "cause", "next_try_after")})
    return report


def run(a: argparse.Namespace) -> tuple[int, dict]:
    """One run per state file: the exit code and the record, written to the state file."""
    say = log.Log(None, f"{TOOL}:", echo=sys.stdout)
    reporter = Reporter(a.status, "clip")
    started = time.monotonic()
    try:
        os.makedirs(os.path.dirname(os.path.abspath(a.state)), exist_ok=True)
        fd = os.open(a.state + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        say(f"warning: cannot lock {a.state}.lock ({error}): going on unlocked")
        fd = None
    try:
        if fd is not None:
            lock.acquire(fd, None, on_wait=lambda: say("another run is fetching the CLIP "
                                                       "weights (same state file): waiting "
                                                       "for it"))
        previous = previous_state(a.state)
        record = converge(a, previous, say, reporter)
        record_outcome(record, previous, a)
        record["seconds"] = round(time.monotonic() - started, 1)
        try:
            json_state.write(a.state, record)
        except OSError as error:
            say(f"warning: cannot write the state file {a.state}: {error}")
    finally:
        if fd is not None:
            os.close(fd)
    if record["verified"]:
        reporter.update("done", 100, f"{record['path']} verified", force=True)
        return EXIT_OK, record
    if not record["downloaded"]:
        reporter.update("backoff", None, f"waiting until {record.get('next_try_after')} after: "
                        f"{record.get('cause')}", force=True)
        return EXIT_HELD_OFF, record
    reporter.update("failed", None, f"{record['path']}: {record['error']}", force=True)
    return EXIT_FAILED, record


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=TOOL, description=__doc__.split("\n")[1])
    p.add_argument("--url", default=CLIP_URL)
    p.add_argument("--sha256", default=CLIP_SHA256)
    p.add_argument("--dir", help="the cache (required but with --retry-now)")
    p.add_argument("--link")
    p.add_argument("--attempts", type=int, default=3, help="download rounds")
    p.add_argument("--backoff", type=float, default=5,
                   help="seconds before the second round (doubling)")
    p.add_argument("--deadline", type=float, default=1800,
                   help="seconds for all the rounds together")
    p.add_argument("--connect-timeout", type=float, default=20,
                   help="seconds a connection or a read may wait")
    add_backoff_arguments(p, "--failure-backoff", 600, "download")
    p.add_argument("--state", default=DEFAULT_STATE, help="the record of the last run (JSON)")
    p.add_argument("--status", default=STATUS_FILE)
    p.add_argument("--check", action="store_true",
                   help="say what a run would do; change nothing, no network")
    args = rerun_arguments(p, argv, "CLIP download", ("--check", "--force"))
    if not args.dir:
        p.error("--dir is required")
    if urlsplit(args.url).scheme not in ("http", "https"):
        p.error("--url must be an http(s) URL")
    if args.attempts < 1 or args.connect_timeout <= 0:
        p.error("--attempts must be >= 1 and --connect-timeout > 0")
    args.sha256 = args.sha256.strip().lower()
    return args


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.check:
        print(json.dumps(check(a), sort_keys=True))
        return EXIT_OK
    code, record = run(a)
    public = {k: v for k, v in record.items() if k not in ("cache", "argv")}
    print(json.dumps({**public, "state_file": a.state}, sort_keys=True))
    return code


if __name__ == "__main__":
    sys.exit(main())
