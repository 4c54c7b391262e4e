"""
Dynamic inventory of the running Vast.ai instances on your account.

Every instance whose ``actual_status`` is ``running`` becomes a host named ``vast-<id>``
in the group ``vast``:

.. code:: shell

    pyinfra inventories/vast.py debug-inventory
    VAST_LABEL='visomaster-*' pyinfra inventories/vast.py deploy.py

Environment:

+ ``VAST_API_KEY``: API key; else the file ``$XDG_CONFIG_HOME/vastai/vast_api_key``
  (``~/.config/vastai/vast_api_key``), else ``~/.vast_api_key``, as the vast CLI reads them
+ ``VAST_API_URL``: API base, default ``https://console.vast.ai/api/v0``; the inventory
  requests ``<base>/instances/?owner=me``
+ ``VAST_API_TIMEOUT``: seconds to wait on the API (default 15)
+ ``VAST_LABEL``: only instances whose label matches this glob (``fnmatch``, case-sensitive)
+ ``VAST_INSTANCES_JSON``: path to a saved API response (same shape); skips the network,
  for air-gapped use and tests

SSH endpoint, chosen as the vast CLI's ``ssh-url`` does: direct (``public_ipaddr`` and the
host port mapped to the container's ``22/tcp``) when the instance has that mapping, otherwise
Vast's SSH proxy ``ssh_host:ssh_port``, plus one for jupyter runtypes (Vast's proxy gives
jupyter boxes two ports and the second one is SSH).

Host data: ``ssh_hostname``, ``ssh_port``, ``ssh_user`` (``root``), ``vast_id``,
``vast_label``, ``gpu_name``, ``num_gpus``, ``vast_runtype``, ``vast_ssh_via``
(``direct`` or ``proxy``), and the two host key settings below.

Host key policy:

Vast hands out the same ``ip:port`` again after an instance is destroyed, and the next
instance there has a new SSH host key. A single ``~/.ssh/known_hosts`` would then either
refuse every re-rented box or need blanket ``StrictHostKeyChecking=no``. So host keys are
pinned per instance id instead: each host gets its own file
``~/.ssh/red_known_hosts/vast-<id>`` (pyinfra data ``ssh_known_hosts_file``; directory mode
0700, files 0600) with ``ssh_strict_host_key_checking="accept-new"``. A new instance (new id)
on a reused ``ip:port`` starts with an empty file and is trusted on first use; a changed key
for the same instance id is refused by paramiko (``BadHostKeyException``). Your own
``~/.ssh/known_hosts`` and any ``UserKnownHostsFile`` in ``~/.ssh/config`` are not consulted
for these hosts. Files of destroyed instances are left behind (Vast never reuses an id); delete
the directory to forget them all.

Errors (no key, HTTP 401, network failure or timeout, malformed response, no matching
instance) print one line ``red inventory: <message>`` to stderr and exit with status 2.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

_DEFAULT_API_URL = "https://console.vast.ai/api/v0"
_DEFAULT_TIMEOUT = 15.0
_KNOWN_HOSTS_DIR = Path(".ssh", "red_known_hosts")

_Host = tuple[str, dict[str, Any]]


class VastInventoryError(Exception):
    """
    The inventory cannot be built; the message is one line meant for the operator.
    """

    def __init__(self, message: str):
        # Collapse whitespace: messages quote server replies and OS errors, and the
        # contract is one line on stderr.
        super().__init__(" ".join(str(message).split()))


def _api_key(env: Mapping[str, str], home: Path) -> str:
    """
    Find the Vast API key the way the vast CLI does.

    + env: environment mapping (``VAST_API_KEY``, ``XDG_CONFIG_HOME``)
    + home: the user's home directory
    """

    key = env.get("VAST_API_KEY", "").strip()
    if key:
        return key

    for path in _key_files(env, home):
        try:
            key = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise VastInventoryError(
                f"cannot read Vast API key file {path}: {e.strerror}"
            ) from None
        if key:
            return key

    looked = ", ".join(str(p) for p in _key_files(env, home))
    raise VastInventoryError(
        f"no Vast API key: set VAST_API_KEY or run `vastai set api-key` (looked in {looked}); "
        "or set VAST_INSTANCES_JSON to a saved instances response",
    )


def _key_files(env: Mapping[str, str], home: Path) -> list[Path]:
    config_home = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
    return [config_home / "vastai" / "vast_api_key", home / ".vast_api_key"]


def _api_timeout(env: Mapping[str, str]) -> float:
    """
    Seconds to wait on the Vast API, from ``VAST_API_TIMEOUT`` (default 15).
    """

    raw = env.get("VAST_API_TIMEOUT", "").strip()
    if not raw:
        return _DEFAULT_TIMEOUT
    try:
        timeout = float(raw)
    except ValueError:
        timeout = 0.0
    if not timeout > 0:
        raise VastInventoryError(
            f"VAST_API_TIMEOUT must be a positive number of seconds, got {raw!r}",
        )
    return timeout


def _instances_url(env: Mapping[str, str]) -> str:
    """
    The instances endpoint, from ``VAST_API_URL`` (the API base) or Vast's console.
    """

    base = (env.get("VAST_API_URL", "").strip() or _DEFAULT_API_URL).rstrip("/")
    # urllib would also open file: and ftp: URLs, which would not carry the key or the timeout
    # as intended; a typo here should fail loudly.
    if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
        raise VastInventoryError(f"VAST_API_URL must be an http(s) URL, got {base!r}")
    return f"{base}/instances/?owner=me"


def _fetch(url: str, key: str, timeout: float) -> bytes:
    """
    GET the instances endpoint with the API key as a Bearer token and return the body.

    + url: full endpoint URL
    + key: Vast API key (never echoed in errors)
    + timeout: seconds for connecting and for each read
    """

    # S310: _instances_url only lets http(s) through.
    request = urllib.request.Request(  # noqa: S310
        url,
        headers={
            "Authorization": f"Bearer {key}",
            "Accept": "application/json",
            "User-Agent": "red-pyinfra-inventory",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.read()
    except urllib.error.HTTPError as e:
        if e.code == 401:
            raise VastInventoryError(
                f"Vast API rejected the API key (HTTP 401) at {url}: check VAST_API_KEY "
                "or ~/.config/vastai/vast_api_key",
            ) from None
        raise VastInventoryError(f"Vast API answered HTTP {e.code} {e.reason} at {url}") from None
    except TimeoutError:
        raise VastInventoryError(_timeout_message(url, timeout)) from None
    except urllib.error.URLError as e:
        # Connect-phase timeouts arrive wrapped in URLError, read-phase ones bare (above).
        if isinstance(e.reason, TimeoutError):
            raise VastInventoryError(_timeout_message(url, timeout)) from None
        raise VastInventoryError(f"cannot reach Vast API at {url}: {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        raise VastInventoryError(f"network error talking to Vast API at {url}: {e!r}") from None


def _timeout_message(url: str, timeout: float) -> str:
    return (
        f"Vast API did not answer within {timeout:g} s at {url} "
        "(raise VAST_API_TIMEOUT to wait longer)"
    )


def _parse_instances(text: bytes | str, source: str) -> list[dict[str, Any]]:
    """
    Parse an instances response (``{"instances": [...]}``) and check its shape.

    + text: the response body or file content
    + source: where it came from, for error messages
    """

    try:
        payload = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise VastInventoryError(f"malformed JSON from {source}: {e}") from None

    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list) or not all(isinstance(i, dict) for i in instances):
        raise VastInventoryError(
            f'unexpected response shape from {source}: expected {{"instances": [{{...}}, ...]}}',
        )
    return instances


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
        return _parse_instances(text, str(path))

    url = _instances_url(env)
    timeout = _api_timeout(env)
    key = _api_key(env, home or Path.home())
    return _parse_instances(_fetch(url, key, timeout), url)


def _instance_id(instance: Mapping[str, Any]) -> int:
    raw = instance.get("id")
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw)
    raise VastInventoryError(f"skipping an instance without a usable id: {raw!r}")


def _text(value: Any) -> str:
    # The API pads some strings (public_ipaddr often ends in a newline); the vast CLI strips them.
    return value.strip() if isinstance(value, str) else ""


def ssh_endpoint(instance: Mapping[str, Any]) -> tuple[str, int, str]:
    """
    Return ``(hostname, port, via)`` for an instance, ``via`` being ``direct`` or ``proxy``.

    Mirrors the vast CLI's ``ssh-url``: the direct mapping of ``22/tcp`` wins; otherwise Vast's
    SSH proxy, whose port is ``ssh_port + 1`` for jupyter runtypes.
    """

    ports = instance.get("ports")
    mapping = ports.get("22/tcp") if isinstance(ports, dict) else None
    public_ip = _text(instance.get("public_ipaddr"))
    if mapping and isinstance(mapping, list) and isinstance(mapping[0], dict) and public_ip:
        try:
            return public_ip, int(mapping[0].get("HostPort")), "direct"
        except (TypeError, ValueError):
            pass  # an unusable mapping: the proxy may still work

    proxy_host = _text(instance.get("ssh_host"))
    try:
        proxy_port = int(instance.get("ssh_port"))
    except (TypeError, ValueError):
        proxy_port = 0
    if not proxy_host or proxy_port <= 0:
        raise VastInventoryError(
            f"skipping instance {instance.get('id')}: no SSH endpoint "
            "(no 22/tcp port mapping and no ssh_host/ssh_port)",
        )
    # Substring test as in the vast CLI: runtypes look like "jupyter", "jupyter_direct",
    # or space-separated lists such as "jupyter_proxy ssh_proxy".
    if "jupyter" in _text(instance.get("image_runtype")):
        proxy_port += 1
    return proxy_host, proxy_port, "proxy"


def known_hosts_dir(home: Path | None = None) -> Path:
    """
    Directory holding one known_hosts file per instance (see the host key policy).
    """

    return (home or Path.home()) / _KNOWN_HOSTS_DIR


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
      (no id, no SSH endpoint); default prints to stderr
    """

    instances = list(instances)
    known_hosts = known_hosts or known_hosts_dir()
    warn = warn or _warn

    running = [i for i in instances if i.get("actual_status") == "running"]
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


def prepare_known_hosts(hosts: Iterable[_Host]) -> None:
    """
    Create the per-instance known_hosts files (0600) and their directory (0700).

    The empty file matters: pyinfra logs a warning when its known_hosts file is missing,
    and creating it here keeps the permissions ours rather than the umask's.
    """

    files = [Path(data["ssh_known_hosts_file"]) for _, data in hosts]
    try:
        for directory in sorted({path.parent for path in files}):
            directory.parent.mkdir(mode=0o700, exist_ok=True)
            directory.mkdir(mode=0o700, exist_ok=True)
            # Also tighten a directory created by hand: its files decide whom we trust.
            directory.chmod(0o700)
        for path in files:
            path.touch(mode=0o600, exist_ok=True)
    except OSError as e:
        raise VastInventoryError(f"cannot prepare known_hosts files: {e}") from None


def _warn(message: str) -> None:
    print(f"red inventory: warning: {message}", file=sys.stderr)


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
        raise SystemExit(2) from None


vast = _load_or_exit()
