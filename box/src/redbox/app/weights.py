"""
red-app-clip: the CLIP weights VisoMaster's text masks load (``clip.load('ViT-B/16')``),
fetched during provisioning into a persistent cache under the workspace and checked against a
known SHA-256, instead of at first use, unverified, into ``~/.cache/clip`` (lost with the
container, failing offline).

    red-app-clip --url URL --sha256 HEX --dir CACHE_DIR [--link ~/.cache/clip]
                 [--attempts N] [--backoff S] [--deadline S] [--connect-timeout S]
                 [--status FILE] [--check]

- CLIP's loader takes ``download_root`` only as an argument; the app passes none, so it looks in
  ``~/.cache/clip``: ``--link`` makes that a symlink to the cache. A real directory there is
  never deleted: a file in it with the right hash is moved into the cache (no second
  download), then the directory is moved aside (``<dir>.moved-aside-<stamp>``) and the link
  made.
- The download goes to ``<file>.part``, resumed with a Range request after a cut; it is
  renamed into place only when its SHA-256 is right (a wrong one is removed and fetched again).
  Attempts are bounded (``--attempts``, backoff doubling) and so is the whole fetch
  (``--deadline``); each read has a timeout.
- Progress (bytes, percent) goes to stdout and to the status JSON as step "clip".

Prints one JSON line (verified, path, sha256, error); exit 0 verified, 1 not.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from redbox.core import aside, log
from redbox.core.progress import STATUS_FILE, Reporter
from redbox.core.retry import Attempts
from redbox.settings.registry import CLIP_SHA256, CLIP_URL

TOOL = "red-app-clip"
BLOCK = 1 << 20


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def target_path(directory: str, url: str) -> str:
    return os.path.join(directory, os.path.basename(urlsplit(url).path) or "weights")


def verified(path: str, sha256: str) -> bool:
    try:
        return sha256_of(path) == sha256
    except OSError:
        return False


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


def fetch_once(url: str, part: str, timeout: float, reporter: Reporter, say) -> None:
    """One attempt: resume ``part`` from its size; raise OSError/ValueError on failure."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http(s): parse_args
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        if have and response.status != 206:
            have = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        say(f"downloading {url} ({f'resuming at {have} bytes, ' if have else ''}"
            f"{total if total is not None else 'unknown'} bytes)")
        done, shown = have, -1
        with open(part, "ab" if have else "wb") as out:
            for block in iter(lambda: response.read(BLOCK), b""):
                out.write(block)
                done += len(block)
                percent = 100 * done / total if total else None
                if percent is not None and int(percent // 10) > shown:
                    shown = int(percent // 10)
                    say(f"{os.path.basename(part[:-5])}: {done} of {total} bytes ({percent:.0f}%)")
                reporter.update("running", percent,
                                f"{os.path.basename(part[:-5])}: {done} of "
                                f"{total if total else '?'} bytes")
        if total is not None and done < total:
            raise ValueError(f"cut after {done} of {total} bytes")


def fetch(a: argparse.Namespace) -> dict:
    say = log.Log(None, f"{TOOL}:", echo=sys.stdout)
    reporter = Reporter(a.status, "clip")
    os.makedirs(a.dir, exist_ok=True)
    path = target_path(a.dir, a.url)
    name = os.path.basename(path)
    result = {"tool": TOOL, "path": path, "sha256": a.sha256, "verified": False, "error": None,
              "attempts": 0}
    if a.link:
        try:
            link_cache(a.link, a.dir, name, a.sha256, say)
        except OSError as error:
            say(f"cannot link {a.link} to {a.dir}: {error}")
    if verified(path, a.sha256):
        result["verified"] = True
        return result
    if os.path.exists(path):
        moved = aside.moved_aside(path, log.stamp())
        os.rename(path, moved)
        say(f"{path} has the wrong SHA-256: moved aside to {moved}")
    part = path + ".part"
    attempts = Attempts(a.attempts, a.backoff, a.deadline,
                        on_pause=lambda s: say(f"retrying in {s:g} s"))
    socket.setdefaulttimeout(a.connect_timeout)
    error = None
    for attempt in attempts:
        result["attempts"] = attempt
        left = attempts.remaining()
        try:
            fetch_once(a.url, part, min(a.connect_timeout, left or a.connect_timeout),
                       reporter, say)
        except (OSError, ValueError, urllib.error.URLError) as exc:
            error = f"attempt {attempt}: {exc}"
            say(error)
            continue
        if verified(part, a.sha256):
            os.replace(part, path)
            result["verified"] = True
            break
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
        error = f"attempt {attempt}: sha256 mismatch (the download was removed)"
        say(error)
    if not result["verified"]:
        result["error"] = attempts.why_stopped(error or "not downloaded")
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=TOOL, description=__doc__.split("\n")[1])
    p.add_argument("--url", default=CLIP_URL)
    p.add_argument("--sha256", default=CLIP_SHA256)
    p.add_argument("--dir", required=True)
    p.add_argument("--link")
    p.add_argument("--attempts", type=int, default=3)
    p.add_argument("--backoff", type=float, default=5)
    p.add_argument("--deadline", type=float, default=1800)
    p.add_argument("--connect-timeout", type=float, default=20)
    p.add_argument("--status", default=STATUS_FILE)
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    if urlsplit(args.url).scheme not in ("http", "https"):
        p.error("--url must be an http(s) URL")
    return args


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.check:
        path = target_path(a.dir, a.url)
        linked = not a.link or (os.path.islink(a.link)
                                and os.path.realpath(a.link) == os.path.realpath(a.dir))
        print(json.dumps({"tool": TOOL, "path": path, "linked": linked,
                          "verified": linked and verified(path, a.sha256)}))
        return 0
    started = time.monotonic()
    result = fetch(a)
    result["seconds"] = round(time.monotonic() - started, 1)
    reporter = Reporter(a.status, "clip")
    if result["verified"]:
        reporter.update("done", 100, f"{result['path']} verified", force=True)
    else:
        reporter.update("failed", None, f"{result['path']}: {result['error']}", force=True)
    print(json.dumps(result, sort_keys=True))
    return 0 if result["verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
