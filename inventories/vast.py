"""
Dynamic inventory of the running Vast.ai instances on your account.

Every instance whose ``actual_status`` is ``running`` becomes a host named ``vast-<id>``
in the group ``vast``:

.. code:: shell

    pyinfra inventories/vast.py debug-inventory
    VAST_LABEL='visomaster-*' pyinfra inventories/vast.py deploy.py

Environment:

+ ``VAST_API_KEY``: API key; else the vast CLI's key files, in its order:
  ``$XDG_CONFIG_HOME/vastai/vast_tfa_key`` (a 2FA session key, when present),
  ``$XDG_CONFIG_HOME/vastai/vast_api_key`` (``~/.config/vastai/...``), ``~/.vast_api_key``
+ ``VAST_API_URL``: the server, default ``https://console.vast.ai`` (as the CLI's
  ``VAST_URL``); the inventory pages through ``<server>/api/v1/instances/``. Plain
  ``http://`` only for loopback hosts.
+ ``VAST_API_TIMEOUT``: seconds for the whole listing, every page and retry included
  (default 30)
+ ``https_proxy``/``no_proxy``: honoured for https:// servers (a CONNECT tunnel)
+ ``VAST_LABEL``: only instances whose label matches this glob (``fnmatch``, case-sensitive)
+ ``VAST_INSTANCES_JSON``: a saved listing instead of the API: the output of
  ``vastai show instances --raw`` (a JSON list) or an API answer (``{"instances": [...]}``)

SSH endpoint, chosen as the vast CLI's ``ssh-url`` does: direct (``public_ipaddr`` and the
host port mapped to the container's ``22/tcp``) when the instance has that mapping, otherwise
Vast's SSH proxy ``ssh_host:ssh_port``, plus one for jupyter runtypes (Vast's proxy gives
jupyter boxes two ports and the second one is SSH). Where the CLI would print an unusable
address (a blank ip, a port outside 1..65535) the inventory takes the proxy instead, or skips
the box with a warning.

Host data: ``ssh_hostname``, ``ssh_port``, ``ssh_user`` (``root``), ``vast_id``,
``vast_label``, ``gpu_name``, ``num_gpus``, ``vast_runtype``, ``vast_ssh_via``
(``direct`` or ``proxy``), and the two host key settings below.

Host key policy: pinned per instance id, whatever the route. Vast hands the same ``ip:port``
to the next renter, and one instance can move between routes (another proxy port, direct vs
proxy). Each host gets its own file ``~/.ssh/red_known_hosts/vast-<id>`` (pyinfra data
``ssh_known_hosts_file``; directory 0700, files 0600), rewritten at every load so that its
keys stand for the instance's current route. An empty file (a new id) is trusted on first use
(``ssh_strict_host_key_checking="accept-new"``); once it holds a key, checking is strict
(``"yes"``): another key, of any type, on any route, is refused. Your own
``~/.ssh/known_hosts`` is not consulted for these hosts. Files of destroyed instances are left
behind (Vast never reuses an id); delete one to trust that instance anew.

Errors print one line ``red inventory: <message>`` to stderr and exit with status 2; no
listing is ever partial. The README's inventory section lists them and what to do.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import os
import re
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, NamedTuple

_DEFAULT_SERVER = "https://console.vast.ai"
_INSTANCES_PATH = "/api/v1/instances/"
_DEFAULT_TIMEOUT = 30.0
# The API's own maximum page size.
_PAGE_LIMIT = 25
# As the vast CLI: three attempts on these answers and on connection errors.
_ATTEMPTS = 3
_RETRY_STATUS = frozenset({429, 502, 503, 504})
_FIRST_BACKOFF = 0.5
_MAX_REDIRECTS = 5
# 50,000 instances at 25 a page: a server that pages forever is a broken server.
_MAX_PAGES = 2000
_MAX_BODY = 32 * 1024 * 1024
_KNOWN_HOSTS_DIR = Path(".ssh", "red_known_hosts")
_KEY = re.compile(r"[\x21-\x7e]+")

_Host = tuple[str, dict[str, Any]]


class VastInventoryError(Exception):
    """
    The inventory cannot be built; the message is one line meant for the operator.
    """

    def __init__(self, message: str):
        # Collapse whitespace: messages quote server replies and OS errors, and the
        # contract is one line on stderr.
        super().__init__(" ".join(str(message).split()))


def _warn(message: str) -> None:
    print(f"red inventory: warning: {' '.join(message.split())}", file=sys.stderr)


# -- the API key


class _Key(NamedTuple):
    value: str
    source: str  # "VAST_API_KEY" or a file path: named in errors, the key never is


def _config_dir(env: Mapping[str, str], home: Path) -> Path:
    config_home = env.get("XDG_CONFIG_HOME", "").strip()
    return (Path(config_home) if config_home else home / ".config") / "vastai"


def _key_files(env: Mapping[str, str], home: Path) -> list[Path]:
    # The CLI's order (vastai/cli/main.py): its 2FA session key wins over the API key
    # file when present; the legacy ~/.vast_api_key is what it copies into the config dir.
    config = _config_dir(env, home)
    return [config / "vast_tfa_key", config / "vast_api_key", home / ".vast_api_key"]


def _checked_key(raw: bytes, source: str) -> _Key | None:
    text = raw.strip()
    if not text:
        return None
    lines = len(text.splitlines())
    if lines > 1:
        problem = f"{lines} lines"
    elif not _KEY.fullmatch(text.decode("latin-1")):
        problem = "spaces or characters that are not printable ASCII"
    else:
        return _Key(text.decode("ascii"), source)
    raise VastInventoryError(
        f"the Vast API key from {source} is not one line of printable ASCII ({problem}): "
        "paste it again from the console's Keys page (it is not shown here)",
    )


def _api_key(env: Mapping[str, str], home: Path) -> _Key:
    """
    Find the Vast API key the way the vast CLI does, and check it is one printable line.

    + env: environment mapping (``VAST_API_KEY``, ``XDG_CONFIG_HOME``)
    + home: the user's home directory
    """

    raw = env.get("VAST_API_KEY", "")
    key = _checked_key(raw.encode("utf-8", "surrogateescape"), "VAST_API_KEY")
    if key:
        return key
    files = _key_files(env, home)
    for path in files:
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise VastInventoryError(
                f"cannot read Vast API key file {path}: {e.strerror}"
            ) from None
        key = _checked_key(content, str(path))
        if key:
            return key
    looked = ", ".join(str(p) for p in files)
    raise VastInventoryError(
        f"no Vast API key: set VAST_API_KEY or run `vastai set api-key` (looked in {looked}); "
        "or set VAST_INSTANCES_JSON to a file saved with `vastai show instances --raw`",
    )


# -- settings


def _api_timeout(env: Mapping[str, str]) -> float:
    """
    Seconds for the whole listing, from ``VAST_API_TIMEOUT`` (default 30).
    """

    raw = env.get("VAST_API_TIMEOUT", "").strip()
    if not raw:
        return _DEFAULT_TIMEOUT
    try:
        timeout = float(raw)
    except ValueError:
        timeout = 0.0
    if not 0 < timeout < 86400:
        raise VastInventoryError(
            f"VAST_API_TIMEOUT must be a positive number of seconds, got {raw!r}",
        )
    return timeout


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _instances_url(env: Mapping[str, str]) -> urllib.parse.SplitResult:
    """
    The instances endpoint, from ``VAST_API_URL`` (the server, as the CLI's ``VAST_URL``).

    A URL that already names an API version (``.../api/v0``, the old setting) is used as
    given, so that the retired v0 endpoint answers with its 410 and the error says what to
    change.
    """

    raw = env.get("VAST_API_URL", "").strip() or _DEFAULT_SERVER
    try:
        url = urllib.parse.urlsplit(raw)
        url.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.hostname:
        raise VastInventoryError(f"VAST_API_URL must be an http(s) URL, got {raw!r}")
    if url.scheme == "http" and not _is_loopback(url.hostname):
        raise VastInventoryError(
            f"VAST_API_URL must use https:// (plain http:// only for loopback hosts), "
            f"got {raw!r}",
        )
    if url.username or url.password or url.query or url.fragment:
        raise VastInventoryError(
            "VAST_API_URL must be the server alone (no user, query or fragment), "
            f"got one for {url.hostname}",
        )
    base = url.path.rstrip("/")
    path = f"{base}/instances/" if re.search(r"/api/v\d+$", base) else base + _INSTANCES_PATH
    return url._replace(path=path)


# -- HTTP with a deadline for the whole listing


class _Retryable(Exception):
    """A connection error or a retryable status; ``wait`` is the server's Retry-After."""

    def __init__(self, cause: str, wait: float | None = None):
        super().__init__(cause)
        self.wait = wait


class _Answer(NamedTuple):
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes


class _Listing:
    """
    One listing: every request shares the deadline; the key goes only to the origin.
    """

    def __init__(self, url: urllib.parse.SplitResult, key: _Key, timeout: float,
                 proxy: urllib.parse.SplitResult | None = None):
        self.url = url
        self.proxy = proxy
        self.origin = _origin(url)
        self.key = key
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout

    def where(self) -> str:
        return urllib.parse.urlunsplit(self.url._replace(query=""))

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def timed_out(self, page: int, cause: str) -> VastInventoryError:
        return VastInventoryError(
            f"Vast API listing did not finish within {self.timeout:g} s at {self.where()} "
            f"(page {page}: {cause}); raise VAST_API_TIMEOUT to wait longer",
        )

    def get(self, query: dict[str, str], page: int) -> _Answer:
        """GET one page, with retries and same-origin redirects, inside the deadline."""

        backoff = _FIRST_BACKOFF
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return self._follow(query, page)
            except _Retryable as e:
                if attempt == _ATTEMPTS:
                    raise VastInventoryError(
                        f"Vast API failed on page {page} after {_ATTEMPTS} attempts at "
                        f"{self.where()}: {e}",
                    ) from None
                wait = backoff if e.wait is None else e.wait
                if wait >= self.remaining():
                    raise self.timed_out(page, f"{e}, retry due in {wait:g} s") from None
                time.sleep(wait)
                backoff *= 2
        raise AssertionError("unreachable")

    def _follow(self, query: dict[str, str], page: int) -> _Answer:
        target = self.url._replace(query=urllib.parse.urlencode(query))
        for _ in range(_MAX_REDIRECTS + 1):
            answer = self._request(target, page)
            if answer.status not in (301, 302, 303, 307, 308):
                return answer
            location = answer.headers.get("Location", "")
            current = urllib.parse.urlunsplit(target)
            target = urllib.parse.urlsplit(urllib.parse.urljoin(current, location))
            if _origin(target) != self.origin:  # a garbled port counts as another origin
                # requests (the CLI) drops the key on such a redirect; the listing would
                # then fail at the other end anyway, so refuse it here and say where.
                raise VastInventoryError(
                    f"Vast API at {self.where()} redirected to another origin "
                    f"({_show_origin(target)}); the API key is not sent there. Set "
                    "VAST_API_URL to the server that answers itself",
                )
        raise VastInventoryError(
            f"Vast API at {self.where()}: more than {_MAX_REDIRECTS} redirects",
        )

    def _request(self, target: urllib.parse.SplitResult, page: int) -> _Answer:
        remaining = self.remaining()
        if remaining <= 0:
            raise self.timed_out(page, "no time left")
        connection: http.client.HTTPConnection
        port = target.port
        if target.scheme == "https" and self.proxy:
            # Through the https_proxy: a CONNECT tunnel, TLS to Vast end to end.
            connection = http.client.HTTPSConnection(
                self.proxy.hostname, self.proxy.port or 80, timeout=remaining,
                context=ssl.create_default_context(),
            )
            connection.set_tunnel(target.hostname, port or 443, headers=_proxy_auth(self.proxy))
        elif target.scheme == "https":
            connection = http.client.HTTPSConnection(
                target.hostname, port, timeout=remaining, context=ssl.create_default_context(),
            )
        else:
            connection = http.client.HTTPConnection(target.hostname, port, timeout=remaining)
        path = urllib.parse.urlunsplit(("", "", target.path or "/", target.query, ""))
        headers = {
            "Authorization": f"Bearer {self.key.value}",
            "Accept": "application/json",
            "User-Agent": "red-pyinfra-inventory",
        }
        # A socket timeout bounds each read, not their sum: a server (or proxy) dripping a
        # byte at a time would never trip it. At the deadline the watchdog shuts whatever
        # socket the connection has then, in the TLS handshake or the body alike.
        watchdog = threading.Timer(remaining, lambda: _shut(connection.sock))
        watchdog.daemon = True
        answering = False
        try:
            watchdog.start()
            connection.connect()
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            answering = True
            body = _read_body(response)
            if self.remaining() <= 0:
                raise TimeoutError  # the watchdog cut the answer short
            answer = _Answer(response.status, response.reason, response.headers, body)
        except TimeoutError:
            raise self.timed_out(page, _cut_short(answering)) from None
        except ssl.SSLCertVerificationError as e:
            raise VastInventoryError(
                f"TLS certificate of {_show_origin(target)} not trusted: {e.verify_message}",
            ) from None
        except (OSError, http.client.HTTPException, ValueError) as e:
            if self.remaining() <= 0:  # the watchdog shut the socket
                raise self.timed_out(page, _cut_short(answering)) from None
            raise _Retryable(f"cannot reach {_show_origin(target)}: {_describe(e)}") from None
        finally:
            watchdog.cancel()
            connection.close()
        if answer.status in _RETRY_STATUS:
            raise _Retryable(
                f"HTTP {answer.status} {answer.reason}{_server_msg(answer.body, self.key)}",
                _retry_after(answer.headers),
            )
        return answer


def _cut_short(answering: bool) -> str:
    return "answer still incomplete" if answering else "no answer"


def _https_proxy(env: Mapping[str, str], host: str) -> urllib.parse.SplitResult | None:
    """
    The ``https_proxy`` to reach ``host`` through (as requests and urllib read it), unless
    ``no_proxy`` lists the host or a domain of it.
    """

    raw = (env.get("https_proxy") or env.get("HTTPS_PROXY") or "").strip()
    if not raw:
        return None
    for entry in (env.get("no_proxy") or env.get("NO_PROXY") or "").split(","):
        domain = entry.strip().lstrip(".").lower()
        if domain == "*" or (domain and (host == domain or host.endswith("." + domain))):
            return None
    proxy = urllib.parse.urlsplit(raw if "://" in raw else f"http://{raw}")
    try:
        proxy.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        proxy = None
    if proxy is None or proxy.scheme != "http" or not proxy.hostname:
        raise VastInventoryError("https_proxy must be http://host:port for the Vast API")
    return proxy


def _proxy_auth(proxy: urllib.parse.SplitResult) -> dict[str, str]:
    if not proxy.username:
        return {}
    user = urllib.parse.unquote(proxy.username)
    password = urllib.parse.unquote(proxy.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Proxy-Authorization": f"Basic {token}"}


def _origin(url: urllib.parse.SplitResult) -> tuple[str, str, int]:
    default = 443 if url.scheme == "https" else 80
    try:
        port = url.port or default
    except ValueError:
        port = -1
    return (url.scheme, (url.hostname or "").lower(), port)


def _show_origin(url: urllib.parse.SplitResult) -> str:
    scheme, host, port = _origin(url)
    return f"{scheme}://{host}:{port}"


def _shut(sock: socket.socket | None) -> None:
    """Shut a socket down from another thread: a read blocked on it returns at once."""

    if sock is None:
        return
    try:
        # The plain socket's shutdown, also under TLS: it wakes a read blocked in another
        # thread without touching the TLS object it is using.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


def _read_body(response: http.client.HTTPResponse) -> bytes:
    chunks, size = [], 0
    while chunk := response.read(65536):
        size += len(chunk)
        if size > _MAX_BODY:
            raise ValueError(f"answer larger than {_MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
    return text


def _retry_after(headers: http.client.HTTPMessage) -> float | None:
    try:
        wait = float(headers.get("Retry-After", ""))
    except ValueError:
        return None
    return wait if 0 <= wait <= 60 else None


def _server_msg(body: bytes, key: _Key | None = None) -> str:
    """`: <msg>` from a Vast error body, one short printable line; the key never shown."""

    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(payload, dict):
        return ""
    parts = [str(payload[k]) for k in ("error", "msg") if isinstance(payload.get(k), str)]
    text = " ".join(" - ".join(parts).split())
    text = "".join(c if c.isprintable() else "?" for c in text)[:300]
    if key is not None:
        text = text.replace(key.value, "<your key>")
    return f": {text}" if text else ""


def _auth_error(answer: _Answer) -> bool:
    if answer.status in (401, 403):
        return True
    try:
        payload = json.loads(answer.body)
    except (ValueError, UnicodeDecodeError):
        return False
    return (answer.status == 404 and isinstance(payload, dict)
            and payload.get("error") == "auth_error")


def _page_error(listing: _Listing, answer: _Answer, page: int) -> VastInventoryError:
    msg = _server_msg(answer.body, listing.key)
    if _auth_error(answer):
        return VastInventoryError(
            f"the API key was rejected (HTTP {answer.status}{msg}); key from "
            f"{listing.key.source}: check it, or run `vastai set api-key`",
        )
    if answer.status == 410:
        return VastInventoryError(
            f"{listing.where()} is retired (HTTP 410{msg}): set VAST_API_URL to the server "
            f"alone, e.g. {_DEFAULT_SERVER}, or unset it; the inventory uses {_INSTANCES_PATH}",
        )
    return VastInventoryError(
        f"Vast API answered HTTP {answer.status} {answer.reason} on page {page} at "
        f"{listing.where()}{msg}",
    )


def _page_instances(payload: Any, source: str) -> list[dict[str, Any]]:
    instances = payload.get("instances", ...) if isinstance(payload, dict) else payload
    if instances is None:
        return []
    if not isinstance(instances, list) or not all(isinstance(i, dict) for i in instances):
        raise VastInventoryError(
            f"unexpected response shape from {source}: expected a list of instances or "
            '{"instances": [{...}, ...]}',
        )
    return instances


def _fetch_all(url: urllib.parse.SplitResult, key: _Key, timeout: float,
               proxy: urllib.parse.SplitResult | None = None) -> list[dict[str, Any]]:
    """
    Page through the v1 listing until ``next_token`` ends; any failing page fails it all.
    """

    listing = _Listing(url, key, timeout, proxy)
    query = {
        "select_filters": "{}",
        "order_by": json.dumps([{"col": "id", "dir": "asc"}]),
        "limit": str(_PAGE_LIMIT),
    }
    instances: list[dict[str, Any]] = []
    seen_tokens: set[str] = set()
    for page in range(1, _MAX_PAGES + 1):
        answer = listing.get(query, page)
        if answer.status != 200:
            raise _page_error(listing, answer, page)
        source = f"{listing.where()} (page {page})"
        try:
            payload = json.loads(answer.body)
        except (ValueError, UnicodeDecodeError) as e:
            raise VastInventoryError(f"malformed JSON from {source}: {e}") from None
        if not isinstance(payload, dict) or payload.get("success") is False:
            raise VastInventoryError(
                f"unexpected response from {source}{_server_msg(answer.body, key)}",
            )
        instances += _page_instances(payload, source)
        token = payload.get("next_token")
        if not token:
            return instances
        if not isinstance(token, str) or token in seen_tokens:
            raise VastInventoryError(f"Vast API at {source} repeated or garbled next_token")
        seen_tokens.add(token)
        query["after_token"] = token
    raise VastInventoryError(f"Vast API at {listing.where()}: more than {_MAX_PAGES} pages")


def _strip(value: Any) -> Any:
    # As the vast CLI: every string stripped (public_ipaddr often ends in a newline).
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def load_instances(env: Mapping[str, str], home: Path | None = None) -> list[dict[str, Any]]:
    """
    Load the account's instances, from ``VAST_INSTANCES_JSON`` if set, else from the API.

    + env: environment mapping (see the module docstring for the variables)
    + home: the user's home directory, where the key files live (default: ``Path.home()``)
    """

    offline = env.get("VAST_INSTANCES_JSON", "").strip()
    if offline:
        path = Path(offline).expanduser()
        try:
            text = path.read_bytes()
        except OSError as e:
            raise VastInventoryError(
                f"cannot read VAST_INSTANCES_JSON file {path}: {e.strerror}"
            ) from None
        try:
            payload = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            raise VastInventoryError(f"malformed JSON from {path}: {e}") from None
        if isinstance(payload, dict) and payload.get("instances", ...) is None:
            raise VastInventoryError(
                f'no instances in {path}: it says "instances": null (an account without '
                "instances); save a fresh `vastai show instances --raw` once some run",
            )
        instances = _page_instances(payload, str(path))
    else:
        url = _instances_url(env)
        timeout = _api_timeout(env)
        proxy = _https_proxy(env, url.hostname or "") if url.scheme == "https" else None
        instances = _fetch_all(url, _api_key(env, home or Path.home()), timeout, proxy)
    return [_strip(i) for i in instances]


# -- records to hosts


def _instance_id(instance: Mapping[str, Any]) -> int:
    raw = instance.get("id")
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    if isinstance(raw, str) and raw.isascii() and raw.isdigit():
        return int(raw)
    raise VastInventoryError(f"skipping an instance without a usable id: {raw!r:.60}")


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _port(value: Any) -> int | None:
    """A TCP port from an int or a decimal string, or None outside 1..65535."""

    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.strip().isdigit():
        value = int(value)
    return value if isinstance(value, int) and 1 <= value <= 65535 else None


def _address(value: Any) -> str:
    # A host name or address: one token of printable ASCII, else unusable.
    text = _text(value)
    return text if _KEY.fullmatch(text) and not text.startswith("-") else ""


def _runtype_tokens(instance: Mapping[str, Any]) -> list[str]:
    # Vast writes e.g. "ssh_direc ssh_proxy" or "jupyter_direc ssh_direc ssh_proxy".
    return _text(instance.get("image_runtype")).split()


def ssh_endpoint(instance: Mapping[str, Any]) -> tuple[str, int, str]:
    """
    Return ``(hostname, port, via)`` for an instance, ``via`` being ``direct`` or ``proxy``.

    Mirrors the vast CLI's ``ssh-url``: the direct mapping of ``22/tcp`` wins; otherwise Vast's
    SSH proxy, whose port is ``ssh_port + 1`` for jupyter runtypes. An unusable direct
    mapping (blank ip, port outside 1..65535) falls back to the proxy.
    """

    ports = instance.get("ports")
    mapping = ports.get("22/tcp") if isinstance(ports, dict) else None
    public_ip = _address(instance.get("public_ipaddr"))
    if isinstance(mapping, list) and mapping and isinstance(mapping[0], dict) and public_ip:
        port = _port(mapping[0].get("HostPort"))
        if port is not None:
            return public_ip, port, "direct"

    proxy_host = _address(instance.get("ssh_host"))
    proxy_port = _port(instance.get("ssh_port"))
    if proxy_port is not None and any(t.startswith("jupyter") for t in _runtype_tokens(instance)):
        proxy_port = _port(proxy_port + 1)
    if not proxy_host or proxy_port is None:
        raise VastInventoryError(
            f"skipping instance {instance.get('id')!r:.30}: no usable SSH endpoint (no usable "
            "22/tcp mapping with a public_ipaddr, no ssh_host/ssh_port in 1..65535)",
        )
    return proxy_host, proxy_port, "proxy"


def known_hosts_dir(home: Path | None = None) -> Path:
    """
    Directory holding one known_hosts file per instance (see the host key policy).
    """

    return (home or Path.home()) / _KNOWN_HOSTS_DIR


def _unique(instances: list[Mapping[str, Any]], warn: Callable[[str], None]) -> list[Mapping]:
    """
    One record per id: the first as listed (the API orders by id, as ``vastai ssh-url``
    takes its first match), with a warning naming the id.
    """

    first: dict[Any, Mapping[str, Any]] = {}
    counts: dict[Any, int] = {}
    kept = []
    for instance in instances:
        raw = instance.get("id")
        ident = raw if isinstance(raw, (int, str)) else id(instance)
        counts[ident] = counts.get(ident, 0) + 1
        if ident not in first:
            first[ident] = instance
            kept.append(instance)
    for ident, count in counts.items():
        if count > 1:
            warn(f"instance id {ident!r:.30} is listed {count} times; using its first listing")
    return kept


def hosts_from_instances(
    instances: Iterable[Mapping[str, Any]],
    label_glob: str | None = None,
    known_hosts: Path | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[_Host]:
    """
    Turn API instances into pyinfra ``(name, data)`` hosts, sorted by instance id.

    + instances: instance dicts as returned by the API
    + label_glob: keep only instances whose label matches this ``fnmatch`` glob
    + known_hosts: per-instance known_hosts directory (default: ``known_hosts_dir()``)
    + warn: called with a one-line message for each running instance that is skipped
      (no id, no SSH endpoint) and each duplicated id; default prints to stderr
    """

    warn = warn or _warn
    instances = _unique([i for i in instances if isinstance(i, Mapping)], warn)
    known_hosts = known_hosts or known_hosts_dir()

    running = [i for i in instances if _text(i.get("actual_status")) == "running"]
    # An unlabelled instance has label null; treat it as "" so that "*" still matches it.
    matching = [
        i for i in running if label_glob is None or fnmatchcase(_text(i.get("label")), label_glob)
    ]

    hosts: dict[int, _Host] = {}
    for instance in matching:
        try:
            instance_id = _instance_id(instance)
            hostname, port, via = ssh_endpoint(instance)
        except VastInventoryError as e:
            warn(str(e))
            continue
        name = f"vast-{instance_id}"
        hosts[instance_id] = (
            name,
            {
                "ssh_hostname": hostname,
                "ssh_port": port,
                "ssh_user": "root",
                "ssh_known_hosts_file": str(known_hosts / name),
                "ssh_strict_host_key_checking": "accept-new",
                "vast_id": instance_id,
                "vast_label": instance.get("label"),
                "gpu_name": instance.get("gpu_name"),
                "num_gpus": instance.get("num_gpus"),
                "vast_runtype": instance.get("image_runtype"),
                "vast_ssh_via": via,
            },
        )

    if not hosts:
        label = f" with label matching {label_glob!r}" if label_glob is not None else ""
        raise VastInventoryError(
            f"no usable running Vast instances{label} "
            f"({len(instances)} instances, {len(running)} running, {len(matching)} matching)",
        )
    return [hosts[i] for i in sorted(hosts)]


# -- host keys per instance id


def route_name(hostname: str, port: int) -> str:
    """The name paramiko and OpenSSH look a host key up by, for this route."""

    return hostname if port == 22 else f"[{hostname}]:{port}"


def _pin_to_route(path: Path, name: str) -> bool:
    """
    Rewrite the instance's known_hosts file so that every key in it stands for ``name``;
    True when it holds a key. Comments and blank lines go; duplicate keys collapse.
    """

    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        lines = []
    entries: list[str] = []
    for line in lines:
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = [fields.pop(0)] if fields[0].startswith("@") else []
        if len(fields) < 3:
            continue  # not an entry; paramiko would skip it as well
        entry = " ".join([*marker, name, fields[1], fields[2]])
        if entry not in entries:
            entries.append(entry)
    text = "".join(f"{entry}\n" for entry in entries)
    if lines != entries:
        temporary = path.with_name(f".{path.name}.tmp")
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(text)
        os.replace(temporary, path)
    return bool(entries)


def prepare_known_hosts(hosts: Iterable[_Host]) -> None:
    """
    Create or rewrite the per-instance known_hosts files (0600, directory 0700) for the
    hosts' current routes, and make checking strict for every instance already pinned.

    The empty file matters: pyinfra logs a warning when its known_hosts file is missing,
    and creating it here keeps the permissions ours rather than the umask's.
    """

    hosts = list(hosts)
    try:
        for directory in sorted({Path(d["ssh_known_hosts_file"]).parent for _, d in hosts}):
            directory.parent.mkdir(mode=0o700, exist_ok=True)
            directory.mkdir(mode=0o700, exist_ok=True)
            # Also tighten a directory created by hand: its files decide whom we trust.
            directory.chmod(0o700)
        for _, data in hosts:
            path = Path(data["ssh_known_hosts_file"])
            path.touch(mode=0o600, exist_ok=True)
            path.chmod(0o600)
            if _pin_to_route(path, route_name(data["ssh_hostname"], data["ssh_port"])):
                data["ssh_strict_host_key_checking"] = "yes"
    except OSError as e:
        raise VastInventoryError(f"cannot prepare known_hosts files: {e}") from None


def _build(env: Mapping[str, str], home: Path | None = None) -> list[_Host]:
    home = home or Path.home()
    label_glob = env.get("VAST_LABEL", "").strip() or None
    hosts = hosts_from_instances(load_instances(env, home), label_glob, known_hosts_dir(home))
    prepare_known_hosts(hosts)
    return hosts


def _load_or_exit() -> list[_Host]:
    try:
        return _build(os.environ)
    except VastInventoryError as e:
        # pyinfra would wrap an exception from an inventory file in a traceback-like report;
        # the operator only needs the one line.
        print(f"red inventory: {e}", file=sys.stderr)
    except Exception as e:
        print(f"red inventory: unexpected {type(e).__name__}: {' '.join(str(e).split())}",
              file=sys.stderr)
    raise SystemExit(2)


vast = _load_or_exit()
