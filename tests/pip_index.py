"""
Loopback package indexes for pip, for the unit tests (on this machine) and the image tests (in
the box: this file is copied there and run as a script, stdlib only).

    python3 pip_index.py serve PORT WHEELS_DIR QUERY_LOG   # a PEP 503 index of WHEELS_DIR
    python3 pip_index.py blackhole PORT                    # accepts, never answers
    python3 pip_index.py wheel DIR NAME VERSION            # a tiny pure-Python wheel

The serving index appends one line per request (``PORT PATH``) to QUERY_LOG: which index pip
queried for what. A port nothing listens on is the refused index.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import re
import socket
import sys
import threading
import time
import zipfile


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def make_wheel(directory: str, name: str, version: str) -> str:
    """A pure-Python wheel of ``name`` with one module; returns its path."""
    module = normalize(name).replace("-", "_")
    dist = f"{module}-{version}"
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: red-tests\n"
                                   "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record) + "\n"
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{dist}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
    return path


def index_handler(wheels: str, query_log: str, port: int):
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        # uv asks a wheel's size with HEAD (for range requests), as real indexes answer.
        head = False

        def log_message(self, *_args):
            pass

        def _send(self, code: int, body: bytes, content_type: str = "text/html") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not self.head:
                self.wfile.write(body)

        def do_HEAD(self):
            self.head = True
            self.do_GET()

        def do_GET(self):
            with lock, open(query_log, "a", encoding="utf-8") as log:
                log.write(f"{port} {self.path}\n")
            parts = [part for part in self.path.split("?")[0].split("/") if part]
            if len(parts) == 3 and parts[0] == "files":
                try:
                    with open(os.path.join(wheels, os.path.basename(parts[2])), "rb") as fh:
                        self._send(200, fh.read(), "application/octet-stream")
                except OSError:
                    self._send(404, b"not found")
                return
            if len(parts) == 2 and parts[0] == "simple":
                project = normalize(parts[1])
                links = [f'<a href="/files/{project}/{wheel}">{wheel}</a>'
                         for wheel in sorted(os.listdir(wheels))
                         if normalize(wheel.split("-")[0]) == project]
                if links:
                    self._send(200, ("<html><body>" + "\n".join(links)
                                     + "</body></html>").encode())
                    return
            self._send(404, b"not found")

    return Handler


def serve(port: int, wheels: str, query_log: str) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port),
                                             index_handler(wheels, query_log, port))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def blackhole(port: int) -> socket.socket:
    """A listener whose backlog accepts connections that are never answered."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(512)
    held = []

    def hold() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # the test closed the listener
                return
            held.append(connection)  # kept open, never read, never answered

    threading.Thread(target=hold, daemon=True).start()
    return listener


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "wheel":
        print(make_wheel(sys.argv[2], sys.argv[3], sys.argv[4]))
        sys.exit(0)
    if what == "serve":
        serve(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif what == "blackhole":
        blackhole(int(sys.argv[2]))
    while True:
        time.sleep(3600)
