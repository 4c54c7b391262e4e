"""
The GPU Vast's API says each box has, told before anything connects: its four fields kept in
host data under the API's own names, and one line a box naming the VisoMaster flavor that GPU
gets (``redbox.app.flavors.choose``, as the deploy decides it); a box no flavor runs on is named
with what to rent instead. Once connected, the box's own nvidia-smi decides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

# The API's names; gpu_name was host data before the others.
FIELDS = ("gpu_name", "compute_cap", "driver_version", "cuda_max_good")
CONFIGURED_ENV = "VISOMASTER_FLAVOR"
FALLBACK = "upstream"
_SHOWN_ODD = 3


def gpu_data(instance: Mapping[str, Any]) -> dict[str, Any]:
    """The instance's GPU fields as the API gave them, None where it gave none."""
    return {name: instance.get(name) for name in FIELDS}


def _has_fields(data: Mapping[str, Any]) -> bool:
    return any(data.get(name) not in (None, "") for name in FIELDS[1:])


def flavor_lines(hosts: Iterable[tuple[str, Mapping[str, Any]]],
                 env: Mapping[str, str]) -> tuple[list[tuple[bool, str]], str | None]:
    """
    ((warned, line) per host whose data has the Vast GPU fields, warned when no flavor runs
    on that GPU or the one forced does not; at most one warning besides, for the hosts whose
    fields cannot be read or when the flavors cannot be told here). The configured flavor is
    ``VISOMASTER_FLAVOR`` from ``env``, else auto.
    """
    hosts = [(name, data) for name, data in hosts if _has_fields(data)]
    if not hosts:
        return [], None
    try:
        from redbox.app import flavors, gpu  # noqa: PLC0415 - only for boxes with GPU fields
    except ImportError as error:
        return [], (f"cannot tell the VisoMaster flavors before connecting ({error}); each box's "
                    "nvidia-smi decides them")
    configured = (env.get(CONFIGURED_ENV) or "").strip() or flavors.AUTO
    if configured != flavors.AUTO and configured not in flavors.FLAVORS:
        configured = flavors.AUTO  # as the deploy takes it, with a line of its own
    lines, odd = [], []
    for name, data in hosts:
        found = gpu.from_vast(data)
        if found is None:
            unreadable = gpu.unreadable_vast_fields(data)
            odd.append(f"{name} ({', '.join(unreadable) or 'no compute_cap or driver_version'})")
            continue
        lines.append(_line(name, found, flavors.choose(configured, found, FALLBACK), flavors))
    warning = None
    if odd:
        more = f" and {len(odd) - _SHOWN_ODD} more" if len(odd) > _SHOWN_ODD else ""
        warning = (f"the API's GPU fields of {', '.join(odd[:_SHOWN_ODD])}{more} cannot be read: "
                   "their VisoMaster flavor is told once connected, by nvidia-smi")
    return lines, warning


def _line(name: str, found: Any, choice: Any, flavors: Any) -> tuple[bool, str]:
    """(a warning?, the line): a refusal and a forced flavor that does not fit are warnings."""
    said = f"{name}: the API says {found.describe()}"
    if choice.chosen is None:
        why = choice.reason.removeprefix(f"no flavor runs on {found.describe()}: ")
        return True, (f"{said}: no VisoMaster flavor runs there ({why}); nothing of the app "
                      f"will be installed; rent {flavors.CUDA13_HOSTS} (an R580+ driver) for "
                      f"RTX 50 cards, or set {CONFIGURED_ENV} to force one")
    line = f"{said}: visomaster_flavor={choice.configured} gets {choice.chosen}"
    misfit = flavors.FLAVORS[choice.chosen].misfit(found)
    return (True, f"{line}, but {misfit}: the app may not start") if misfit else (False, line)


def report(hosts: Iterable[tuple[str, Mapping[str, Any]]], env: Mapping[str, str],
           say: Callable[[str], None], warn: Callable[[str], None]) -> None:
    """
    Print the flavor lines; never fails the inventory (an unexpected error is one warning).
    """
    try:
        lines, warning = flavor_lines(hosts, env)
    except Exception as error:  # advisory: the listing stands without it
        lines, warning = [], (f"cannot tell the VisoMaster flavors before connecting "
                              f"(unexpected {type(error).__name__}: {error})")
    for warned, line in lines:
        (warn if warned else say)(line)
    if warning:
        warn(warning)
