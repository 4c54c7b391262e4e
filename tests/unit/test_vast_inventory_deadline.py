"""
The Vast inventory under the real pyinfra CLI (``.venv/bin/pyinfra inventories/vast.py
debug-inventory`` in a subprocess), where gevent has patched sockets, ssl and threads: the
listing's deadline (``VAST_API_TIMEOUT``) against servers that stall or drip, and HTTPS,
directly and through a CONNECT proxy, against loopback servers with a certificate of their own
(trusted through OpenSSL's ``SSL_CERT_FILE``).

Every server here listens on 127.0.0.1, runs in threads of the test and stops by itself
after ``LIFETIME`` seconds at the latest.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.vast_api import GOOD_KEY, VastAPI, pages_of, recorded

REPO = Path(__file__).resolve().parents[2]
PYINFRA = Path(sys.executable).with_name("pyinfra")
DEADLINE = 5
# Python, pyinfra and gevent starting, and the process ending, on a busy 2-core machine.
SLACK = 2
LIFETIME = 20.0
RECORDS = recorded("shapes")["instances"]
TIMED_OUT = (r"red inventory: Vast API listing did not finish within 5 s at "
             r"https?://127\.0\.0\.1:\d+/api/v1/instances/ \(page 1: {}\); raise "
             r"VAST_API_TIMEOUT to wait longer")

Pause = Callable[[float], bool]


# The inventory loaded by pyinfra's CLI (gevent patches the stdlib first), and by plain Python
# as pyinfra's API would: both print the hosts as JSON, each with its "name".
RUNNERS = {
    "pyinfra-cli": [str(PYINFRA), "inventories/vast.py", "debug-inventory", "--json"],
    "plain-python": [sys.executable, "-c", "import json, runpy; print(json.dumps([{'name': n} "
                     "for n, _ in runpy.run_path('inventories/vast.py')['vast']]))"],
}


def _run(env: dict[str, str], home: Path, runner: str = "pyinfra-cli",
         ) -> tuple[subprocess.CompletedProcess, float]:
    """Load the inventory in a subprocess under ``env``; the result and its seconds."""

    if not PYINFRA.exists():
        pytest.fail(f"{PYINFRA} is missing: `make deps` installs pyinfra")
    # A minimal environment: no developer VAST_* or proxy settings, no real ~/.ssh.
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
            "HOME": str(home), "VAST_API_KEY": GOOD_KEY}
    started = time.monotonic()
    result = subprocess.run(RUNNERS[runner], cwd=REPO, env={**base, **env},
                            capture_output=True, text=True, timeout=LIFETIME, check=False)
    return result, time.monotonic() - started


def _one_line(result: subprocess.CompletedProcess) -> str:
    """The run failed with exit status 2 and one ``red inventory:`` line; that line."""

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("red inventory:")]
    assert len(ours) == 1, result.stderr
    return ours[0]


@contextmanager
def _loopback_server(handle: Callable[[socket.socket, Pause], None]) -> Iterator[int]:
    """
    Serve every connection to a 127.0.0.1 port with ``handle(conn, pause)`` in a thread of
    its own. ``pause(s)`` sleeps and says whether to go on: False once the block ends or
    the server's LIFETIME is over, which also ends the accepting. Yields the port.
    """

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()
    ends = time.monotonic() + LIFETIME
    threads: list[threading.Thread] = []

    def pause(seconds: float) -> bool:
        return not stop.wait(min(seconds, max(0.0, ends - time.monotonic()))) \
            and time.monotonic() < ends

    def run(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(LIFETIME)
            try:
                handle(conn, pause)
            except OSError:
                pass  # the client walked away, as it should at its deadline

    def accept() -> None:
        while pause(0):
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threads.append(threading.Thread(target=run, args=(conn,), daemon=True))
            threads[-1].start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        acceptor.join(5)
        listener.close()
        for thread in threads:
            thread.join(5)


# -- the deadline under the CLI: servers that stall or drip


def _request(conn: socket.socket, seen: list[bytes]) -> None:
    seen.append(conn.recv(65536))


def _dripping_body(seen: list[bytes]):
    def handle(conn: socket.socket, pause: Pause) -> None:
        _request(conn, seen)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000\r\n\r\n")
        while pause(2):
            conn.sendall(b" ")

    return handle


def _silent(seen: list[bytes]):
    # Takes the connection and reads what comes (a request, a TLS ClientHello), never answers.
    def handle(conn: socket.socket, pause: Pause) -> None:
        _request(conn, seen)
        pause(LIFETIME)

    return handle


def _dripping_handshake(seen: list[bytes]):
    # A TLS handshake record header, then its 64 bytes one every 2 s: each byte is progress
    # to a socket timeout, and an SSLSocket under gevent waits afresh for each.
    def handle(conn: socket.socket, pause: Pause) -> None:
        _request(conn, seen)
        conn.sendall(b"\x16\x03\x03\x00\x40")
        while pause(2):
            conn.sendall(b"\x02")

    return handle


DEADLINE_CASES = {
    "dripping-body": ("http", _dripping_body, "answer still incomplete",
                      b"GET /api/v1/instances/?"),
    "silent-server": ("http", _silent, "no answer", b"GET /api/v1/instances/?"),
    # The server reads a ClientHello and never sends its ServerHello.
    "stalled-tls-handshake": ("https", _silent, "no answer", b"\x16\x03"),
    "dripping-tls-handshake": ("https", _dripping_handshake, "no answer", b"\x16\x03"),
}


@pytest.mark.parametrize(
    ("runner", "case"),
    [*(("pyinfra-cli", case) for case in DEADLINE_CASES),
     # Plain Python's own waits differ from gevent's where TLS is involved.
     ("plain-python", "stalled-tls-handshake"), ("plain-python", "dripping-tls-handshake")],
)
def test_the_deadline_holds(tmp_path, runner, case):
    scheme, server, cause, first_bytes = DEADLINE_CASES[case]
    seen: list[bytes] = []
    with _loopback_server(server(seen)) as port:
        env = {"VAST_API_URL": f"{scheme}://127.0.0.1:{port}",
               "VAST_API_TIMEOUT": str(DEADLINE)}
        result, elapsed = _run(env, tmp_path, runner)
    line = _one_line(result)
    assert re.fullmatch(TIMED_OUT.format(cause), line), line
    assert DEADLINE <= elapsed < DEADLINE + SLACK, elapsed
    # One connection, which the inventory really began: its request or TLS hello.
    assert len(seen) == 1 and seen[0].startswith(first_bytes), seen


# -- HTTPS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> dict[str, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""

    work = tmp_path_factory.mktemp("tls")
    paths = {"cert": work / "cert.pem", "key": work / "key.pem"}
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(paths["key"]), "-out", str(paths["cert"])],
                   check=True, capture_output=True)
    return paths


@contextmanager
def _https_api(certificate: dict[str, Path]) -> Iterator[VastAPI]:
    """The API stand-in, serving over TLS with ``certificate``; its URL is ``https://``."""

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate["cert"], certificate["key"])
    api = VastAPI(pages_of(RECORDS, 10))
    api.socket = context.wrap_socket(api.socket, server_side=True)
    with api:
        yield api


def _https_url(api: VastAPI) -> str:
    return f"https://127.0.0.1:{api.server_address[1]}"


def _listed(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stderr
    return sorted(host["name"] for host in json.loads(result.stdout))


@pytest.mark.parametrize("runner", RUNNERS)
def test_https_lists_with_the_certificate_trusted(tmp_path, certificate, runner):
    with _https_api(certificate) as api:
        env = {"VAST_API_URL": _https_url(api), "SSL_CERT_FILE": str(certificate["cert"])}
        result, _ = _run(env, tmp_path, runner)
    assert [s["query"].get("after_token") for s in api.seen] == [None, ["tok-0001"],
                                                                  ["tok-0002"]]
    assert {s["authorization"] for s in api.seen} == {f"Bearer {GOOD_KEY}"}
    # The same hosts as the same records saved to a file give.
    saved = tmp_path / "instances.json"
    saved.write_text(json.dumps(RECORDS))
    offline, _ = _run({"VAST_INSTANCES_JSON": str(saved)}, tmp_path, runner)
    assert _listed(result) == _listed(offline)
    assert len(_listed(result)) > 10


def test_an_untrusted_certificate_is_one_line_and_gets_no_key(tmp_path, certificate):
    with _https_api(certificate) as api:
        result, _ = _run({"VAST_API_URL": _https_url(api)}, tmp_path)
    line = _one_line(result)
    assert line == (f"red inventory: TLS certificate of {_https_url(api)} not trusted: "
                    "self-signed certificate")
    assert api.seen == []


@contextmanager
def _connect_proxy(seen: list[bytes]) -> Iterator[int]:
    """A CONNECT proxy: each tunnel's bytes, both ways, are appended to ``seen``."""

    def relay(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                seen.append(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    def handle(conn: socket.socket, pause: Pause) -> None:
        head = b""
        while b"\r\n\r\n" not in head and (chunk := conn.recv(4096)):
            head += chunk
        seen.append(head)
        host, port = head.split()[1].decode().rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=LIFETIME) as upstream:
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            back = threading.Thread(target=relay, args=(upstream, conn), daemon=True)
            back.start()
            relay(conn, upstream)
            back.join(LIFETIME)

    with _loopback_server(handle) as port:
        yield port


@pytest.mark.parametrize("runner", RUNNERS)
def test_https_through_a_connect_proxy_keeps_the_key_inside_tls(tmp_path, certificate, runner):
    seen: list[bytes] = []
    with _https_api(certificate) as api, _connect_proxy(seen) as proxy:
        env = {"VAST_API_URL": _https_url(api), "SSL_CERT_FILE": str(certificate["cert"]),
               "https_proxy": f"http://me:s%40cret@127.0.0.1:{proxy}"}
        result, _ = _run(env, tmp_path, runner)
    assert len(_listed(result)) > 0
    assert len(api.seen) == 3
    connects = [data for data in seen if data.startswith(b"CONNECT ")]
    assert len(connects) == 3
    assert connects[0].startswith(f"CONNECT 127.0.0.1:{api.server_address[1]} HTTP/1.".encode())
    assert b"Proxy-Authorization: Basic bWU6c0BjcmV0" in connects[0]  # me:s@cret
    assert GOOD_KEY.encode() not in b"".join(seen)
