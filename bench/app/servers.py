"""
The bench's servers, one process in the servers' namespace (stdlib only):

    python -m bench.app.servers CONFIG.json

- ``git``: the app's repository over git's smart HTTP (``git http-backend`` as a CGI);
- ``pypi``, ``pytorch-cu124``, ``nvidia``: PEP 503 indexes with PEP 658 metadata
  (tests/flavor_indexes.py's pages over the padded wheels);
- ``github``: the release URLs the model list names, answered as GitHub does: 302 to its
  release-assets host, 302 again to a signed CDN URL (``cdn``), which serves the file;
- ``clip``: the CLIP weights (openaipublic's stand-in).

Every server adds a first-byte delay to each new connection (``latency_ms``) and paces each
connection's writes to ``stream_bytes_per_s`` (0: no cap; the namespace's tbf caps the total).
The assets and CLIP answer ``Range: bytes=N-`` with 206.

Control on stdin, answers on stdout (one JSON line each): the first line says it is ready;
``stats`` gives each server's bytes sent, requests, connections and per-file body bytes, and the
link's use since the last ``reset`` (bytes per 0.25 s sample); ``reset`` zeroes them; end of
input stops it.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from tests import flavor_indexes as fi

CHUNK = 16384
SAMPLE = 0.25
_METADATA = re.compile(r' data-(?:dist-info|core)-metadata="[^"]*"')


class Stats:
    """One server's counters (its lock guards them)."""

    def __init__(self, name: str):
        self.name = name
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.bytes = 0
        self.requests = 0
        self.connections = 0
        # path -> [responses with a body, body bytes, the file's size]
        self.files: dict[str, list[int]] = {}

    def sent(self, count: int) -> None:
        with self.lock:
            self.bytes += count

    def body(self, path: str, count: int, size: int) -> None:
        with self.lock:
            entry = self.files.setdefault(path, [0, 0, size])
            entry[0] += 1
            entry[1] += count

    def snapshot(self) -> dict:
        with self.lock:
            return {"bytes": self.bytes, "requests": self.requests,
                    "connections": self.connections,
                    "files": {path: list(entry) for path, entry in self.files.items()}}


class Paced:
    """A connection's writer: at most ``rate`` bytes/s (0: as fast as the link), counted."""

    def __init__(self, raw, rate: float, stats: Stats):
        self.raw, self.rate, self.stats = raw, rate, stats
        self.started = time.monotonic()
        self.done = 0

    def restart(self) -> None:
        """A new response: an idle keep-alive connection earns no credit."""
        self.started, self.done = time.monotonic(), 0

    def write(self, content) -> int:
        view = memoryview(content)
        total = len(view)
        while view:
            chunk = view[:CHUNK]
            if self.rate:
                ahead = (self.done + len(chunk)) / self.rate - (time.monotonic() - self.started)
                if ahead > 0:
                    time.sleep(ahead)
            self.raw.write(chunk)
            self.done += len(chunk)
            self.stats.sent(len(chunk))
            view = view[len(chunk):]
        return total

    def flush(self) -> None:
        self.raw.flush()

    @property
    def closed(self) -> bool:
        return self.raw.closed

    def close(self) -> None:
        self.raw.close()


class Handler(http.server.BaseHTTPRequestHandler):
    """Paced, delayed, counted; ``route`` answers."""

    protocol_version = "HTTP/1.1"
    stats: Stats
    rate: float = 0
    latency: float = 0

    def setup(self) -> None:
        super().setup()
        self.wfile = Paced(self.wfile, self.rate, self.stats)
        self.fresh = True
        with self.stats.lock:
            self.stats.connections += 1

    def log_message(self, *_args) -> None:
        pass

    def begin(self) -> str:
        """Once per connection the first-byte delay; the request's path."""
        if self.fresh:
            self.fresh = False
            time.sleep(self.latency)
        self.wfile.restart()
        with self.stats.lock:
            self.stats.requests += 1
        return urllib.parse.unquote(self.path.split("?", 1)[0])

    def do_GET(self) -> None:
        self.route(self.begin(), head=False)

    def do_HEAD(self) -> None:
        self.route(self.begin(), head=True)

    def route(self, path: str, head: bool) -> None:
        self.plain(404, b"not found")

    def plain(self, code: int, body: bytes, content_type: str = "text/plain",
              head: bool = False, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def send_file(self, path: str, target: Path, head: bool, ranges: bool) -> None:
        """target's bytes (from the Range start when ranges), its body counted under path."""
        try:
            size = target.stat().st_size
        except OSError:
            self.plain(404, b"not found", head=head)
            return
        start = 0
        wanted = self.headers.get("Range", "")
        if ranges and wanted.startswith("bytes=") and wanted[6:].split("-")[0].isdigit():
            start = int(wanted[6:].split("-")[0])
            if start >= size:
                self.plain(416, b"", headers={"Content-Range": f"bytes */{size}"}, head=head)
                return
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size - start))
        if ranges:
            self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        if head:
            return
        sent = 0
        try:
            with open(target, "rb") as handle:
                handle.seek(start)
                while block := handle.read(1 << 20):
                    self.wfile.write(block)
                    sent += len(block)
        except OSError:
            self.close_connection = True
        finally:
            self.stats.body(path, sent, size)


def index_handler(name: str, directory: Path) -> type[Handler]:
    """
    The index's PEP 503 pages with PEP 658 metadata (as PyPI has them), but to pip: the pip a
    venv gets on the lean image's Ubuntu 22.04 (22.0.2) does not read that metadata, and the
    one Python 3.10.13 brings (23.0.1) refuses metadata whose Name is spelled unlike the
    requirement (pypa/pip#12108: ``pillow==9.5.0`` against ``Name: Pillow``), so pip gets
    the pages without it and reads each wheel's own, as 22.0.2 does.
    """
    pages = fi._Index(name, directory)
    bare = fi._Index(name, directory)
    bare.projects = {project: [_METADATA.sub("", anchor) for anchor in anchors]
                     for project, anchors in pages.projects.items()}

    class Index(Handler):
        def route(self, path: str, head: bool) -> None:
            parts = [part for part in path.split("/") if part]
            if parts and parts[0] == "simple" and len(parts) <= 2:
                chosen = bare if self.headers.get("User-Agent", "").startswith("pip/") \
                    else pages
                body = chosen.page(fi.normalize(parts[1]) if len(parts) == 2 else None)
                if body is not None:
                    self.plain(200, body, "text/html", head)
                    return
            elif len(parts) == 2 and parts[0] == "files":
                self.send_file(path, directory / parts[1], head, ranges=False)
                return
            self.plain(404, b"not found", head=head)

    return Index


def github_handler(prefix: str, cdn: str) -> type[Handler]:
    """github.com's release URL -> release-assets -> the CDN's signed URL."""

    class GitHub(Handler):
        def route(self, path: str, head: bool) -> None:
            if path.startswith(f"/{prefix}/"):
                tag, _, name = path[len(prefix) + 2:].partition("/")
                location = f"/release-assets/{tag}/{name}?jwt=stand-in"
            elif path.startswith("/release-assets/"):
                tag, _, name = path[len("/release-assets/"):].partition("/")
                location = (f"{cdn}/github-production-release-asset/{tag}/{name}"
                            f"?X-Amz-Signature=stand-in&response-content-disposition=attachment")
            else:
                self.plain(404, b"not found", head=head)
                return
            self.plain(302, b"", head=head, headers={"Location": location})

    return GitHub


def files_handler(prefix: str, directory: Path) -> type[Handler]:
    """Files under prefix from directory, with ranges (the CDN, CLIP)."""

    class Files(Handler):
        def route(self, path: str, head: bool) -> None:
            rest = path[len(prefix):] if path.startswith(prefix) else ""
            target = (directory / rest).resolve()
            if not rest or directory.resolve() not in target.parents:
                self.plain(404, b"not found", head=head)
                return
            self.send_file(path, target, head, ranges=True)

    return Files


def git_handler(project_root: Path) -> type[Handler]:
    """git's smart HTTP: each request runs ``git http-backend`` as a CGI."""

    class Git(Handler):
        def do_POST(self) -> None:
            path = self.begin()
            self.backend(path, self.read_body())

        def route(self, path: str, head: bool) -> None:
            self.backend(path, b"")

        def read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if not size:
                        self.rfile.readline()
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def backend(self, path: str, body: bytes) -> None:
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                   "GIT_PROJECT_ROOT": str(project_root), "GIT_HTTP_EXPORT_ALL": "1",
                   "REQUEST_METHOD": self.command, "PATH_INFO": path,
                   "QUERY_STRING": self.path.partition("?")[2],
                   "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                   "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": self.client_address[0],
                   "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(project_root)}
            if self.headers.get("Git-Protocol"):
                env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
            if self.headers.get("Content-Encoding"):
                env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
            done = subprocess.run(["git", "http-backend"], input=body, env=env,
                                  capture_output=True, check=False)
            out = done.stdout
            cut = min((i for i in (out.find(b"\r\n\r\n"), out.find(b"\n\n")) if i >= 0),
                      default=-1)
            if done.returncode != 0 or cut < 0:
                self.plain(500, done.stderr[-500:])
                return
            head, rest = out[:cut], out[cut:].lstrip(b"\r\n")
            status, headers = 200, []
            for line in head.decode("latin-1").splitlines():
                key, _, value = line.partition(":")
                if key.lower() == "status":
                    status = int(value.split()[0])
                elif key:
                    headers.append((key, value.strip()))
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(rest)))
            self.end_headers()
            self.wfile.write(rest)
            self.stats.body(path, len(rest), len(rest))

    return Git


class Servers:
    """Every server of a config, started; ``stats`` and ``reset`` for the bench."""

    def __init__(self, config: dict):
        root = Path(config["root"])
        host, ports = config["host"], config["ports"]
        rate = float(config.get("stream_bytes_per_s") or 0)
        latency = float(config.get("latency_ms") or 0) / 1000
        cdn = f"http://{host}:{ports['cdn']}"
        handlers = {
            "git": git_handler(root / "git"),
            **{name: index_handler(name, root / "indexes" / name)
               for name in config["indexes"]},
            "github": github_handler(config["assets_path"], cdn),
            "cdn": files_handler("/github-production-release-asset/", root / "assets"),
            "clip": files_handler("/clip/models/", root / "clip"),
        }
        self.stats: dict[str, Stats] = {}
        self.servers: list[http.server.ThreadingHTTPServer] = []
        for name, base in handlers.items():
            stats = Stats(name)
            handler = type(f"{base.__name__}Bench", (base,),
                           {"stats": stats, "rate": rate, "latency": latency})
            server = http.server.ThreadingHTTPServer((host, ports[name]), handler)
            server.daemon_threads = True
            self.stats[name] = stats
            self.servers.append(server)
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                             daemon=True, name=f"serve-{name}").start()
        self.samples: list[int] = []
        self.sample_lock = threading.Lock()
        threading.Thread(target=self._sample, daemon=True, name="sampler").start()

    def total(self) -> int:
        return sum(stats.bytes for stats in self.stats.values())

    def _sample(self) -> None:
        last = self.total()
        while True:
            time.sleep(SAMPLE)
            now = self.total()
            with self.sample_lock:
                self.samples.append(max(0, now - last))
            last = now

    def reset(self) -> None:
        for stats in self.stats.values():
            with stats.lock:
                stats.reset()
        with self.sample_lock:
            self.samples = []

    def snapshot(self) -> dict:
        with self.sample_lock:
            samples = list(self.samples)
        return {"servers": {name: stats.snapshot() for name, stats in self.stats.items()},
                "sample_seconds": SAMPLE, "samples": samples}

    def stop(self) -> None:
        for server in self.servers:
            with contextlib.suppress(OSError):
                server.shutdown()
                server.server_close()


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    socket.setdefaulttimeout(120)
    servers = Servers(config)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "stats":
            print(json.dumps(servers.snapshot()), flush=True)
        elif command == "reset":
            servers.reset()
            print(json.dumps({"reset": True}), flush=True)
        elif command == "quit":
            break
    servers.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
