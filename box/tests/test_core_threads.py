"""redbox.core.threads: the thread caps of a starved host, and the cgroup files they come from."""

import os
from fractions import Fraction

import pytest

from redbox.core.threads import THREAD_VARIABLES, read_limits, thread_caps

NONE_SET: dict = {}


@pytest.mark.parametrize(
    ("pids_max", "cores", "quota", "user_env", "cap"),
    [
        # Healthy: unlimited, or 16 pids per visible core and more.
        (None, 384, Fraction(46), NONE_SET, None),
        (6144, 384, Fraction(46), NONE_SET, None),
        (100000, 384, None, NONE_SET, None),
        (64, 4, None, NONE_SET, None),
        # Starved (the host that motivated the rule: 1024 pids, 384 cores, ~46 cores of quota).
        (1024, 384, Fraction(46), NONE_SET, 16),
        (1024, 384, Fraction(9, 2), NONE_SET, 5),  # rounded up
        (63, 4, Fraction(3), NONE_SET, 3),
        (63, 4, None, NONE_SET, 4),  # no quota: the visible cores
        (20, 2, Fraction(1), NONE_SET, 2),  # never below 2
        (20, 2, Fraction(1, 2), NONE_SET, 2),
        (1024, 384, None, NONE_SET, 16),  # never above 16
        (0, 1, None, NONE_SET, 2),
        # No visible cores known: nothing to reason with.
        (1024, None, Fraction(4), NONE_SET, None),
    ],
)
def test_the_rule(pids_max, cores, quota, user_env, cap):
    caps, reason = thread_caps(pids_max, cores, quota, user_env)
    if cap is None:
        assert (caps, reason) == ({}, None)
        return
    assert caps == dict.fromkeys(THREAD_VARIABLES, str(cap))
    assert f"pids.max {pids_max} " in reason and f"{cores} visible cores" in reason
    assert f"capped to {cap}" in reason


def test_a_variable_the_user_set_is_left_alone_and_named():
    user_env = {"OMP_NUM_THREADS": "8", "RAYON_NUM_THREADS": "", "PATH": "/bin"}
    caps, reason = thread_caps(1024, 384, Fraction(3, 2), user_env)
    assert set(caps) == set(THREAD_VARIABLES) - {"OMP_NUM_THREADS", "RAYON_NUM_THREADS"}
    assert set(caps.values()) == {"2"}
    assert reason == ("pids.max 1024 is below 16 x 384 visible cores (CPU quota 1.5 cores): "
                      "thread pools capped to 2, the user's OMP_NUM_THREADS, "
                      "RAYON_NUM_THREADS kept")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        # cgroup v2: "quota period", or "max period".
        ({"pids.max": "1024\n", "cpu.max": "450000 100000\n"}, (1024, Fraction(9, 2))),
        ({"pids.max": "max\n", "cpu.max": "max 100000\n"}, (None, None)),
        ({"pids.max": "30\n"}, (30, None)),
        # v1: pids/pids.max, cpu/cpu.cfs_quota_us over cpu.cfs_period_us (-1: none).
        ({"pids/pids.max": "512\n", "cpu/cpu.cfs_quota_us": "200000\n",
          "cpu/cpu.cfs_period_us": "100000\n"}, (512, Fraction(2))),
        ({"pids/pids.max": "max\n", "cpu/cpu.cfs_quota_us": "-1\n",
          "cpu/cpu.cfs_period_us": "100000\n"}, (None, None)),
        # v2 wins over v1; an unreadable or odd file is no limit.
        ({"pids.max": "100\n", "pids/pids.max": "5\n", "cpu.max": "100000 100000\n",
          "cpu/cpu.cfs_quota_us": "800000\n", "cpu/cpu.cfs_period_us": "100000\n"},
         (100, Fraction(1))),
        ({"cpu.max": "100000 0\n"}, (None, None)),
        ({}, (None, None)),
    ],
)
def test_read_limits_reads_v2_then_v1(tmp_path, files, expected):
    for name, text in files.items():
        path = tmp_path / "sys/fs/cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    limits = read_limits(str(tmp_path), cores=8)
    assert (limits.pids_max, limits.quota) == expected
    assert limits.cores == 8


def test_read_limits_counts_this_process_cores_by_default(tmp_path):
    assert read_limits(str(tmp_path)).cores == len(os.sched_getaffinity(0))
