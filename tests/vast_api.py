"""
A loopback stand-in for Vast's v1 instances API (``GET /api/v1/instances/``), for the unit
tests, the live tier and the bench: both inventories/vast.py and Vast's own CLI (``vastai``)
are pointed at it.

It serves recorded pages (``{"instances": [...], "next_token": ..., "total_instances": N}``,
25 a page at most) and follows ``after_token`` from one to the next; it checks the Bearer key,
``limit`` (1..25) and that ``select_filters``/``order_by`` are JSON, answers the retired
``/api/v0/instances/`` with 410, and plays recorded faults (tests/fixtures/vast/api/faults.json)
on chosen pages: an error status for some attempts, a redirect, a body dripped a byte at a time,
no answer at all.

    with VastAPI(pages_of(records)) as api:
        env = {"VAST_API_URL": api.url, "VAST_API_KEY": GOOD_KEY}
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "vast"
GOOD_KEY = "good-key-0123"
PAGE_SIZE = 25
# What the API answers to a key it does not know (reported shape: 401, and 404 auth_error).
REJECTED = {"status": 401, "body": {"success": False, "error": "invalid_user_key",
                                    "msg": "Invalid user key"}}
V0_GONE = {"success": False, "error": "deprecated_endpoint",
           "msg": "This endpoint was deprecated on 2026-06-09. Use /api/v1/instances/ instead."}


def pages_of(records: list[dict[str, Any]], size: int = PAGE_SIZE) -> list[dict[str, Any]]:
    """The API's pages for ``records`` (in the given order), ``size`` a page."""

    chunks = [records[i:i + size] for i in range(0, len(records), size)] or [[]]
    return [
        {
            "success": True,
            "instances": chunk,
            "next_token": f"tok-{index + 1:04d}" if index + 1 < len(chunks) else None,
            "total_instances": len(records),
            "label_counts": {},
        }
        for index, chunk in enumerate(chunks)
    ]


def recorded(name: str) -> Any:
    """A recorded fixture under tests/fixtures/vast/api."""

    return json.loads((FIXTURES / "api" / f"{name}.json").read_text())


def scenario(name: str) -> dict[str, Any]:
    """The recorded scenario ``name`` from faults.json, as keyword arguments for VastAPI."""

    played = recorded("faults")[name]
    return {key: played[key] for key in ("faults", "rejected") if key in played}


class _Handler(BaseHTTPRequestHandler):
    server: VastAPI
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: PLR0911 - one return per kind of answer
        api = self.server
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        with api.lock:
            api.seen.append({"path": url.path, "query": query,
                             "authorization": self.headers.get("Authorization")})
        if url.path.rstrip("/") == "/api/v0/instances":
            return self._json(410, V0_GONE)
        if url.path != "/api/v1/instances/":
            return self._json(404, {"success": False, "error": "not_found", "msg": url.path})
        if self.headers.get("Authorization") != f"Bearer {api.key}":
            return self._json(api.rejected["status"], api.rejected["body"])
        try:
            limit = int(query["limit"][0])
            json.loads(query.get("select_filters", ["{}"])[0])
            json.loads(query.get("order_by", ["[]"])[0])
        except (KeyError, ValueError):
            return self._json(400, {"success": False, "error": "invalid_args"})
        if not 1 <= limit <= PAGE_SIZE:
            return self._json(400, {"success": False, "error": "invalid_args",
                                    "msg": f"limit must be 1..{PAGE_SIZE}"})
        token = query.get("after_token", [None])[0]
        if token is not None and token not in api.tokens:
            return self._json(400, {"success": False, "error": "invalid_token"})
        page = api.tokens[token] if token else 1
        with api.lock:
            api.attempts[page] = attempt = api.attempts.get(page, 0) + 1
        for item in api.faults:
            if item["page"] == page and attempt <= item.get("times", 1):
                return self._fault(item)
        return self._json(200, api.pages[page - 1])

    def _fault(self, item: dict[str, Any]) -> None:
        if "redirect" in item:
            self.send_response(item.get("status", 302))
            self.send_header("Location", item["redirect"].format(other=self.server.other))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif "hang" in item:
            self.server.closing.wait(item["hang"])  # no byte of answer
        elif "drip" in item:
            body = json.dumps(self.server.pages[item["page"] - 1]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for offset in range(len(body)):
                if self.server.closing.wait(item["drip"]):
                    return
                try:
                    self.wfile.write(body[offset:offset + 1])
                    self.wfile.flush()
                except OSError:
                    return  # the client gave up, as it should
        else:
            body = item.get("body", "")
            self._send(item["status"], body if isinstance(body, str) else json.dumps(body),
                       item.get("headers", {}))

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload), {})

    def _send(self, status: int, body: str, headers: dict[str, str]) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        pass


class VastAPI(ThreadingHTTPServer):
    """
    The stand-in on 127.0.0.1 (a free port unless ``port``); a context manager that serves
    in a thread. ``seen`` lists every request; ``other`` is the origin faults redirect to.
    """

    daemon_threads = True

    def __init__(self, pages: list[dict[str, Any]], *, key: str = GOOD_KEY,
                 faults: Iterable[dict[str, Any]] = (), rejected: dict | None = None,
                 port: int = 0, other: str = "http://127.0.0.2:9"):
        super().__init__(("127.0.0.1", port), _Handler)
        self.lock = threading.Lock()
        self.serve_pages(pages)
        self.key = key
        self.faults = list(faults)
        self.rejected = rejected or REJECTED
        self.other = other
        self.seen: list[dict[str, Any]] = []
        self.attempts: dict[int, int] = {}
        self.closing = threading.Event()
        self._thread: threading.Thread | None = None

    def serve_pages(self, pages: list[dict[str, Any]]) -> None:
        """Answer ``pages`` from now on (the account's instances changed)."""

        with self.lock:
            self.pages = pages
            self.tokens = {page["next_token"]: index + 2 for index, page in enumerate(pages)
                           if page.get("next_token")}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> VastAPI:
        # A short poll keeps shutdown quick.
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.closing.set()
        self.shutdown()
        self.server_close()
        if self._thread:
            self._thread.join(5)

