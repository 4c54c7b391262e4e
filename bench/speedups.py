#!/usr/bin/env python3
"""
What each of operations/_speedups.py's patches saves: the whole deploy planned by the real
pyinfra CLI for 1 and for 8 boxes (tests/plan.py's fake hosts answer every fact, so what is
timed is the controller's own work, where the patches act), with all patches, with each one
left out (RED_SPEEDUPS_OFF) and with none. Medians of --runs; wall seconds of the CLI process.

    .venv/bin/python bench/speedups.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # a bench script of the repository (not the box library)

from tests.plan import plan  # noqa: E402

INVENTORY = "bench/fake_fleet.py"
CASES = (("all patches", ""), ("without order", "order"), ("without arguments", "arguments"),
         ("none", "order,arguments"))


def plan_seconds(group: str, off: str) -> float:
    os.environ["RED_SPEEDUPS_OFF"] = off
    started = time.monotonic()
    result = plan(group, inventory=INVENTORY, timeout=600)
    assert result.code == 0, result.output[-2000:]
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    # The cases interleaved, run by run: a machine whose speed drifts weighs on each alike.
    seconds: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.runs):
        for _name, off in CASES:
            for group in ("one", "fleet"):
                seconds.setdefault((off, group), []).append(plan_seconds(group, off))
    print(f"{'case':<20} {'1 box (s)':>12} {'8 boxes (s)':>14}")
    base = {group: statistics.median(seconds[("", group)]) for group in ("one", "fleet")}
    for name, off in CASES:
        cells = []
        for group in ("one", "fleet"):
            value = statistics.median(seconds[(off, group)])
            cells.append(f"{value:6.2f} {(value / base[group] - 1) * 100:+4.0f}%")
        print(f"{name:<20} {cells[0]:>12} {cells[1]:>14}")

if __name__ == "__main__":
    main()
