"""
The Vast inventory's hosts: instance records to pyinfra hosts, and their host keys pinned
per instance id (the policy is in inventories/vast.py's docstring).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from . import vast_common
from .vast_common import TOKEN, VastInventoryError
from .vast_gpu import gpu_data

KNOWN_HOSTS_DIR = Path(".ssh", "red_known_hosts")

Host = tuple[str, dict[str, Any]]


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
    return text if TOKEN.fullmatch(text) and not text.startswith("-") else ""


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

    return (home or Path.home()) / KNOWN_HOSTS_DIR


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
) -> list[Host]:
    """
    Turn API instances into pyinfra ``(name, data)`` hosts, sorted by instance id.

    + instances: instance dicts as returned by the API
    + label_glob: keep only instances whose label matches this ``fnmatch`` glob
    + known_hosts: per-instance known_hosts directory (default: ``known_hosts_dir()``)
    + warn: called with a one-line message for each running instance that is skipped
      (no id, no SSH endpoint) and each duplicated id; default prints to stderr
    """

    warn = warn or vast_common.warn
    instances = _unique([i for i in instances if isinstance(i, Mapping)], warn)
    known_hosts = known_hosts or known_hosts_dir()

    running = [i for i in instances if _text(i.get("actual_status")) == "running"]
    # An unlabelled instance has label null; treat it as "" so that "*" still matches it.
    matching = [
        i for i in running if label_glob is None or fnmatchcase(_text(i.get("label")), label_glob)
    ]

    hosts: dict[int, Host] = {}
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
                **gpu_data(instance),
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


def prepare_known_hosts(hosts: Iterable[Host]) -> None:
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

