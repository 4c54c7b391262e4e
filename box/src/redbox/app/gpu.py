"""
The box's GPU as nvidia-smi reports it, read with a deadline (a hung driver cannot hang a
tool): the first GPU's name, compute capability, driver and the newest CUDA that driver runs.

    nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader
    nvidia-smi            # its header: "CUDA Version: 12.9"

Also the GPU Vast's API says an instance has (``from_vast``): what a controller knows of a box
before it connects. Once connected, the box's own nvidia-smi is the authority.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def version_tuple(text: str) -> tuple[int, ...]:
    """'575.57.08' -> (575, 57, 8); '12.0' -> (12, 0); () when it is not a version."""
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", text or ""):
        return ()
    return tuple(int(part) for part in text.split("."))


def shown(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)


@dataclass(frozen=True)
class Gpu:
    """What nvidia-smi says of the first GPU (CUDA device 0, the one the app uses)."""

    name: str
    compute_capability: str  # "12.0"
    driver_version: str  # "575.57.08"
    cuda_max: str  # "12.9": the newest CUDA the driver runs
    count: int = 1

    def describe(self) -> str:
        return (f"{self.name} (compute capability {self.compute_capability}) on driver "
                f"{self.driver_version} (CUDA {self.cuda_max or '?'})")

    def as_json(self) -> dict:
        return {"name": self.name, "compute_capability": self.compute_capability,
                "driver_version": self.driver_version, "cuda_max": self.cuda_max,
                "count": self.count}


QUERY = ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"]
# nvidia-smi's header names the CUDA the driver runs ("CUDA Version: 12.9"); no query field does.
HEADER = ["nvidia-smi"]
_CUDA_VERSION = re.compile(r"CUDA Version:\s*([0-9]+\.[0-9]+)")
# The oldest Linux driver of each CUDA release (its toolkit's release notes): the CUDA a driver
# runs when its header does not say.
_DRIVER_CUDA = (((580, 65, 6), "13.0"), ((575, 51, 3), "12.9"), ((570, 26), "12.8"),
                ((560, 28, 3), "12.6"), ((555, 42, 2), "12.5"), ((550, 54, 14), "12.4"),
                ((545, 23, 6), "12.3"), ((535, 54, 3), "12.2"), ((530, 30, 2), "12.1"),
                ((525, 60, 13), "12.0"))


def cuda_of_driver(driver: str) -> str:
    found = version_tuple(driver)
    return next((cuda for floor, cuda in _DRIVER_CUDA if found and found >= floor), "")


def parse_gpus(query_code: int | None, query_out: str, header_out: str) -> tuple[Gpu | None, str]:
    """
    (the first GPU, "") or (None, why) from nvidia-smi's answers: ``query_code`` None when
    nvidia-smi is not there or did not finish.
    """
    if query_code is None:
        return None, (query_out or "nvidia-smi is not installed: no NVIDIA driver here")
    if query_code != 0:
        said = " ".join(query_out.split())[:200]
        return None, f"nvidia-smi failed (exit {query_code}): {said or 'no output'}"
    rows = [line for line in query_out.splitlines() if line.strip()]
    gpus = []
    for row in rows:
        parts = [part.strip() for part in row.split(",")]
        if len(parts) != 3 or not version_tuple(parts[1]) or not version_tuple(parts[2]):
            return None, f"nvidia-smi answered something unreadable: {row.strip()[:120]!r}"
        gpus.append(parts)
    if not gpus:
        return None, "nvidia-smi lists no GPU"
    name, capability, driver = gpus[0]
    cuda = _CUDA_VERSION.search(header_out or "")
    return Gpu(name=name, compute_capability=capability, driver_version=driver,
               cuda_max=cuda.group(1) if cuda else cuda_of_driver(driver),
               count=len(gpus)), ""


# Seconds a killed command gets to go away: a process stuck in the driver ignores SIGKILL until
# it leaves the kernel, and is then left behind rather than waited for.
KILL_WAIT = 2


def run(command: list[str], timeout: float) -> tuple[int | None, str]:
    """(exit code, stdout + stderr), or (None, why) when it is missing or did not finish."""
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, text=True, errors="replace",
                                   start_new_session=True)
    except FileNotFoundError:
        return None, ""
    except OSError as error:
        return None, f"{command[0]} could not run: {error.strerror}"
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=KILL_WAIT)
        return None, f"{command[0]} did not answer within {timeout:g} s (a hung driver?)"
    return process.returncode, output or ""


def probe(timeout: float = 10) -> tuple[Gpu | None, str]:
    """The first GPU and "" or None and why, asking nvidia-smi (each call bounded)."""
    code, out = run(QUERY, timeout)
    header = run(HEADER, timeout)[1] if code == 0 else ""
    return parse_gpus(code, out, header)


# -- the GPU as Vast's API lists an instance (or an offer), in its own field names


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def _vast_capability(value: Any) -> str:
    """compute_cap: the capability times 100 (890 -> "8.9", 1200 -> "12.0"), or "8.9"."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
        value = int(value.strip())
    number = _number(value)
    if number is None:
        found = version_tuple(value.strip()) if isinstance(value, str) else ()
        return shown(found) if len(found) == 2 else ""
    if 100 <= number < 10_000:
        whole = int(number)
        return f"{whole // 100}.{whole % 100 // 10}" if whole == number and whole % 10 == 0 else ""
    # 8.9 or 12.0 as a number; 89 (sm_89's digits?) is no capability anyone writes so.
    return f"{number:.1f}" if number < 20 and round(number, 1) == number else ""


def _vast_driver(value: Any) -> str:
    """driver_version: "575.57.08" (or a filter's encoding, 575057008)."""
    if isinstance(value, str):
        return value.strip() if version_tuple(value.strip()) else ""
    number = _number(value)
    if number is None or number != int(number) or not 1_000_000 <= number < 10**10:
        return ""
    whole = int(number)
    return f"{whole // 1_000_000}.{whole // 1000 % 1000:02d}.{whole % 1000:02d}"


def _vast_cuda(value: Any) -> str:
    """cuda_max_good: the newest CUDA the driver runs, 12.4 or "12.4"."""
    if isinstance(value, str):
        return shown(version_tuple(value.strip()))
    number = _number(value)
    return "" if number is None or number >= 100 else f"{number:.1f}"


def from_vast(record: Any) -> Gpu | None:
    """
    The GPU Vast's API says an instance has, from a record or a host's data (anything with
    ``get``) holding the API's own fields: ``gpu_name`` ("RTX 5090"), ``compute_cap`` (1200,
    or "12.0"), ``driver_version`` ("575.57.08"), ``cuda_max_good`` (12.9, or "12.9"; from the
    driver when absent) and ``num_gpus``. None when the capability or the driver is missing or
    unreadable: the flavor then waits for the box's nvidia-smi.
    """
    get = getattr(record, "get", None)
    if get is None:
        return None
    capability = _vast_capability(get("compute_cap"))
    driver = _vast_driver(get("driver_version"))
    if not capability or not driver:
        return None
    name = get("gpu_name")
    count = get("num_gpus")
    return Gpu(name=" ".join(name.split()) if isinstance(name, str) and name.strip() else "GPU",
               compute_capability=capability, driver_version=driver,
               cuda_max=_vast_cuda(get("cuda_max_good")) or cuda_of_driver(driver),
               count=count if isinstance(count, int) and not isinstance(count, bool)
               and count > 0 else 1)


def unreadable_vast_fields(record: Mapping[str, Any]) -> list[str]:
    """The GPU fields the record has (not null) that ``from_vast`` cannot read, as name=value."""
    readers = {"compute_cap": _vast_capability, "driver_version": _vast_driver,
               "cuda_max_good": _vast_cuda}
    return [f"{name}={record.get(name)!r:.40}" for name, read in readers.items()
            if record.get(name) not in (None, "") and not read(record.get(name))]


def api_said(record: Any, found: Gpu | None) -> str:
    """
    " (the API said: <gpu>)" when the record's Vast fields describe a GPU that decides the
    flavor otherwise than ``found`` (nvidia-smi's: the authority) does, else "".
    """
    listed = from_vast(record)
    if listed is None:
        return ""
    same = found is not None and all(
        version_tuple(getattr(listed, key)) == version_tuple(getattr(found, key))
        for key in ("compute_capability", "driver_version"))
    return "" if same else f" (the API said: {listed.describe()})"
