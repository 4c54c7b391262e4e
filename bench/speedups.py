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
         ("without data", "data"), ("none", "order,arguments,data"))


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
    print(f"{'case':<20} {'1 box (s)':>10} {'8 boxes (s)':>12}")
    base = {}
    for name, off in CASES:
        row = []
        for label, group in (("one", "one"), ("eight", "fleet")):
            runs = [plan_seconds(group, off) for _ in range(args.runs)]
            row.append(statistics.median(runs))
            base.setdefault(label, row[-1])
        shares = [f"{(value / base[label] - 1) * 100:+.0f}%" for value, label in
                  zip(row, ("one", "eight"), strict=True)]
        print(f"{name:<20} {row[0]:>7.2f} {shares[0]:>4} {row[1]:>8.2f} {shares[1]:>4}")


if __name__ == "__main__":
    main()
