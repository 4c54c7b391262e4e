"""
Red's model fetcher (stdlib only): a list of (URL, destination, SHA-256) fetched with a bounded
number of parallel streams, each file resumed, hashed while it streams, and put in place only
once it verifies. red-app-models runs it; the app's own download_models.py stays usable by hand
(``red-app-models --downloader app``).

- Each file is written to ``<dest>.red-partial``, never to ``dest``: ``dest`` is replaced (an
  fsync, then a rename) only when the SHA-256 of what arrived is the expected one, so a killed
  process, a cut connection or a full disk never leaves a half-written file as a model.
- A partial left by an earlier try (or a killed run) is hashed first, then continued with a
  ``Range: bytes=N-`` request; a server answering 200 instead of 206 restarts that file only.
  GitHub's release URLs answer 302 to their CDN: redirects are followed (at most 10, urllib's
  bound) with the Range header kept, and every retry starts again from the original URL (the
  CDN's signed URL expires).
- A dropped connection is resumed at once while it brought new bytes; a try that brings none
  counts, and after ``STALLS`` of them the file fails for this run (the caller's next round
  tries it again). A wrong SHA-256 discards the partial and fetches the file once more; a
  second wrong one fails the file (``final``), naming the file and the URL, as does an HTTP
  4xx answer (but 408 and 429).
- Every request and every read gets min(read timeout, time left before the deadline): the
  deadline bounds the whole fetch, lock waits and pauses included.
- Disk space: before a file's bytes are written, the free space (``shutil.disk_usage``) must
  hold what it still needs plus what the other streams still need; a write failing with
  ENOSPC or EDQUOT stops too. Either stops every stream, with one line naming the file and
  the bytes still needed; the partials are kept (the next run resumes them once there is room).
- Two runs at once never fetch the same file: each file's partial is locked (``flock``,
  redbox.core.lock) while it is fetched. A run finding it locked WAITS (bounded by its
  deadline); when the lock is released, the file renamed into place by the other run is taken
  as it is (that run verified it) and not fetched again; a partial the other run removed
  (it failed) is fetched by the waiting run itself.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from redbox.core import lock

PARTIAL = ".red-partial"
BLOCK = 1 << 20
READ_TIMEOUT = 30.0
MIN_STREAMS, MAX_STREAMS, DEFAULT_STREAMS = 1, 16, 4
# Tries bringing no new bytes before a file fails for this run; the pause before the n-th.
STALLS = 2
STALL_PAUSE = 0.5
USER_AGENT = "red-app-models (redbox)"
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


@dataclass
class Item:
    """One file to fetch. ``seen``: the destination's (size, mtime_ns, ino) when it was found
    not verified (None: it was missing); a change means another run put it there."""

    url: str
    dest: str
    sha256: str
    name: str = ""
    seen: tuple | None = None

    def __post_init__(self) -> None:
        self.name = self.name or os.path.basename(self.dest)


@dataclass
class Outcome:
    item: Item
    ok: bool = False
    how: str = ""  # fetched | resumed | restarted | by another run | failed | stopped
    error: str | None = None
    final: bool = False  # another round would not help: a wrong SHA-256 twice, an HTTP 4xx
    sha256: str | None = None  # what arrived (a mismatch), or the verified digest
    size: int = 0
    received: int = 0  # bytes over the network, this file
    requests: int = 0


@dataclass
class Result:
    outcomes: list[Outcome] = field(default_factory=list)
    stopped: str | None = None  # the one disk-full line
    deadline_reached: bool = False
    received: int = 0
    seconds: float = 0.0

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


@dataclass
class _Stream:
    """One response being written to a partial."""

    item: Item
    fd: int
    outcome: Outcome
    response: object
    have: int
    digest: object
    total: int | None = None
    sock: socket.socket | None = None

    def __post_init__(self) -> None:
        self.sock = _socket_of(self.response)  # kept: http.client drops it at the end


class Transient(Exception):
    """A try that failed in a way another try may not (cut, timeout, refused, 5xx)."""


class Permanent(Exception):
    """A failure another try would repeat (HTTP 4xx, an unwritable destination)."""


class DiskFull(Exception):
    """The one line: the file, the bytes it still needs, the free space."""


class OutOfTime(Exception):
    pass


class Stopped(Exception):
    pass


def human(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


class _KeepRange(urllib.request.HTTPRedirectHandler):
    """Follow redirects (GitHub's release URL -> its CDN) keeping the Range header."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: PLR0917 (urllib's)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and req.has_header("Range") and not new.has_header("Range"):
            new.add_header("Range", req.get_header("Range"))
        return new


def _socket_of(response) -> socket.socket | None:
    """The response's socket (http.client keeps it under fp.raw._sock), to time each read."""
    with contextlib.suppress(AttributeError):
        return response.fp.raw._sock
    return None


def file_key(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _write(fd: int, data: bytes, offset: int) -> None:
    """Write all of data at offset (a short write is continued)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class Fetcher:
    """
    Fetch items with ``streams`` parallel workers within ``deadline`` seconds (None: no limit).
    ``progress(fetcher)`` is called as bytes arrive (throttle it yourself): ``snapshot()``
    gives files done and the bytes of each file in flight. ``say(line)`` gets one line per
    event (a file fetched, resumed, restarted, failed).
    """

    def __init__(self, items: list[Item], *, streams: int = DEFAULT_STREAMS,
                 deadline: float | None = None, read_timeout: float = READ_TIMEOUT,
                 progress: Callable[[Fetcher], None] | None = None,
                 say: Callable[[str], None] | None = None):
        seen: set[str] = set()
        self.items = []
        for item in items:  # one stream per destination
            if item.dest not in seen:
                seen.add(item.dest)
                self.items.append(item)
        self.streams = max(MIN_STREAMS, min(MAX_STREAMS, int(streams)))
        self.ends = None if deadline is None else time.monotonic() + deadline
        self.read_timeout = read_timeout
        self.progress = progress
        self.say = say or (lambda line: None)
        self.opener = urllib.request.build_opener(_KeepRange)
        self.stop = threading.Event()
        self.guard = threading.Lock()
        # dest -> [bytes in the partial, total or None, bytes received]: the files in flight
        self.active: dict[str, list] = {}
        self.sockets: set[socket.socket] = set()
        self.result = Result()
        self.done = 0

    # -- the pool

    def run(self) -> Result:
        started = time.monotonic()
        queue = list(reversed(self.items))
        workers = [threading.Thread(target=self._worker, args=(queue,), daemon=True,
                                    name=f"fetch-{n}")
                   for n in range(min(self.streams, len(self.items)))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        self.result.seconds = time.monotonic() - started
        order = {item.dest: n for n, item in enumerate(self.items)}
        self.result.outcomes.sort(key=lambda o: order[o.item.dest])
        return self.result

    def _worker(self, queue: list[Item]) -> None:
        while True:
            with self.guard:
                if not queue:
                    return
                item = queue.pop()
            if self.stop.is_set():
                outcome = Outcome(item, how="stopped", error=self.result.stopped or
                                  ("the deadline ran out" if self.result.deadline_reached
                                   else "stopped"))
            else:
                outcome = self.fetch_file(item)
            with self.guard:
                self.result.outcomes.append(outcome)
                self.result.received += outcome.received
                self.done += 1
            self._progress()

    def snapshot(self) -> dict:
        with self.guard:
            return {"files": len(self.items), "done": self.done,
                    "ok": sum(1 for o in self.result.outcomes if o.ok),
                    "received": self.result.received + sum(
                        a[2] for a in self.active.values()),
                    "active": {dest: (a[0], a[1]) for dest, a in self.active.items()}}

    def _progress(self) -> None:
        if self.progress is not None:
            self.progress(self)

    # -- time and stopping

    def left(self) -> float | None:
        return None if self.ends is None else self.ends - time.monotonic()

    def _timeout(self) -> float:
        left = self.left()
        if left is not None and left <= 0:
            self.result.deadline_reached = True
            self.halt()
            raise OutOfTime
        return self.read_timeout if left is None else max(0.05, min(self.read_timeout, left))

    def halt(self, line: str | None = None) -> None:
        """Stop every stream (a read in progress is cut)."""
        with self.guard:
            if line and not self.result.stopped:
                self.result.stopped = line
            self.stop.set()
            sockets = list(self.sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _check(self) -> None:
        if self.stop.is_set():
            raise Stopped
        self._timeout()

    # -- one file

    def fetch_file(self, item: Item) -> Outcome:
        outcome = Outcome(item)
        partial = item.dest + PARTIAL
        try:
            os.makedirs(os.path.dirname(item.dest) or ".", exist_ok=True)
            fd = self._claim(item, partial, outcome)
        except (OutOfTime, Stopped):
            return self._failed(outcome, self.result.stopped or "the deadline ran out",
                                how="stopped")
        except OSError as exc:
            return self._failed(outcome, f"cannot write {partial}: {exc}", final=True)
        if fd is None:
            return outcome
        try:
            return self._fetch_locked(item, partial, fd, outcome)
        finally:
            with self.guard:
                self.active.pop(item.dest, None)
            if not outcome.ok and os.fstat(fd).st_size == 0:
                self._discard(fd, partial)  # no empty partials left about
            os.close(fd)  # releases the lock, after the rename or the removal

    def _claim(self, item: Item, partial: str, outcome: Outcome) -> int | None:
        """The partial, open and locked; None when the outcome is settled (another run)."""
        while True:
            self._check()
            fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            left = self.left()
            waited = lock.acquire(
                fd, None if left is None else max(0.0, left),
                on_wait=lambda: self.say(f"{item.name}: another run is fetching it; waiting"))
            if waited is None:
                os.close(fd)
                self._failed(outcome, "another run held it until the deadline", how="stopped")
                self.result.deadline_reached = True
                return None
            mine = os.fstat(fd)
            try:
                now = os.stat(partial)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_ino, now.st_dev) == (mine.st_ino, mine.st_dev):
                if file_key(item.dest) != item.seen and self._verified_elsewhere(item, outcome):
                    # Put in place by another run before this one opened the partial.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(partial)
                    os.close(fd)
                    return None
                return fd
            os.close(fd)
            try:
                there = os.stat(item.dest)
            except FileNotFoundError:
                there = None
            if there is not None and (there.st_ino, there.st_dev) == (mine.st_ino, mine.st_dev):
                # The run that held the lock renamed this very file into place: verified.
                outcome.ok, outcome.how, outcome.sha256 = True, "by another run", item.sha256
                outcome.size = there.st_size
                self.say(f"{item.name}: fetched and verified by another run")
                return None
            # That run removed its partial (it failed): try to take it over.

    def _verified_elsewhere(self, item: Item, outcome: Outcome) -> bool:
        try:
            fd = os.open(item.dest, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            size = os.fstat(fd).st_size
            digest = self._hash_partial(fd, size).hexdigest()
        except OSError:
            return False
        finally:
            os.close(fd)
        if digest != item.sha256:
            return False
        outcome.ok, outcome.how, outcome.sha256, outcome.size = True, "by another run", digest, size
        self.say(f"{item.name}: fetched and verified by another run")
        return True

    def _failed(self, outcome: Outcome, error: str, *, final: bool = False,
                how: str = "failed") -> Outcome:
        outcome.ok, outcome.how, outcome.error, outcome.final = False, how, error, final
        if how == "failed":
            self.say(f"{outcome.item.name}: {error}")
        return outcome

    def _fetch_locked(self, item: Item, partial: str, fd: int, outcome: Outcome) -> Outcome:
        mismatches, stalls, high = 0, 0, 0
        first = os.fstat(fd).st_size
        while True:
            try:
                self._check()
                digest, size = self._transfer(item, fd, outcome)
            except (Stopped, OutOfTime):
                return self._failed(outcome, self.result.stopped or "the deadline ran out",
                                    how="stopped")
            except DiskFull as exc:
                self.halt(str(exc))
                return self._failed(outcome, str(exc), how="stopped")
            except Permanent as exc:
                self._discard(fd, partial)
                return self._failed(outcome, str(exc), final=True)
            except Transient as exc:
                size = os.fstat(fd).st_size
                if size > high:  # new bytes: resume at once
                    high = size
                    self.say(f"{item.name}: {exc}; resuming at {human(size)}")
                    continue
                stalls += 1
                if stalls >= STALLS:
                    said = str(exc)  # named once: a refused connection names it already
                    return self._failed(outcome, said if item.url in said
                                        else f"{said} ({item.url})")
                self._pause(STALL_PAUSE * 2 ** (stalls - 1))
                continue
            if digest == item.sha256:
                return self._put_in_place(item, partial, fd, outcome, first)
            mismatches += 1
            outcome.sha256, outcome.size = digest, size
            if mismatches >= 2:
                self._discard(fd, partial)
                return self._failed(
                    outcome, f"sha256 mismatch twice: got {digest}, expected {item.sha256}, "
                             f"from {item.url}", final=True)
            self.say(f"{item.name}: sha256 mismatch (got {digest}); fetching it once more")
            os.ftruncate(fd, 0)
            first, high, stalls = 0, 0, 0

    def _pause(self, seconds: float) -> None:
        left = self.left()
        self.stop.wait(seconds if left is None else max(0.0, min(seconds, left)))

    def _put_in_place(self, item: Item, partial: str, fd: int, outcome: Outcome,
                      first: int) -> Outcome:
        """The verified partial becomes the model: flushed to disk, then renamed over it."""
        size = os.fstat(fd).st_size
        try:
            os.fsync(fd)
            os.replace(partial, item.dest)
        except OSError as exc:
            return self._failed(outcome, f"cannot put {item.dest} in place: {exc}", final=True)
        outcome.ok, outcome.sha256, outcome.size = True, item.sha256, size
        outcome.how = outcome.how or ("resumed" if first else "fetched")
        self.say(f"{item.name}: fetched and verified ({human(size)}"
                 f"{f', resumed at {human(first)}' if first else ''})")
        return outcome

    @staticmethod
    def _discard(fd: int, partial: str) -> None:
        """Remove the partial (still locked: a waiting run then sees it gone)."""
        with contextlib.suppress(OSError):
            if os.stat(partial).st_ino == os.fstat(fd).st_ino:
                os.unlink(partial)

    @staticmethod
    def _hash_partial(fd: int, have: int):
        """The SHA-256 object of the file's first ``have`` bytes."""
        digest = hashlib.sha256()
        offset = 0
        while offset < have:
            block = os.pread(fd, min(BLOCK, have - offset), offset)
            if not block:
                break
            digest.update(block)
            offset += len(block)
        return digest

    def _transfer(self, item: Item, fd: int, outcome: Outcome) -> tuple[str, int]:
        """One request: continue the partial to the end; (its sha256, its size)."""
        have = os.fstat(fd).st_size
        digest = self._hash_partial(fd, have)
        if have and digest.hexdigest() == item.sha256:
            return item.sha256, have  # complete already (a run killed before its rename)
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        request = urllib.request.Request(item.url, headers=headers)  # noqa: S310 (http/https)
        outcome.requests += 1
        try:
            response = self.opener.open(request, timeout=self._timeout())
        except urllib.error.HTTPError as exc:
            with contextlib.suppress(Exception):
                exc.close()
            if exc.code == 416 and have:
                os.ftruncate(fd, 0)  # a partial the server does not know: start over
                raise Transient(f"HTTP 416 for a resume at {have} bytes: starting over") from exc
            text = f"HTTP {exc.code} {exc.reason} from {item.url}"
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise Permanent(text) from exc
            raise Transient(text) from exc
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise Transient(f"{reason} ({item.url})") from exc
        with response:
            stream = _Stream(item, fd, outcome, response, have, digest)
            self._start(stream)
            with self.guard:
                if stream.sock is not None:
                    self.sockets.add(stream.sock)
            try:
                return self._stream(stream)
            finally:
                with self.guard:
                    self.sockets.discard(stream.sock)

    def _start(self, s: _Stream) -> None:
        """Check the answer against the resume asked for; learn the total; check the room."""
        if s.have and s.response.status != 206:
            self.say(f"{s.item.name}: the server ignored the resume at {human(s.have)} "
                     f"(HTTP {s.response.status}): starting the file over")
            os.ftruncate(s.fd, 0)
            s.have, s.digest = 0, hashlib.sha256()
            s.outcome.how = "restarted"
        elif s.have:
            span = (s.response.headers.get("Content-Range") or "").partition(" ")[2]
            if not span.startswith(f"{s.have}-"):
                os.ftruncate(s.fd, 0)
                raise Transient(f"unexpected Content-Range {span!r} for a resume at {s.have}")
        length = s.response.headers.get("Content-Length")
        s.total = s.have + int(length) if length and length.isdigit() else None
        with self.guard:
            self.active[s.item.dest] = [s.have, s.total, s.outcome.received]
        if s.total is not None:
            self._room(s.item, s.total - s.have)

    def _stream(self, s: _Stream) -> tuple[str, int]:
        while True:
            self._check()
            if s.sock is not None:
                with contextlib.suppress(OSError):
                    s.sock.settimeout(self._timeout())
            try:
                block = s.response.read1(BLOCK)
            except (http.client.HTTPException, OSError, ValueError) as exc:
                if self.stop.is_set():
                    raise Stopped from exc
                raise Transient(f"cut at {human(s.have)}: {exc or type(exc).__name__}") from exc
            if not block:
                break
            self._append(s, block)
        if self.stop.is_set():
            raise Stopped
        if s.total is not None and s.have < s.total:
            raise Transient(f"connection closed at {human(s.have)} of {human(s.total)}")
        return s.digest.hexdigest(), s.have

    def _append(self, s: _Stream, block: bytes) -> None:
        try:
            _write(s.fd, block, s.have)
        except OSError as exc:
            if exc.errno in DISK_ERRNOS:
                os.ftruncate(s.fd, s.have)  # what is kept is whole blocks, hashed
                raise DiskFull(self._full_line(s.item, (s.total or 0) - s.have)) from exc
            raise Permanent(f"cannot write {s.item.dest}{PARTIAL}: {exc}") from exc
        s.digest.update(block)
        s.have += len(block)
        s.outcome.received += len(block)
        with self.guard:
            self.active[s.item.dest] = [s.have, s.total, s.outcome.received]
        self._progress()

    def _room(self, item: Item, need: int) -> None:
        """Raise DiskFull unless the disk holds this file's rest and the other streams'."""
        with self.guard:
            others = sum(max(0, a[1] - a[0]) for dest, a in self.active.items()
                         if dest != item.dest and a[1] is not None)
        try:
            free = shutil.disk_usage(os.path.dirname(item.dest) or ".").free
        except OSError:
            return
        if free < need + others:
            raise DiskFull(self._full_line(item, need, free, others))

    @staticmethod
    def _full_line(item: Item, need: int, free: int | None = None, others: int = 0) -> str:
        where = os.path.dirname(item.dest) or "."
        if free is None:
            with contextlib.suppress(OSError):
                free = shutil.disk_usage(where).free
        also = f", and the other downloads {human(others)} more" if others else ""
        room = f"; {human(free)} free there" if free is not None else ""
        size = f"{need} more bytes ({human(need)})" if need > 0 else "more bytes"
        return (f"disk full: {item.dest} needs {size}{also}{room} "
                f"(the partial download {item.dest}{PARTIAL} is kept to resume)")


def fetch(items: list[Item], **kwargs) -> Result:
    """Fetch items (see Fetcher for the keyword arguments); the Result."""
    return Fetcher(items, **kwargs).run()
