"""
Measure converging live boxes over SSH: one fresh box's first and no-op converges, a dry run,
and a fleet of fresh boxes in one run against one box. Prints one JSON object (seconds).

    python tests/live/measure.py [--fleet 3] [--noop-runs 3]

Same fresh boxes, inventory and ports as the live tests (tests/live/freshbox.py); needs root,
podman and `make base`. Removes its containers when done.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.live import freshbox  # noqa: E402


def converge(operator: freshbox.Operator, *args: str) -> float:
    run = operator.deploy("-y", "--json", *args)
    if run.returncode != 0 or run.totals["error"]:
        raise SystemExit(f"converge failed:\n{run.tail()}")
    return run.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fleet", type=int, default=3, help="boxes in the fleet run")
    parser.add_argument("--noop-runs", type=int, default=3, help="no-op runs (median)")
    options = parser.parse_args()
    figures: dict[str, float | int] = {"fleet_boxes": options.fleet}
    boxes: list[freshbox.FreshBox] = []
    with tempfile.TemporaryDirectory(prefix="red-live-measure-") as directory:
        operator = freshbox.Operator(Path(directory))
        try:
            figures["freshbox_image_build_s"] = freshbox.build_image()
            single = freshbox.start(0, operator.public_key)
            boxes.append(single)
            operator.list_instances([single.instance()])
            figures["first_converge_1_box_s"] = converge(operator)
            figures["services_up_after_first_converge_s"] = freshbox.wait_running(single)
            figures["noop_converge_1_box_s"] = statistics.median(
                converge(operator) for _ in range(options.noop_runs))
            dry = operator.deploy("--dry", "--diff", "--data", "vnc_resolution=1600x900")
            figures["dry_run_diff_1_box_s"] = dry.seconds
            freshbox.remove(single)
            boxes.clear()
            fleet = [freshbox.start(index, operator.public_key)
                     for index in range(1, options.fleet + 1)]
            boxes.extend(fleet)
            operator.list_instances([member.instance() for member in fleet])
            figures["first_converge_fleet_s"] = converge(operator)
            figures["noop_converge_fleet_s"] = statistics.median(
                converge(operator) for _ in range(options.noop_runs))
            figures["fleet_vs_1_box_first_converge"] = (
                figures["first_converge_fleet_s"] / figures["first_converge_1_box_s"])
        finally:
            freshbox.remove(*boxes)
            operator.close()
    print(json.dumps({key: round(value, 2) if isinstance(value, float) else value
                      for key, value in figures.items()}, indent=1))


if __name__ == "__main__":
    main()
