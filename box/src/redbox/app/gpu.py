"""
The box's GPU as nvidia-smi reports it, read with a deadline (a hung driver cannot hang a
tool): the first GPU's name, compute capability, driver and the newest CUDA that driver runs.

    nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader
    nvidia-smi            # its header: "CUDA Version: 12.9"
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass


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


def run(command: list[str], timeout: float) -> tuple[int | None, str]:
    """(exit code, stdout + stderr), or (None, why) when it is missing or did not finish."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return None, ""
    except subprocess.TimeoutExpired:
        return None, f"{command[0]} did not answer within {timeout:g} s (a hung driver?)"
    except OSError as error:
        return None, f"{command[0]} could not run: {error.strerror}"
    return done.returncode, (done.stdout or "") + (done.stderr or "")


def probe(timeout: float = 10) -> tuple[Gpu | None, str]:
    """The first GPU and "" or None and why, asking nvidia-smi (each call bounded)."""
    code, out = run(QUERY, timeout)
    header = run(HEADER, timeout)[1] if code == 0 else ""
    return parse_gpus(code, out, header)
