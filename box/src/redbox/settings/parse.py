"""
Value parsers for the settings registry. Each takes a raw value (a string from the
environment, or a typed value from ``--data`` / group data) and returns the typed value, or
raises ``Invalid`` with the phrase that completes "SOURCE=VALUE ...", e.g. "is not a port".
Every text check is a full match: a trailing newline is never accepted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# Printable ASCII without spaces: what a token, a ref or a path may be made of.
_PRINTABLE = re.compile(r"[\x21-\x7e]+")
_SIZE = re.compile(r"[0-9]+(?:KB|MB|GB)?")
_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True,
               "0": False, "false": False, "no": False, "off": False}
# A git ref red-app-checkout accepts: no "..", no "@{", no spaces, no leading "-".
GIT_REF = re.compile(r"[A-Za-z0-9._+@-][A-Za-z0-9._/+@-]*")
_REL_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(?:/[A-Za-z0-9_][A-Za-z0-9._-]*)*")
_SSH_KEY = re.compile(
    r"(?:(?:ssh-(?:ed25519|rsa|dss)|ecdsa-sha2-nistp(?:256|384|521)"
    r"|sk-(?:ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/]+={0,3})"
    r"(?: [\x21-\x7e][\x20-\x7e]*)?"
)

Parser = Callable[[Any], Any]


class Invalid(ValueError):
    """A value a setting cannot take; ``problem`` completes "SOURCE=VALUE <problem>"."""

    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem


def _text(raw: Any) -> str:
    return str(raw).strip()


def integer(low: int, high: int) -> Parser:
    def parse(raw: Any) -> int:
        if isinstance(raw, bool):
            raise Invalid(f"is not a whole number in {low}..{high}")
        text = _text(raw)
        if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
            raise Invalid(f"is not a whole number in {low}..{high}")
        return int(text)

    return parse


def number(low: float, high: float) -> Parser:
    def parse(raw: Any) -> float:
        try:
            value = float(_text(raw))
        except ValueError:
            value = None
        if isinstance(raw, bool) or value is None or not low <= value <= high:
            raise Invalid(f"is not a number in {low:g}..{high:g}")
        return value

    return parse


def port(raw: Any) -> int:
    text = _text(raw)
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise Invalid("is not a port (1-65535)")
    return int(text)


def boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    value = _BOOL_WORDS.get(_text(raw).lower())
    if value is None:
        raise Invalid("is not true or false")
    return value


def choice(*options: str) -> Parser:
    def parse(raw: Any) -> str:
        text = _text(raw)
        if text not in options:
            raise Invalid(f"is not one of {', '.join(options)}")
        return text

    return parse


def matching(pattern: re.Pattern, problem: str,
             refuse: Callable[[str], bool] | None = None) -> Parser:
    """Text that fully matches ``pattern`` (and that ``refuse`` does not reject)."""

    def parse(raw: Any) -> str:
        text = _text(raw)
        if not pattern.fullmatch(text) or (refuse is not None and refuse(text)):
            raise Invalid(problem)
        return text

    return parse


def _option_like(text: str) -> bool:
    return text.startswith("-")


# Printable ASCII, no spaces, not an option (a leading "-").
word = matching(_PRINTABLE, "is not a single word of printable characters", _option_like)
size = matching(_SIZE, "is not a size like 10MB")
relative_file = matching(_REL_PATH, "is not a relative file name in the checkout")
git_ref = matching(GIT_REF, "is not a tag, branch or commit name", lambda text: (
    _option_like(text) or ".." in text or "@{" in text
    or text.endswith((".lock", "/", "."))))
git_url = matching(_PRINTABLE, "is not a git URL", _option_like)
sha256 = matching(re.compile(r"[0-9a-f]{64}"), "is not a SHA-256 (64 lowercase hex digits)")
python_version = matching(re.compile(r"3\.[0-9]{1,2}"), "is not a Python version like 3.10")


def absolute_dir(raw: Any) -> str:
    text = _text(raw)
    path = os.path.normpath(text) if text else ""
    if not (path.startswith("/") and path != "/" and _REL_PATH.fullmatch(path[1:])):
        raise Invalid("is not an absolute directory below /")
    return path


def absolute_path_or_root(raw: Any) -> str:
    return "/" if os.path.normpath(_text(raw) or ".") == "/" else absolute_dir(raw)


def resolution(low: tuple[int, int], high: tuple[int, int]) -> Parser:
    def parse(raw: Any) -> str:
        match = re.fullmatch(r"([0-9]{3,5})x([0-9]{3,5})", _text(raw))
        ok = bool(match) and low[0] <= int(match[1]) <= high[0] \
            and low[1] <= int(match[2]) <= high[1]
        if not ok:
            raise Invalid(
                f"is not WIDTHxHEIGHT within {low[0]}x{low[1]}..{high[0]}x{high[1]}"
            )
        return f"{int(match[1])}x{int(match[2])}"

    return parse


def token(min_length: int) -> Parser:
    """A secret: printable ASCII without spaces, at least ``min_length`` long."""

    def parse(raw: Any) -> str:
        value = str(raw)
        if not _PRINTABLE.fullmatch(value):
            raise Invalid("has spaces, control or non-ASCII characters")
        if len(value) < min_length:
            raise Invalid(f"is shorter than {min_length} characters")
        return value

    return parse


def url_token(min_length: int, max_length: int) -> Parser:
    """A secret a URL carries as it is: A-Z a-z 0-9 . _ ~ -, within the given lengths."""
    pattern = re.compile(r"[A-Za-z0-9._~-]*")

    def parse(raw: Any) -> str:
        value = str(raw)
        if not pattern.fullmatch(value) or not min_length <= len(value) <= max_length:
            raise Invalid(f"is not {min_length} to {max_length} characters of "
                          "A-Z a-z 0-9 . _ ~ - (what a URL carries as is)")
        return value

    return parse


# A URL path of one or more segments ending in "/": "/jupyter/", never "/" (the status page's).
url_path = matching(re.compile(r"(?:/[A-Za-z0-9._~-]+)+/"), "is not a URL path like /jupyter/",
                    lambda text: any(part in (".", "..") for part in text.split("/")))


def http_url(raw: Any) -> str:
    """An http(s) URL, or "" for none."""
    text = _text(raw)
    if not text:
        return ""
    if any(ord(char) <= 32 or ord(char) == 127 for char in text):
        raise Invalid("has spaces or control characters")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as error:
        raise Invalid("is not a valid URL") from error
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise Invalid("is not an http(s) URL")
    return text


def url_list(raw: Any) -> list[str]:
    """URLs given as a list, or as one string separated by spaces or commas."""
    items = raw if isinstance(raw, (list, tuple)) else _text(raw).replace(",", " ").split()
    urls = [http_url(item) for item in items]
    return [url for url in urls if url]


def ssh_public_key(line: str) -> bool:
    return bool(_SSH_KEY.fullmatch(line))


def show(raw: Any) -> str:
    """A bad non-secret value, shown safely on one line and kept short."""
    text = repr(str(raw))
    return text if len(text) <= 42 else text[:39] + "...'"


def show_url(url: str) -> str:
    """A URL fit for a log line: a password in it and its query string are hidden."""
    try:
        parts = urlsplit(url)
        port_number = parts.port
    except ValueError:
        return show(url)
    hostname = parts.hostname or ""
    netloc = f"[{hostname}]" if ":" in hostname else hostname
    if port_number is not None:
        netloc += f":{port_number}"
    if parts.username:
        netloc = f"{parts.username}{':***' if parts.password else ''}@{netloc}"
    shown = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return shown + ("?<query hidden>" if parts.query else "")
