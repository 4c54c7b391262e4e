"""
Measure converging live boxes over SSH: one fresh box's first and no-op converges, a dry run,
and a fleet of fresh boxes in one run against one box. Prints one JSON object (seconds).

    python tests/live/measure.py [--fleet 3] [--noop-runs 3] [--red-fleet 8]

--red-fleet N: the no-op converge of one and of N running Red containers (RED_TEST_IMAGE,
already converged by their own boot: the "existing boxes" case) over SSH, with pyinfra's
default lockstep and with --no-wait; --red-fleet-only skips the fresh boxes.

Same fresh boxes, inventory and ports as the live tests (tests/live/freshbox.py); needs root,
podman and `make base`. Removes its containers when done.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import boxes as boxes_  # noqa: E402
from tests.live import freshbox  # noqa: E402


def busy_cpu_seconds() -> float:
    """CPU seconds this machine spent busy (all cores; /proc/stat), for a CPU-bound check."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def converge(operator: freshbox.Operator, *args: str, changes_allowed: bool = True) -> float:
    """Seconds of one converge; a failed one stops the measure, a no-op that changed is an error."""
    run = operator.deploy("-y", "--json", *args)
    if run.returncode != 0 or run.totals["error"]:
        raise SystemExit(f"converge failed:\n{run.tail()}")
    if not changes_allowed and run.totals["success"]:
        raise RuntimeError(f"not a no-op: it changed {run.changed_ops()}")
    return run.seconds


def red_fleet(operator: freshbox.Operator, count: int, runs: int) -> dict[str, float]:
    """No-op converges over SSH of 1 and of ``count`` running Red boxes, median of runs."""
    image = boxes_.image()
    started = []
    figures: dict[str, float] = {}
    try:
        for index in range(count):
            ports = boxes_.ports(freshbox.PORT_BASE + 800 + 10 * index)
            box = boxes_.start_box(f"red-live-redbox{index}", {
                **boxes_.ports_env(ports), **freshbox.APP_OFF_ENV,
                "SSH_PUBLIC_KEY": operator.public_key}, ports, image_tag=image)
            started.append(box)
        for box in started:
            boxes_.wait_ready(box, timeout=300)
            boxes_.wait_onstart(box, timeout=300)
        instances = [freshbox.instance(freshbox.ID_BASE + 500 + index, f"redbox{index}",
                                       box.ports["sshd"]) for index, box in enumerate(started)]
        # The first run over SSH records the controller's --data choices on each box.
        operator.list_instances(instances)
        converge(operator)
        for label, listed, args in (("1_red_box", instances[:1], ()),
                                    (f"{count}_red_boxes", instances, ()),
                                    (f"{count}_red_boxes_no_wait", instances, ("--no-wait",))):
            operator.list_instances(listed)
            figures[f"noop_converge_{label}_s"] = statistics.median(
                noop(operator, *args) for _ in range(runs))
        figures[f"noop_{count}_red_boxes_vs_1"] = (
            figures[f"noop_converge_{count}_red_boxes_s"] / figures["noop_converge_1_red_box_s"])
    finally:
        for box in started:
            boxes_.remove(box.name)
    return figures


def noop(operator: freshbox.Operator, *args: str) -> float:
    return converge(operator, *args, changes_allowed=False)


def measure(fleet: int = 3, noop_runs: int = 3, red_fleet_size: int = 0,
            red_fleet_only: bool = False) -> dict[str, float | int]:
    """The figures (seconds, ratios) for ``fleet`` fresh boxes and ``red_fleet_size`` Red ones."""
    figures: dict[str, float | int] = {"fleet_boxes": fleet}
    boxes: list[freshbox.FreshBox] = []
    with tempfile.TemporaryDirectory(prefix="red-live-measure-") as directory:
        operator = freshbox.Operator(Path(directory))
        try:
            if red_fleet_size:
                figures.update(red_fleet(operator, red_fleet_size, noop_runs))
            if red_fleet_only:
                return figures
            figures["freshbox_image_build_s"] = freshbox.build_image()
            single = freshbox.start(0, operator.public_key)
            boxes.append(single)
            operator.list_instances([single.instance()])
            busy = busy_cpu_seconds()
            figures["first_converge_1_box_s"] = converge(operator)
            # Cores kept busy on average: n boxes need n times that, on os.cpu_count() cores.
            figures["first_converge_1_box_busy_cores"] = (
                (busy_cpu_seconds() - busy) / figures["first_converge_1_box_s"])
            figures["cores"] = os.cpu_count()
            figures["services_up_after_first_converge_s"] = freshbox.wait_running(single)
            figures["noop_converge_1_box_s"] = statistics.median(
                noop(operator) for _ in range(noop_runs))
            dry = operator.deploy("--dry", "--diff", "--data", "vnc_resolution=1600x900")
            figures["dry_run_diff_1_box_s"] = dry.seconds
            freshbox.remove(single)
            boxes.clear()
            members = [freshbox.start(index, operator.public_key)
                       for index in range(1, fleet + 1)]
            boxes.extend(members)
            operator.list_instances([member.instance() for member in members])
            figures["first_converge_fleet_s"] = converge(operator)
            figures["noop_converge_fleet_s"] = statistics.median(
                noop(operator) for _ in range(noop_runs))
            figures["fleet_vs_1_box_first_converge"] = (
                figures["first_converge_fleet_s"] / figures["first_converge_1_box_s"])
            # The same fleet size again, fresh, with pyinfra's --no-wait: each box runs its
            # operations without waiting for the others at every one.
            freshbox.remove(*members)
            boxes.clear()
            members = [freshbox.start(index, operator.public_key)
                       for index in range(fleet + 1, 2 * fleet + 1)]
            boxes.extend(members)
            operator.list_instances([member.instance() for member in members])
            figures["first_converge_fleet_no_wait_s"] = converge(operator, "--no-wait")
        finally:
            freshbox.remove(*boxes)
            operator.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fleet", type=int, default=3, help="boxes in the fleet run")
    parser.add_argument("--noop-runs", type=int, default=3, help="no-op runs (median)")
    parser.add_argument("--red-fleet", type=int, default=0,
                        help="also the no-op of N running Red boxes (0: not)")
    parser.add_argument("--red-fleet-only", action="store_true")
    options = parser.parse_args()
    print_figures(measure(options.fleet, options.noop_runs, options.red_fleet,
                          options.red_fleet_only))


def print_figures(figures: dict) -> None:
    print(json.dumps({key: round(value, 2) if isinstance(value, float) else value
                      for key, value in figures.items()}, indent=1))


if __name__ == "__main__":
    main()
