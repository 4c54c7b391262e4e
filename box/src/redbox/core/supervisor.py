"""
supervisord asked on its control socket over XML-RPC, from the running process: what
``supervisorctl status`` and ``supervisorctl pid`` print, without a Python start each time (a
tenth of a core for a status page every 2 s; the boot's wait for supervisord polls it).
Stdlib only.
"""

from __future__ import annotations

import http.client
import socket as socketlib
import xmlrpc.client


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self._path, self._timeout = path, timeout

    def make_connection(self, host):
        return _UnixHTTPConnection(self._path, self._timeout)


# What a call fails with when supervisord is not there or not answering.
ERRORS = (OSError, xmlrpc.client.Error, http.client.HTTPException)


def rpc(socket: str, timeout: float = 10):
    """supervisord's ``supervisor`` namespace on its unix socket."""
    return xmlrpc.client.ServerProxy("http://localhost/RPC2",
                                     transport=_UnixTransport(socket, timeout)).supervisor


def running(socket: str, timeout: float = 10) -> bool:
    """Whether supervisord answers on its socket (``supervisorctl pid``)."""
    try:
        return int(rpc(socket, timeout).getPID()) > 0
    except ERRORS:
        return False


def status_text(socket: str, timeout: float = 10) -> str:
    """What ``supervisorctl status`` prints, or one line saying supervisord does not answer."""
    try:
        infos = rpc(socket, timeout).getAllProcessInfo()
    except ERRORS as error:
        return f"supervisord does not answer on {socket}: {error}"
    lines = []
    for info in infos:
        name = info.get("name", "?")
        group = info.get("group", name)
        shown = name if group == name else f"{group}:{name}"
        lines.append(f"{shown} {info.get('statename', 'UNKNOWN')} {info.get('description', '')}")
    return "\n".join(lines) + "\n"
