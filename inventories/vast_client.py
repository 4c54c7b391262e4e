"""
The Vast API client of the inventory: the key, the settings, and the listing of the
account's instances, page after page inside one deadline (or a saved listing instead).
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import re
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from . import vast_http
from .vast_common import TOKEN, VastInventoryError

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
    elif not TOKEN.fullmatch(text.decode("latin-1")):
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


def _proxy_auth(proxy: urllib.parse.SplitResult | None) -> dict[str, str]:
    if proxy is None or not proxy.username:
        return {}
    user = urllib.parse.unquote(proxy.username)
    password = urllib.parse.unquote(proxy.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Proxy-Authorization": f"Basic {token}"}


# -- the listing: every page, retry and pause inside one deadline


class _Retryable(Exception):
    """A connection error or a retryable status; ``wait`` is the server's Retry-After."""

    def __init__(self, cause: str, wait: float | None = None):
        super().__init__(cause)
        self.wait = wait


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
        self.deadline = vast_http.Deadline(timeout)

    def where(self) -> str:
        return urllib.parse.urlunsplit(self.url._replace(query=""))

    def timed_out(self, page: int, cause: str) -> VastInventoryError:
        return VastInventoryError(
            f"Vast API listing did not finish within {self.timeout:g} s at {self.where()} "
            f"(page {page}: {cause}); raise VAST_API_TIMEOUT to wait longer",
        )

    def get(self, query: dict[str, str], page: int) -> vast_http.Answer:
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
                if wait >= self.deadline.remaining():
                    raise self.timed_out(page, f"{e}, retry due in {wait:g} s") from None
                time.sleep(wait)
                backoff *= 2
        raise AssertionError("unreachable")

    def _follow(self, query: dict[str, str], page: int) -> vast_http.Answer:
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

    def _request(self, target: urllib.parse.SplitResult, page: int) -> vast_http.Answer:
        if self.deadline.remaining() <= 0:
            raise self.timed_out(page, "no time left")
        headers = {
            "Authorization": f"Bearer {self.key.value}",
            "Accept": "application/json",
            "User-Agent": "red-pyinfra-inventory",
        }
        try:
            answer = vast_http.get(target, headers, self.deadline, limit=_MAX_BODY,
                                   proxy=self.proxy, proxy_headers=_proxy_auth(self.proxy))
        except vast_http.Late as e:
            raise self.timed_out(page, str(e)) from None
        except ssl.SSLCertVerificationError as e:
            raise VastInventoryError(
                f"TLS certificate of {_show_origin(target)} not trusted: {e.verify_message}",
            ) from None
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise _Retryable(f"cannot reach {_show_origin(target)}: {_describe(e)}") from None
        if answer.status in _RETRY_STATUS:
            raise _Retryable(
                f"HTTP {answer.status} {answer.reason}{_server_msg(answer.body, self.key)}",
                _retry_after(answer.headers),
            )
        return answer


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


def _auth_error(answer: vast_http.Answer) -> bool:
    if answer.status in (401, 403):
        return True
    try:
        payload = json.loads(answer.body)
    except (ValueError, UnicodeDecodeError):
        return False
    return (answer.status == 404 and isinstance(payload, dict)
            and payload.get("error") == "auth_error")


def _page_error(listing: _Listing, answer: vast_http.Answer, page: int) -> VastInventoryError:
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

