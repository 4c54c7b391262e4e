"""
Thread caps for a starved host, the rule of Vast's base image (its 12-cpu-thread-limits.sh).

Some hosts show a container far more cores than its CPU quota, with a pids budget (the cgroup's
``pids.max``) too small for them: OpenMP, OpenBLAS, MKL, numexpr and Rust pools size themselves
to the visible cores, run out of pids, and ``pthread_create`` fails with EAGAIN (downloads and
inference crash). Only where ``pids.max`` is below 16 x the visible cores, each pool's variable
is capped to the CPU quota, rounded up (no quota: the visible cores), within 2..16; a variable
the user set is never touched. Everywhere else nothing is set: the runtimes keep their defaults.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMEXPR_MAX_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "RAYON_NUM_THREADS",
)
# Healthy hosts give dozens of pids per visible core; the host that motivated the rule, 2.7.
PIDS_PER_CORE = 16
# Never more threads per pool than this (each pool's draw on the pids), never fewer than 2.
CAP_MIN, CAP_MAX = 2, 16

# The cgroup files, relative to the root: v2 first, then v1.
PIDS_MAX = ("sys/fs/cgroup/pids.max", "sys/fs/cgroup/pids/pids.max")
CPU_MAX = "sys/fs/cgroup/cpu.max"
CFS_QUOTA = "sys/fs/cgroup/cpu/cpu.cfs_quota_us"
CFS_PERIOD = "sys/fs/cgroup/cpu/cpu.cfs_period_us"
CGROUP_FILES = (*PIDS_MAX, CPU_MAX, CFS_QUOTA, CFS_PERIOD)


class HostLimits(NamedTuple):
    """What the rule reads of a host."""

    # The cgroup's pids budget; None: unlimited ("max") or unreadable.
    pids_max: int | None
    # The cores this process may run on (its affinity, as nproc counts them).
    cores: int | None
    # The CPU quota in cores (1.5: a core and a half); None: unlimited or unreadable.
    quota: Fraction | None


def _integer(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


def _quota(quota: str | None, period: str | None) -> Fraction | None:
    quota_us, period_us = _integer(quota), _integer(period)
    # "max" and v1's -1 are no quota: not digits.
    if quota_us is None or not period_us or quota_us <= 0:
        return None
    return Fraction(quota_us, period_us)


def limits_from(files: Mapping[str, str], cores: int | None) -> HostLimits:
    """
    The limits in the cgroup files' texts.

    + files: each readable file of ``CGROUP_FILES`` (its relative path) and what it holds
    + cores: the visible cores
    """
    pids = next((files[path] for path in PIDS_MAX if path in files), None)
    if CPU_MAX in files:
        quota_us, _, period_us = files[CPU_MAX].strip().partition(" ")
        quota = _quota(quota_us, period_us)
    else:
        quota = _quota(files.get(CFS_QUOTA), files.get(CFS_PERIOD))
    return HostLimits(_integer(pids), cores if cores and cores > 0 else None, quota)


def visible_cores() -> int | None:
    """The cores this process may run on (os.sched_getaffinity; nproc says the same)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def read_limits(root: str = "/", cores: int | None = None) -> HostLimits:
    """
    This host's limits, from the cgroup files under root.

    + root: where the files are looked for (tests: a directory of fake ones)
    + cores: the visible cores (None: this process's)
    """
    files = {}
    for path in CGROUP_FILES:
        try:
            files[path] = Path(root, path).read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
    return limits_from(files, visible_cores() if cores is None else cores)


def thread_caps(pids_max: int | None, cores: int | None, quota, user_env: Mapping[str, str],
                ) -> tuple[dict[str, str], str | None]:
    """
    The variables to set and one line saying why (None, with no variables: a healthy host).

    + pids_max: the pids budget (None: unlimited)
    + cores: the visible cores
    + quota: the CPU quota in cores (None: none)
    + user_env: what the user set (the container's env): those variables are left alone
    """
    if pids_max is None or not cores or pids_max >= PIDS_PER_CORE * cores:
        return {}, None
    cap = min(CAP_MAX, max(CAP_MIN, math.ceil(quota if quota else cores)))
    caps = {name: str(cap) for name in THREAD_VARIABLES if name not in user_env}
    kept = [name for name in THREAD_VARIABLES if name in user_env]
    shown_quota = f"{float(quota):g} core{'' if quota == 1 else 's'}" if quota else "none"
    reason = (f"pids.max {pids_max} is below {PIDS_PER_CORE} x {cores} visible cores "
              f"(CPU quota {shown_quota}): thread pools capped to {cap}")
    if kept:
        reason += f", the user's {', '.join(kept)} kept"
    return caps, reason
