"""redbox.core.lock (flock with a timeout), redbox.core.retry (attempts, backoff, deadline)."""

import fcntl
import os
import time

import pytest

from redbox.core import lock
from redbox.core.retry import Attempts


@pytest.mark.parametrize(
    ("held", "timeout", "got", "waits"),
    [
        (False, 5, True, 0),
        (True, 0.6, False, 1),
        (False, None, True, 0),
    ],
)
def test_acquire_is_bounded_by_its_timeout(tmp_path, held, timeout, got, waits):
    path = str(tmp_path / "lock")
    holder = os.open(path, os.O_RDWR | os.O_CREAT)
    if held:
        fcntl.flock(holder, fcntl.LOCK_EX)
    waited_for = []
    fd = os.open(path, os.O_RDWR)
    start = time.monotonic()
    result = lock.acquire(fd, timeout, on_wait=lambda: waited_for.append(1), poll=0.1)
    assert (result is not None) is got and len(waited_for) == waits
    if held:
        assert timeout <= time.monotonic() - start < timeout + 1
    assert lock.is_held(path) is True
    os.close(fd)
    os.close(holder)
    assert lock.is_held(path) is False
    assert lock.is_held(str(tmp_path / "missing")) is False


def test_a_waiter_gets_the_lock_when_the_holder_lets_go(tmp_path):
    path = str(tmp_path / "lock")
    holder = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    fd = os.open(path, os.O_RDWR)
    pid = os.fork()
    if pid == 0:  # the holder's other half lets go after 0.3 s
        time.sleep(0.3)
        os._exit(0)
    os.close(holder)  # our copy; the child's copy shares the lock until it exits
    waited = lock.acquire(fd, 5, poll=0.05)
    os.waitpid(pid, 0)
    assert waited is not None and waited > 0
    os.close(fd)


class Clock:
    def __init__(self):
        self.now = 0.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(
    ("attempts", "backoff", "deadline", "cost", "made", "pauses"),
    [
        (4, 2, None, 0, 4, [2, 4, 8]),  # 2, 4, 8 s
        (1, 2, None, 0, 1, []),
        (0, 2, None, 0, 1, []),  # at least one attempt
        (4, 0, None, 0, 4, []),  # no backoff: no pause at all
        (4, 2, 10, 0, 3, [2, 4]),  # 2+4 < 10, +8 would pass it
        (4, 1, 10, 4, 2, [1]),  # each attempt takes 4 s: 4+1+4 = 9, +2 would pass it
        (4, 1, 3, 4, 1, []),
    ],
)
def test_attempts_back_off_and_stop_at_the_deadline(attempts, backoff, deadline, cost, made,
                                                    pauses):
    clock = Clock()
    said = []
    tries = Attempts(attempts, backoff, deadline, on_pause=said.append, sleep=clock.sleep,
                     clock=clock)
    seen = []
    for number in tries:
        seen.append(number)
        clock.now += cost
    assert seen == list(range(1, made + 1)) and tries.made == made
    assert clock.slept == pauses and said == pauses
    assert tries.out_of_time is (deadline is not None and made < attempts)
    if tries.out_of_time:
        assert tries.summary() == f"after {made} attempts (deadline of {deadline} s reached)"
    else:
        assert tries.summary() == f"after {made} attempts"
    assert tries.why_stopped("HTTP 503") == f"HTTP 503 ({tries.summary()})"


@pytest.mark.parametrize(
    ("deadline", "spent", "remaining"),
    [(None, 5, None), (10, 4, 6), (10, 12, 0)],
)
def test_remaining_bounds_each_attempts_own_timeout(deadline, spent, remaining):
    clock = Clock()
    tries = Attempts(3, 1, deadline, sleep=clock.sleep, clock=clock)
    clock.now += spent
    assert tries.remaining() == remaining
