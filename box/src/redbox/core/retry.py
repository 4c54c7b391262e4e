"""Bounded retries: a number of attempts, exponential backoff between them, a total deadline."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator

from redbox.core import log, state

# A failed step is not tried again by a converge for a while: base seconds, doubling per
# failure of the same inputs, never more than this.
BACKOFF_CAP = 6 * 3600


def backoff_seconds(failures: int, base: float) -> float:
    """How long the ``failures``-th failure in a row keeps a step from being tried again."""
    return min(BACKOFF_CAP, base * 2 ** max(0, failures - 1))


def backoff_left(previous: dict, key: str, now: float | None = None) -> float:
    """Seconds the last failed attempt with these inputs still holds off another (0: none)."""
    if previous.get("key") != key or not previous.get("failures"):
        return 0.0
    now = time.time() if now is None else now
    return max(0.0, float(previous.get("next_try_epoch") or 0) - now)


def note_failures(record: dict, previous: dict, *, tried: bool, cause: str | None,
                  base: float) -> None:
    """
    A step's record (``key``, ``verified``) gains its failure count, cause and backoff: reset
    when verified, one more after a failed try (``base`` seconds, doubling; 0: none), carried
    on from the previous record of the same inputs when nothing was tried; and ``in_backoff``.
    """
    same = previous.get("key") == record["key"]
    if record["verified"]:
        record["failures"] = 0
    elif tried:
        failures = (previous.get("failures") or 0) + 1 if same else 1
        record.update(failures=failures, cause=cause)
        if base:  # without one, the next run may try at once
            until = int(time.time() + backoff_seconds(failures, base))
            record.update(next_try_epoch=until, next_try_after=log.timestamp(until))
    elif same:
        for name in ("failures", "cause", "next_try_epoch", "next_try_after"):
            if name in previous:
                record[name] = previous[name]
    record["in_backoff"] = bool(backoff_left(record, record["key"]))


def add_backoff_arguments(parser, backoff_flag: str, default: float, what: str) -> None:
    """
    The backoff's own options, the same in every tool that records its failures: the base
    seconds (``backoff_flag``), ``--force`` and ``--retry-now``.
    """
    parser.add_argument(backoff_flag, type=float, default=default,
                        help=f"after a failed {what}, seconds before a run tries again "
                             "(doubling per failure of the same inputs, up to 6 h; 0: none)")
    parser.add_argument("--force", action="store_true", help="ignore the backoff")
    parser.add_argument("--retry-now", action="store_true",
                        help=f"run the last recorded {what} again now (its own arguments)")


def rerun_arguments(parser, argv: list[str] | None, what: str, dropped: tuple[str, ...]):
    """
    Parse argv; with ``--retry-now``, the last run's own arguments, as recorded in the tool's
    state file (``--state``, key ``argv``), again with ``--force`` (its backoff ignored).
    ``args.argv`` is what to record for a later retry: these arguments without ``dropped``.
    """
    args = parser.parse_args(argv)
    if args.retry_now:
        saved = (state.read(args.state) or {}).get("argv")
        if not isinstance(saved, list):
            parser.error(f"no {what} recorded in {args.state} to retry")
        args = parser.parse_args([*saved, "--force"])
        args.argv = saved
        return args
    args.argv = [item for item in (sys.argv[1:] if argv is None else argv)
                 if item not in dropped]
    return args


class Attempts:
    """
    Iterate over attempt numbers 1..attempts, pausing ``backoff * 2**(n-2)`` seconds before
    attempt n (backoff 2: 2, 4, 8 s). With a ``deadline`` (seconds from the start), no attempt
    starts whose pause would end past it; ``out_of_time`` then says so and ``remaining()`` bounds
    each attempt's own timeout. ``on_pause(seconds)`` runs before each pause.
    """

    def __init__(self, attempts: int, backoff: float, deadline: float | None = None,
                 on_pause: Callable[[float], None] | None = None, *,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.attempts = max(1, int(attempts))
        self.backoff = max(0.0, backoff)
        self.deadline = deadline
        self.on_pause = on_pause
        self.sleep = sleep
        self.clock = clock
        self.started = clock()
        self.out_of_time = False
        self.made = 0

    def pause(self, attempt: int) -> float:
        """Seconds to wait before an attempt (none before the first)."""
        return 0.0 if attempt <= 1 else self.backoff * 2 ** (attempt - 2)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - (self.clock() - self.started))

    def __iter__(self) -> Iterator[int]:
        for attempt in range(1, self.attempts + 1):
            pause = self.pause(attempt)
            left = self.remaining()
            if left is not None and (left <= 0 or pause >= left):
                self.out_of_time = True
                return
            if pause:
                if self.on_pause:
                    self.on_pause(pause)
                self.sleep(pause)
            self.made = attempt
            yield attempt

    def summary(self) -> str:
        """How the attempts ended: "after 3 attempts", and whether the deadline stopped them."""
        text = f"after {self.made} attempts"
        if self.out_of_time:
            text += f" (deadline of {self.deadline:g} s reached)"
        return text

    def why_stopped(self, detail: str) -> str:
        """The failure line after the last attempt: ``detail (after N attempts...)``."""
        return f"{detail} ({self.summary()})"
