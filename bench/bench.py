#!/usr/bin/env python3
"""
Red's benchmark, side by side with a plain build of the same stack (bench/plain.py: the
deploy's own packages, venvs and programs with a 15-line entrypoint): cold build time, image
size, boot-to-ready, and the no-op re-converge against a seed-style bash re-run, as medians with
min and max; then kill -9 recovery per service, the first boot to "app ready" with the app
baked in vs not, the Vast inventory's load time, and the converges over SSH (one fresh box's
no-op and dry run, 3 fresh boxes against one, 8 running Red boxes against one). Prints a
Markdown table with issue 11's goal beside each figure it sets one for, met or not; it asserts
nothing (tests do that).

    make bench                       # the test image on the local Debian 12 base
    bench/bench.py --skip-build      # reuse RED_TEST_IMAGE as it is
    bench/bench.py --skip-live       # without the converges over SSH
    bench/bench.py --inventory-only  # only the inventory (no podman)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from operations import settings  # noqa: E402
from tests.boxes import (  # noqa: E402 - the repo root must be on sys.path first
    PROGRAMS,
    answers,
    image,
    jupyter_status,
    podman,
    ports,
    ports_env,
    remove,
    start_box,
    wait_ready,
)
from tests.script_server import serve  # noqa: E402

# A port for each of the deploy's programs that listens (operations/programs.py).
PORTS = ports(26020)
ENV = {
    # GitHub is unreachable from the build machines: the app's checkout is measured apart.
    "VISOMASTER_CHECKOUT": "false",
    **ports_env(PORTS),
    "VNC_PW": "bench-pw",
    "JUPYTER_TOKEN": "bench-token-0123456789",
}
NAME = "red-bench"
PLAIN_IMAGE = "localhost/red-bench-plain:latest"


def cold_build() -> float:
    start = time.monotonic()
    subprocess.run(
        ["make", "image", f"IMAGE={image()}", "BASE_IMAGE=" + os.environ.get(
            "RED_BASE", "localhost/red-base:bookworm"), "PYTHON_VERSION=3.11",
         "EXTRA_CA_DIR=" + os.environ.get("EXTRA_CA_DIR", ""),
         "BUILD_FLAGS=--isolation chroot --network host --format docker --no-cache"],
        cwd=ROOT, check=True, capture_output=True,
    )
    return time.monotonic() - start


def boot_to_ready(tag: str) -> float:
    """Container start until every program runs, every port answers and Jupyter returns 200."""
    start = time.monotonic()
    box = start_box(NAME, ENV, PORTS, image_tag=tag)
    wait_ready(box, ENV["JUPYTER_TOKEN"], timeout=180)
    return time.monotonic() - start


PROVISIONING_SERVER_PORT = 26500
PROVISIONING_SCRIPT = b"#!/bin/bash\necho provisioning from the bench\n"
ONSTART_STATE = "/var/lib/red/provisioning/onstart.json"


def boot_with_provisioning() -> tuple[float, float]:
    """
    Container start with PROVISIONING_SCRIPT (served on loopback) until every service is
    ready, and until the on-start flow (app converge, download, script) reports ok.
    """
    env = {**ENV, "PROVISIONING_SCRIPT": f"http://127.0.0.1:{PROVISIONING_SERVER_PORT}/p.sh"}
    routes = {"/p.sh": (200, "text/x-shellscript", PROVISIONING_SCRIPT)}
    with serve(PROVISIONING_SERVER_PORT, routes):
        try:
            start = time.monotonic()
            box = start_box(NAME, env, PORTS)
            wait_ready(box, ENV["JUPYTER_TOKEN"], timeout=180)
            ready = time.monotonic() - start
            while time.monotonic() - start < 300:
                state = box.sh(f"cat {ONSTART_STATE} 2>/dev/null", check=False)
                if state and json.loads(state).get("status") not in (None, "running"):
                    return ready, time.monotonic() - start
                time.sleep(0.2)
            raise RuntimeError("the on-start flow was not done after 300 s")
        finally:
            remove(NAME)


def noop_converge(box) -> tuple[float, int]:
    """Seconds of a re-converge, and how many operations it changed (0 for a no-op)."""
    start = time.monotonic()
    report = box.converge_json()
    return time.monotonic() - start, report["results"]["totals"]["success"]


def kill_recovery(box, program: str) -> tuple[float, float]:
    """
    kill -9 of a program's process: seconds until it serves again (its port answers; the
    desktop: a new process), and until supervisor reports it RUNNING (after its startsecs).
    """
    old = box.program_pids()[program]
    start = time.monotonic()
    box.exec("kill", "-9", str(old))
    serving = None
    while time.monotonic() - start < 120:
        elapsed = time.monotonic() - start
        if serving is None and _serving(box, program, old):
            serving = elapsed
        pid = box.program_pids().get(program)
        if serving is not None and pid and pid != old:
            return serving, elapsed
        time.sleep(0.05)
    raise RuntimeError(f"{program} was not serving and RUNNING again within 120 s")


def _serving(box, program: str, old_pid: int) -> bool:
    """Its port answers (Jupyter: its API returns 200); a program without a port: a new pid."""
    if program == "jupyter":
        return jupyter_status(PORTS["jupyter"], ENV["JUPYTER_TOKEN"]) == 200
    if program in PORTS:
        return answers(box, program, PORTS[program])
    pid = box.sh(f"supervisorctl pid {program}", check=False).strip()
    return pid.isdigit() and int(pid) not in (0, old_pid)


# -- the app: first boot to "app ready" (its window on the desktop), baked vs lean


def app_ready_baked_vs_lean() -> list[tuple[str, str]]:
    """
    The image tier's baked-app test (tests/image/test_visomaster_baked.py) with the fixture
    app served on loopback: the baked image's first boot against the lean one's, each until the
    app's window is on the desktop. Its figures come from the test's own line.
    """
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
         "tests/image/test_visomaster_baked.py"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=3600)
    marker = "baked vs lean (s): "
    line = next((line for line in result.stdout.splitlines() if line.startswith(marker)), None)
    if result.returncode != 0 or line is None:
        raise SystemExit("the baked-app test failed:\n" + result.stdout[-3000:])
    timings = json.loads(line[len(marker):])
    baked = timings["baked_first_boot_to_app_window"]
    lean = timings["lean_first_boot_to_app_window"]
    return [
        ("first boot to app ready, app baked in (fixture app)", f"{baked:.1f} s"),
        ("first boot to app ready, lean image (clone + pip + models at boot)", f"{lean:.1f} s"),
        ("first boot to app ready, baked / lean", f"{baked / lean:.2f}x"),
        ("baked build on top of the cached lean layers",
         f"{timings['baked_build_extra_seconds']:.0f} s"),
    ]


# -- the Vast inventory: loading 300 instances (12 pages of the v1 API, or the offline file)


def inventory_load(runs: int) -> list[tuple[str, str]]:
    """
    Seconds to load inventories/vast.py as pyinfra does (module code included) for 300
    instances: from the loopback v1 API stand-in (12 pages of 25) and from the offline file
    (`vastai show instances --raw`'s flat list). Medians of ``runs``.
    """
    # Imported here: this section stands alone (the rest of the bench needs none of it).
    import importlib.util  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    from unittest import mock  # noqa: PLC0415

    from tests.vast_api import GOOD_KEY, VastAPI, recorded  # noqa: PLC0415

    pages = recorded("instances_300")["pages"]

    def load(env: dict[str, str]) -> float:
        spec = importlib.util.spec_from_file_location("red_vast_bench", ROOT / "inventories" /
                                                      "vast.py")
        module = importlib.util.module_from_spec(spec)
        start = time.monotonic()
        with mock.patch.dict(os.environ, env, clear=True):
            spec.loader.exec_module(module)
        elapsed = time.monotonic() - start
        if len(module.vast) != 180:  # the running ones of the 300
            raise SystemExit(f"inventory listed {len(module.vast)} hosts, not 180")
        return elapsed

    with tempfile.TemporaryDirectory(prefix="red-bench-inventory-") as home, \
            VastAPI(pages) as api:
        offline = Path(home, "instances.json")
        offline.write_text(json.dumps([r for page in pages for r in page["instances"]]))
        online = [load({"HOME": home, "VAST_API_URL": api.url, "VAST_API_KEY": GOOD_KEY})
                  for _ in range(runs)]
        requests = len(api.seen) / runs
        files = [load({"HOME": home, "VAST_INSTANCES_JSON": str(offline)}) for _ in range(runs)]
    return [
        (f"inventory load, 300 instances from the v1 API ({requests:.0f} pages; median of {runs})",
         f"{statistics.median(online) * 1000:.0f} ms"),
        (f"inventory load, 300 instances from the offline file (median of {runs})",
         f"{statistics.median(files) * 1000:.0f} ms"),
    ]


def goal(value: float, limit: float, unit: str = "x") -> str:
    """The issue's goal for a figure, and whether this run met it."""
    return f"<= {limit:g}{' ' if unit == 's' else ''}{unit}: " + (
        "met" if value <= limit else "NOT met")


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], unit: str = "s", digits: int = 1) -> str:
    """Median with min and max: ``7.5 s (7.1-8.0)``."""
    return (f"{statistics.median(values):.{digits}f} {unit} "
            f"({min(values):.{digits}f}-{max(values):.{digits}f})")


def ratio(red: list[float], base: list[float]) -> str:
    return f"{statistics.median(red) / statistics.median(base):.2f}x"


def measured(function, runs: int) -> tuple[list[float], str | None]:
    """``runs`` results of function(), or the error that stopped them (never NaN)."""
    values = []
    for _ in range(runs):
        try:
            values.append(function())
        except (AssertionError, subprocess.SubprocessError, RuntimeError) as error:
            return values, f"error: {str(error).splitlines()[0][:120]}"
    return values, None


def boots(tag: str, runs: int) -> tuple[list[float], str | None]:
    def once() -> float:
        try:
            return boot_to_ready(tag)
        finally:
            remove(NAME)
    return measured(once, runs)


def seed_bash_rerun(box, package_list: list[str]) -> float:
    """What a seed-style bash provisioning re-run does on a converged box: apt, pip, mkdir."""
    setting = settings.DEFAULTS.get
    script = ("apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "
              + " ".join(package_list) + " >/dev/null && "
              f"{setting('jupyter_venv')}/bin/pip install -q -r "
              f"/opt/red/deploy/{setting('jupyter_lock')} && mkdir -p "
              f"{setting('base_logs_dir')} {setting('base_workspace_dir')} "
              f"{setting('base_notebooks_dir')}")
    start = time.monotonic()
    box.sh(script, timeout=900)
    return time.monotonic() - start


def side_by_side(args, rows: list[tuple[str, ...]]) -> None:
    """Red against the plain build of the same stack (bench/plain.py), measured in one run."""
    import plain  # noqa: PLC0415 - bench/plain.py, next to this script

    base = os.environ.get("RED_BASE", "localhost/red-base:bookworm")
    red = image()
    box = start_box(NAME, ENV, PORTS, image_tag=red)
    work = Path(tempfile.mkdtemp(prefix="red-plain-"))
    try:
        wait_ready(box, ENV["JUPYTER_TOKEN"], timeout=180)
        plain.context(NAME, base, "3.11", work)
        plain.build_context(work, PLAIN_IMAGE, no_cache=False)
        package_list = plain.packages()
        converges, changed = [], 0
        for _ in range(args.runs):
            seconds, changes = noop_converge(box)
            converges.append(seconds)
            changed += changes
        seeds, seed_error = measured(lambda: seed_bash_rerun(box, package_list), args.runs)
    finally:
        remove(NAME)
    try:
        if not args.skip_build:
            # Alternately, so that both meet the same mirrors' moods (a build's downloads are
            # most of it, and their speed varies by a third between runs here).
            red_builds, plain_builds = [], []
            for _ in range(args.build_runs):
                red_builds.append(cold_build())
                plain_builds.append(plain.build_context(work, PLAIN_IMAGE, no_cache=True))
            rows.append((f"cold build (no cache; median of {args.build_runs}, min-max)",
                         spread(red_builds, digits=0), spread(plain_builds, digits=0),
                         ratio(red_builds, plain_builds),
                         goal(median(red_builds) / median(plain_builds), 1.15)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sizes = [int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout)
             for tag in (red, PLAIN_IMAGE)]
    rows.append(("image size", f"{sizes[0] / 1e9:.2f} GB", f"{sizes[1] / 1e9:.2f} GB",
                 f"{sizes[0] / sizes[1]:.2f}x", goal(sizes[0] / sizes[1], 1.0)))
    red_boots, red_error = boots(red, args.runs)
    plain_boots, plain_error = boots(PLAIN_IMAGE, args.runs)
    rows.append((f"boot to ready (median of {args.runs}, min-max)",
                 red_error or spread(red_boots), plain_error or spread(plain_boots),
                 "-" if red_error or plain_error else ratio(red_boots, plain_boots),
                 "" if red_error or plain_error else
                 goal(median(red_boots) / median(plain_boots), 1.2)))
    noop = "no-op re-converge in the container" if not changed else \
        f"re-converge in the container (NOT a no-op: {changed} changes)"
    rows.append((f"{noop} vs a seed-style bash re-run (median of {args.runs})",
                 spread(converges, digits=2), seed_error or spread(seeds, digits=2),
                 "-" if seed_error else ratio(converges, seeds),
                 goal(median(converges), 1.0, "s") + "; " + (
                     "" if seed_error else goal(median(converges) / median(seeds), 0.5))))


def live_rows(runs: int) -> list[tuple[str, ...]]:
    """
    Over SSH through inventories/vast.py (tests/live/measure.py): one fresh box's no-op and
    --dry --diff, the first converge of 3 fresh boxes against one, and the no-op of 8 running
    Red boxes against one (pyinfra's lockstep, and --no-wait).
    """
    from tests.live import measure  # noqa: PLC0415 - podman-heavy, only when asked

    try:
        figures = measure.measure(fleet=3, noop_runs=runs, red_fleet_size=8)
    except (RuntimeError, AssertionError, subprocess.SubprocessError, SystemExit) as error:
        return [("over SSH", f"error: {str(error).splitlines()[0][:120]}", "", "", "")]
    one, fleet = figures["first_converge_1_box_s"], figures["first_converge_fleet_s"]
    busy, cores = figures["first_converge_1_box_busy_cores"], figures["cores"]
    noop_one = figures["noop_converge_1_red_box_s"]
    noop_eight = figures["noop_converge_8_red_boxes_s"]
    return [
        (f"no-op converge of one box over SSH (median of {runs})",
         f"{figures['noop_converge_1_box_s']:.2f} s", "", "",
         goal(figures["noop_converge_1_box_s"], 2.5, "s")),
        ("--dry --diff of one box over SSH (a setting changed)",
         f"{figures['dry_run_diff_1_box_s']:.2f} s", "", "",
         goal(figures["dry_run_diff_1_box_s"], 2.5, "s")),
        ("first converge over SSH: 3 fresh boxes in one run / 1 box", f"{fleet:.0f} s",
         f"{one:.0f} s", f"{fleet / one:.2f}x", goal(fleet / one, 1.3)),
        ("the same, 3 other fresh boxes with pyinfra --no-wait / 1 box",
         f"{figures['first_converge_fleet_no_wait_s']:.0f} s", f"{one:.0f} s",
         f"{figures['first_converge_fleet_no_wait_s'] / one:.2f}x", ""),
        ("  one box's first converge keeps this many cores busy (of the machine's)",
         f"{busy:.2f} of {cores}", "", f"CPU floor for 3: {max(1.0, 3 * busy / cores):.2f}x", ""),
        (f"no-op converge over SSH: 3 fresh boxes / 1 (median of {runs})",
         f"{figures['noop_converge_fleet_s']:.2f} s", f"{figures['noop_converge_1_box_s']:.2f} s",
         f"{figures['noop_converge_fleet_s'] / figures['noop_converge_1_box_s']:.2f}x", ""),
        (f"no-op converge over SSH: 8 running Red boxes / 1 (median of {runs})",
         f"{noop_eight:.2f} s", f"{noop_one:.2f} s", f"{noop_eight / noop_one:.2f}x",
         goal(noop_eight / noop_one, 1.3)),
        ("the same, 8 boxes with pyinfra --no-wait / 1",
         f"{figures['noop_converge_8_red_boxes_no_wait_s']:.2f} s", f"{noop_one:.2f} s",
         f"{figures['noop_converge_8_red_boxes_no_wait_s'] / noop_one:.2f}x", ""),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--skip-build", action="store_true",
                        help="reuse the image as it is (and build the plain one from cache)")
    parser.add_argument("--runs", type=int, default=5, help="repetitions for medians")
    parser.add_argument("--build-runs", type=int, default=5,
                        help="cold builds of each image (each takes minutes)")
    parser.add_argument("--inventory-only", action="store_true",
                        help="measure only the Vast inventory's load time")
    parser.add_argument("--skip-app", action="store_true",
                        help="leave out the app's baked vs lean first boot")
    parser.add_argument("--skip-live", action="store_true",
                        help="leave out the converges over SSH (fresh boxes, fleets)")
    args = parser.parse_args()

    rows: list[tuple[str, ...]] = [
        (name, value, "", "") for name, value in inventory_load(max(args.runs, 5))]
    if args.inventory_only:
        print_table(rows)
        return
    side_by_side(args, rows)
    provisioned, error = measured(boot_with_provisioning, args.runs)
    rows.append((f"boot with PROVISIONING_SCRIPT: ready / on-start done (median of {args.runs})",
                 error or f"{statistics.median(p[0] for p in provisioned):.1f} s / "
                 f"{statistics.median(p[1] for p in provisioned):.1f} s", "", ""))
    box = start_box(NAME, ENV, PORTS)
    try:
        wait_ready(box, ENV["JUPYTER_TOKEN"], timeout=180)
        for program in PROGRAMS:
            times, error = measured(lambda program=program: kill_recovery(box, program), 1)
            wait_ready(box, ENV["JUPYTER_TOKEN"], timeout=180)
            rows.append((f"kill -9 {program}: serving again / RUNNING again",
                         error or f"{times[0][0]:.2f} s / {times[0][1]:.2f} s", "", ""))
    finally:
        remove(NAME)
    if not args.skip_app:
        rows += [(name, value, "", "") for name, value in app_ready_baked_vs_lean()]
    if not args.skip_live:
        rows += live_rows(args.runs)
    print_table(rows)


def print_table(rows: list[tuple[str, ...]]) -> None:
    header = ("measure", "Red", "plain build / seed bash / 1 box", "Red / baseline",
              "goal (issue 11)")
    rows = [tuple(row) + ("",) * (len(header) - len(row)) for row in rows]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * width for width in widths), *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
