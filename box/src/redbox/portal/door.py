"""
The front door's start (``red-portal serve``): write nginx's secrets include from the root-only
secret files, then become nginx. Stdlib only: it runs on the box's own Python.

The include defines what nginx.conf compares and hands on:
- ``$red_query_auth``, ``$red_header_auth``, ``$red_cookie_auth``: none, good or bad for
  ``?token=``, ``Authorization`` (Bearer, or Basic with user ``red`` or ``vastai``) and the
  cookie. Compared as case-sensitive regexes (nginx's plain map strings ignore case);
- ``$red_cookie_set``: the Set-Cookie value (an HMAC of the token, never the token itself);
- ``$red_vnc_password``: the VNC password, base64 (no escaping, nothing for nginx to expand);
- ``$red_jupyter_authorization``: ``token <Jupyter's token>`` for the proxied requests.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import re
import signal
import sys
import time

from redbox.core.pids import alive, cmdline, group

NGINX = "/usr/sbin/nginx"
BASIC_USERS = ("red", "vastai")
# The cookie lasts 30 days in the browser; a new token makes every old cookie a bad one.
COOKIE_MAX_AGE = 30 * 24 * 3600


def literal_regex(text: str) -> str:
    """An nginx map regex matching exactly ``text``, case-sensitive."""
    return "~^" + "".join(char if char.isalnum() else f"[{char}]" for char in text) + "$"


def nginx_string(text: str) -> str:
    """``text`` as an nginx double-quoted string whose value is exactly ``text``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "${red_dollar}")
    return f'"{escaped}"'


def cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"red front door cookie", hashlib.sha256).hexdigest()


def render(token: str, cookie_name: str, vnc_password: str, jupyter_token: str) -> str:
    """The secrets include for nginx.conf."""
    headers = [f"Bearer {token}"] + [
        "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode() for user in BASIC_USERS
    ]
    header_lines = "".join(f'    "{literal_regex(value)}" good;\n' for value in headers)
    vnc = base64.b64encode(vnc_password.encode()).decode()
    jupyter = nginx_string(f"token {jupyter_token}") if jupyter_token else '""'
    cookie = (f"{cookie_name}={cookie_value(token)}; Path=/; Max-Age={COOKIE_MAX_AGE}; "
              "HttpOnly; Secure; SameSite=Lax")
    return (
        "# Written by red-portal at each start from the root-only secret files. Root-only.\n"
        # A literal "$": nginx expands variables in map values and has no escape for it.
        'geo $red_dollar {\n    default "$";\n}\n'
        "map $arg_token $red_query_auth {\n"
        '    default bad;\n    "" none;\n'
        f'    "{literal_regex(token)}" good;\n}}\n'
        "map $http_authorization $red_header_auth {\n"
        '    default bad;\n    "" none;\n'
        f"{header_lines}}}\n"
        f"map $cookie_{cookie_name} $red_cookie_auth {{\n"
        '    default bad;\n    "" none;\n'
        f'    "{literal_regex(cookie_value(token))}" good;\n}}\n'
        f'map $host $red_cookie_set {{\n    default "{cookie}";\n}}\n'
        f'map $host $red_vnc_password {{\n    default "{vnc}";\n}}\n'
        f"map $host $red_jupyter_authorization {{\n    default {jupyter};\n}}\n"
    )


def read_secret(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def write_private(path: str, text: str) -> None:
    staging = f"{path}.new"
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(staging, 0o600)
    os.replace(staging, path)


def _stop_orphaned_workers(config: str, grace: float = 3.0) -> None:
    """
    A front door whose master died without its workers (kill -9) leaves them holding the port:
    the new nginx could not bind and supervisor would restart it forever. They are the old
    master's process group (supervisor starts each program in a group of its own; the master's
    pid is in nginx's pid file).
    """
    master = _pid_from_file(config)
    if not master or master == os.getpid() or "nginx: master" in cmdline(master):
        return
    stale = [pid for pid in group(master)
             if pid not in (os.getpid(), 1) and cmdline(pid).startswith("nginx:")]
    if not stale:
        return
    print(f"red-portal: the workers of a front door whose master died (pid {master}) still hold "
          f"its port: stopping them (pids {' '.join(map(str, stale))})",
          file=sys.stderr, flush=True)
    _signal(stale, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(alive(pid) for pid in stale) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal([pid for pid in stale if alive(pid)], signal.SIGKILL)


def _pid_from_file(config: str) -> int | None:
    """The master's pid from the pid file nginx.conf names (``pid PATH;``)."""
    try:
        with open(config, encoding="utf-8") as handle:
            found = re.search(r"^pid\s+([^;\s]+);", handle.read(), re.MULTILINE)
        if not found:
            return None
        with open(found.group(1), encoding="ascii") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def _signal(pids: list[int], number: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, number)
        except ProcessLookupError:
            pass


def serve(args) -> int:
    token = read_secret(args.token_file)
    if not token:
        print(f"red-portal: no token in {args.token_file}: refusing to start without one "
              "(run the deploy)", file=sys.stderr)
        return 1
    if not os.path.isfile(args.config):
        print(f"red-portal: {args.config} is missing (run the deploy)", file=sys.stderr)
        return 1
    vnc_password = read_secret(args.vnc_password_file)
    jupyter_token = read_secret(args.jupyter_token_file)
    for path, what in ((args.vnc_password_file, "the desktop asks for the VNC password"),
                       (args.jupyter_token_file, "Jupyter asks for its token")):
        if not read_secret(path):
            print(f"red-portal: {path} is empty or missing: {what}", file=sys.stderr)
    write_private(args.secrets_conf,
                  render(token, args.cookie_name, vnc_password, jupyter_token))
    _stop_orphaned_workers(args.config)
    print(f"red-portal: starting nginx with {args.config}", file=sys.stderr, flush=True)
    os.execv(NGINX, [NGINX, "-c", args.config, "-g", "daemon off;"])  # noqa: S606 - fixed argv
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="red-portal", description=__doc__.split("\n")[1])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("serve", help="write the secrets include, then run nginx")
    start.add_argument("--config", required=True, help="nginx.conf of the front door")
    start.add_argument("--secrets-conf", required=True, help="the include to write (0600)")
    start.add_argument("--token-file", required=True)
    start.add_argument("--vnc-password-file", required=True)
    start.add_argument("--jupyter-token-file", required=True)
    start.add_argument("--cookie-name", required=True)
    args = parser.parse_args(argv)
    return serve(args)
