"""
One HTTP GET inside a deadline that covers all of it: the connection, the proxy's CONNECT
tunnel, the TLS handshake, the request and the whole answer.

No thread and no per-read timeout that a slow peer could renew. Every wait on the socket is
one ``recv``, ``sendall`` or ``connect`` given only the time left, in plain Python as under
pyinfra's CLI, where gevent has patched the socket module. TLS runs over memory buffers
(``SSLContext.wrap_bio``) on top of those waits, because an ``SSLSocket`` under gevent waits
afresh for each piece of a handshake or record: a server sending its handshake a byte at a
time held the old client forever, and no watchdog could reach the socket the handshake used.
Name resolution is the system's, bounded by its own timeouts only.

The answer is parsed by ``http.client`` (status line, headers, Content-Length, chunks).
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
import time
import urllib.parse
from typing import NamedTuple

_CHUNK = 65536


class Deadline:
    """A point in time; ``left()`` raises TimeoutError once it has passed."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def left(self) -> float:
        left = self.remaining()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return left


class Late(TimeoutError):
    """The deadline passed; ``answering``: the status line had arrived."""

    def __init__(self, answering: bool):
        super().__init__("answer still incomplete" if answering else "no answer")
        self.answering = answering


class Answer(NamedTuple):
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes


class _Stream:
    """A connected socket, plain or TLS, whose every wait ends by the deadline."""

    def __init__(self, sock: socket.socket, deadline: Deadline):
        self.sock = sock
        self.deadline = deadline
        self.tls: ssl.SSLObject | None = None
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()

    @classmethod
    def connect(cls, host: str, port: int, deadline: Deadline) -> _Stream:
        # socket.create_connection would give each address the whole time again.
        error: OSError = OSError(f"no address for {host}")
        for family, kind, proto, _, address in socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(deadline.left())
                sock.connect(address)
            except OSError as e:
                sock.close()
                if isinstance(e, TimeoutError):
                    raise
                error = e
                continue
            return cls(sock, deadline)
        raise error

    def start_tls(self, context: ssl.SSLContext, hostname: str) -> None:
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=hostname)
        self._tls(self.tls.do_handshake)

    def _tls(self, operation, *args):
        while True:
            try:
                result = operation(*args)
            except ssl.SSLWantReadError:
                if self.incoming.eof:  # the server closed the connection
                    raise ssl.SSLEOFError("EOF occurred in violation of protocol") from None
                self._flush()
                data = self._recv(_CHUNK)
                if data:
                    self.incoming.write(data)
                else:
                    self.incoming.write_eof()
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        if self.outgoing.pending:
            self._send(self.outgoing.read())

    def _send(self, data: bytes) -> None:
        self.sock.settimeout(self.deadline.left())
        self.sock.sendall(data)

    def _recv(self, size: int) -> bytes:
        self.sock.settimeout(self.deadline.left())
        return self.sock.recv(size)

    def sendall(self, data: bytes) -> None:
        if self.tls is None:
            self._send(data)
            return
        view = memoryview(data)
        while view:
            view = view[self._tls(self.tls.write, view):]

    def recv_into(self, buffer: memoryview) -> int:
        if self.tls is None:
            self.sock.settimeout(self.deadline.left())
            return self.sock.recv_into(buffer)
        try:
            return self._tls(self.tls.read, len(buffer), buffer)
        except ssl.SSLEOFError:
            return 0  # closed without TLS's close_notify: an end, as SSLSocket takes it

    def makefile(self, mode: str) -> io.BufferedReader:
        # What http.client.HTTPResponse reads the answer from.
        return io.BufferedReader(_Reader(self))


class _Reader(io.RawIOBase):
    def __init__(self, stream: _Stream):
        super().__init__()
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self.stream.recv_into(memoryview(buffer).cast("B"))


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _send_head(stream: _Stream, request_line: str, headers: dict[str, str]) -> None:
    lines = [request_line, *(f"{name}: {value}" for name, value in headers.items()), "", ""]
    stream.sendall("\r\n".join(lines).encode("ascii"))


def _tunnel(stream: _Stream, host: str, port: int, headers: dict[str, str]) -> None:
    """Ask the proxy for a CONNECT tunnel to host:port (the key never goes to the proxy)."""

    authority = _host_port(host, port)
    _send_head(stream, f"CONNECT {authority} HTTP/1.1", {"Host": authority, **headers})
    reply = http.client.HTTPResponse(stream, method="CONNECT")
    reply.begin()
    if reply.status != 200:
        raise OSError(f"Tunnel connection failed: {reply.status} {reply.reason.strip()}")


def _read_body(response: http.client.HTTPResponse, limit: int) -> bytes:
    chunks, size = [], 0
    while chunk := response.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise ValueError(f"answer larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def get(url: urllib.parse.SplitResult, headers: dict[str, str], deadline: Deadline, *,
        limit: int, proxy: urllib.parse.SplitResult | None = None,
        proxy_headers: dict[str, str] | None = None,
        context: ssl.SSLContext | None = None) -> Answer:
    """
    GET ``url`` (http or https; https through ``proxy``'s CONNECT tunnel when given) with
    ``headers``, and read the whole answer, at most ``limit`` bytes of body.

    Raises ``Late`` when the deadline passes, ``OSError`` or ``http.client.HTTPException``
    when the server cannot be reached or answers garbage, ``ValueError`` for a body over the
    limit or a URL that cannot be sent.
    """

    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    target = urllib.parse.urlunsplit(("", "", url.path or "/", url.query, ""))
    # Keep the request line one line of ASCII whatever the URL held (as requests does).
    target = urllib.parse.quote(target, safe="!#$%&'()*+,/:;=?@[]~")
    answering = False
    try:
        tunnelled = url.scheme == "https" and proxy is not None
        if tunnelled:
            stream = _Stream.connect(proxy.hostname or "", proxy.port or 80, deadline)
        else:
            stream = _Stream.connect(host, port, deadline)
        try:
            if tunnelled:
                _tunnel(stream, host, port, proxy_headers or {})
            if url.scheme == "https":
                stream.start_tls(context or ssl.create_default_context(), host)
            _send_head(stream, f"GET {target} HTTP/1.1",
                       {"Host": url.netloc, **headers, "Connection": "close"})
            response = http.client.HTTPResponse(stream, method="GET")
            response.begin()
            answering = True
            body = _read_body(response, limit)
        finally:
            stream.sock.close()
    except TimeoutError:
        raise Late(answering) from None
    return Answer(response.status, response.reason, response.headers, body)
