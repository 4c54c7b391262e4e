"""A loopback HTTP server that plays PROVISIONING_SCRIPT's URL, for the tests and the bench."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

NOT_FOUND = (404, "text/html", b"<h1>404</h1>")


@contextmanager
def serve(port: int, routes: dict[str, tuple[int, str, bytes]], never_seconds: float = 30,
          hits: dict[str, int] | None = None) -> Iterator[str]:
    """
    Serve ``routes`` (path: status, content type, body) on 127.0.0.1:port; any other path is
    a 404, and "/never" accepts the connection and never answers. Yields the base URL and
    counts requests per path in ``hits`` when given.
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if hits is not None:
                hits[self.path] = hits.get(self.path, 0) + 1
            if self.path == "/never":
                time.sleep(never_seconds)
                return
            code, content_type, body = routes.get(self.path, NOT_FOUND)
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
