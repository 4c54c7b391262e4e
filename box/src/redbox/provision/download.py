"""Fetching PROVISIONING_SCRIPT: bounded curl attempts with backoff; refusing what is no script."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

from redbox.core.retry import Attempts
from redbox.provision.common import remove

# HTTP answers worth another attempt: the rest of 4xx will not change by retrying.
RETRIED_4XX = (408, 425, 429)


def _refusal(path: str, content_type: str) -> str | None:
    """Why a downloaded body is not a script, or None."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    body = head.lstrip()
    if not body:
        return "the body is empty"
    if b"\0" in head:
        return "the body is binary data, not a script"
    if body.startswith(b"#!"):
        return None
    media_type = content_type.split(";", maxsplit=1)[0].strip().lower()
    if body.startswith(b"<") or media_type == "text/html":
        return ("the body is an HTML page, not a script (a login, error or repository page "
                "instead of the raw file?)")
    return None


def _fetch(url: str, target: str, prov) -> tuple[bool, str, bool, str]:
    """One attempt: (ok, detail, worth retrying, content type)."""
    limit = prov.download_timeout + 15
    curl = shutil.which("curl")
    if not curl:
        return False, "curl is not installed", False, ""
    command = [curl, "-sS", "-L", "--max-redirs", "5", "--proto", "=http,https",
               "--proto-redir", "=http,https", "--connect-timeout", str(prov.connect_timeout),
               "--max-time", str(prov.download_timeout), "-o", target,
               "-w", "%{http_code} %{content_type}", url]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=limit,
                                check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, f"no answer within {limit} s", True, ""
    tool = os.path.basename(command[0])
    status_text, _, content_type = result.stdout.strip().partition(" ")
    status = int(status_text) if status_text.isdigit() else 0
    if status >= 400:
        return False, f"HTTP {status}", status >= 500 or status in RETRIED_4XX, content_type
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        detail = lines[-1].strip() if lines else ""
        return False, f"{tool} exit {result.returncode}: {detail}", True, content_type
    return True, f"HTTP {status}", False, content_type


def download(url: str, prov, dest: str, log) -> tuple[str | None, str]:
    """Fetch url to dest (mode 0700); returns (dest, "") or (None, why not)."""
    tries = Attempts(prov.download_retries + 1, prov.download_backoff,
                     on_pause=lambda pause: log(f"retrying in {pause:g} s"))
    attempts = tries.attempts
    staging = f"{dest}.part"
    detail = ""
    for attempt in tries:
        remove(staging)
        ok, detail, retry, content_type = _fetch(url, staging, prov)
        if ok:
            refusal = _refusal(staging, content_type)
            if refusal:
                remove(staging)
                log(f"attempt {attempt}/{attempts}: {refusal}: refused, not run")
                return None, refusal
            with open(staging, "rb") as handle:
                data = handle.read()
            log(f"downloaded {len(data)} bytes to {dest} "
                f"(sha256 {hashlib.sha256(data).hexdigest()[:16]}...)")
            if b"\r\n" in data:
                with open(staging, "wb") as handle:
                    handle.write(data.replace(b"\r\n", b"\n"))
                log("the script has CRLF (Windows) line endings: converted to LF before running")
            os.chmod(staging, 0o700)
            os.replace(staging, dest)
            return dest, ""
        remove(staging)
        log(f"attempt {attempt}/{attempts}: download failed: {detail}")
        if not retry:
            log(f"not retried: {detail} will not change by asking again")
            return None, detail
    return None, tries.why_stopped(detail)
