"""flock with a timeout: one holder at a time, waiters bounded."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable

POLL = 0.5


def acquire(fd: int, timeout: float | None, on_wait: Callable[[], None] | None = None,
            poll: float = POLL) -> float | None:
    """
    Lock fd exclusively. Returns the seconds waited (0.0: it was free), or None when another
    holder kept it for ``timeout`` seconds (None: wait as long as it takes). ``on_wait`` runs
    once, when the lock is found taken.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return 0.0
    except BlockingIOError:
        pass
    if on_wait:
        on_wait()
    start = time.monotonic()
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return max(time.monotonic() - start, 1e-6)
    while time.monotonic() - start < timeout:
        time.sleep(min(poll, max(timeout - (time.monotonic() - start), 0)))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        return max(time.monotonic() - start, 1e-6)
    return None


def is_held(path: str) -> bool:
    """True when someone holds an exclusive flock on path (read-only check)."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(handle)
    return False
