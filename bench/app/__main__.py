"""
make bench-app: the app at the network floor (issue 23, item 5). First boot to a working app,
Red's way against a plain seed-style script, on a simulated network, as medians of --runs:

    make bench-app BENCH_APP_ARGS='--link-mbit 1000 --stream-mbit 200 --runs 3'
    .venv/bin/python -m bench.app --help              # as root, from the repository root

The network: two namespaces joined by a veth pair; the servers' end has a tbf qdisc capping
what flows to the box at --link-mbit (times --scale); each server paces each connection to
--stream-mbit (times --scale; 0: no per-stream cap) and delays each new connection's first
byte by --latency-ms. The servers (bench/app/servers.py): the app's repository over git's
smart HTTP, PEP 503 indexes standing in for PyPI, PyTorch's cu124 and NVIDIA's, GitHub's
release URLs answering 302 -> 302 -> a CDN, and CLIP's host. The stand-ins
(bench/app/standins.py) keep the upstream flavor's real names, versions, dependency graph and
wheel file counts, the 57 models' real names, and sizes (bench/app/data.py) times --scale; the
rates are scaled with them, so every transfer takes the time it takes at full size.

Each run, in the box's namespace:
1. Red: the app steps exactly as the deploy plans them for a box whose app is out of state
   (bench/app/converge.py reads them from pyinfra's plan of deploy.py against the @fake
   ``vm_out_of_state`` host, with the stand-ins' URLs as data): the same commands, order and
   overlap (what runs detached with setsid runs in the background here), rewritten only for
   the places: the container's /workspace is a directory of its own, its other paths another
   (its "root"), /opt/red/bin's tools the .venv's console scripts. The flow ends when every
   step has ended (app ready: installed, models and CLIP verified).
   uv's cache is on /workspace and the venv in /opt: two filesystems in a container, so uv
   copies (UV_LINK_MODE=copy; --uv-link-mode hardlink shows what one filesystem would give).
2. recreated: the same steps again on the same workspace (checkout, models, uv's cache, CLIP
   kept) with a fresh root (the venv, /var/lib/red's state files, HOME, /logs): a container
   re-created on the same volume.
3. plain: a seed-style script: git clone; python3.10 -m venv; pip install -r (with NVIDIA's
   index on the command line, see below); python download_models.py (the app's own
   one-at-a-time downloader, tests/fixtures/app_downloader.py); curl the CLIP weights.
After each flow, what it left is checked apart from what its tools say: every model's and
CLIP's SHA-256, torch importable from its venv.

The floor: all the bytes (the wheels uv resolves, the models, CLIP, the repository's pack)
over the link's rate, plus one first-byte delay. The report: per-run figures, the steps of each
flow's median run and where its link ran below half, the bytes each server sent per flow (and
whether any file was fetched twice), the machine's load, the goals, then the last line:

    app ready: Red A s, plain B s, floor C s, Red/floor R, Red/plain P, recreated/first Q

Limits (what is not the real thing):
- No image boots: booting localhost/red:test in the namespace would measure whatever box code
  that image was last built with (an 8-minute build per change) plus the services' boot. The
  box's console scripts run directly (the .venv's, which `make bench-app` brings up to date
  with box/ through `make deps`); pyinfra's own time in a converge (gathering facts, the
  tools' --check probes, the doctor) is not in Red's figure.
- ipykernel (red-app-pip's --also in the converge) is dropped: it has no stand-in.
- Sizes are estimates (bench/app/data.py), not read from the real files. Wheels are stored,
  not compressed, so unpacking writes the wheel's bytes, not the 2-3x a CUDA wheel inflates
  to; a wheel of many small files is larger than its scaled size (its zip headers).
  Everything local that costs per byte (unzip, copies, SHA-256) costs --scale times what it
  does at full size, while network time does not shrink: the report estimates such costs where
  they matter (a re-created container's uv copying the wheels into the venv, and hashing the
  models again where their hash cache is not on the workspace). Per-file costs
  (uv's copy of ~30,000 files, pip's unpacking) are real.
- The plain script's pip: Python 3.10.13's venv brings pip 23.0.1, which refuses PEP 658
  metadata whose Name is spelled unlike the requirement (pypa/pip#12108: pillow vs Pillow),
  and the lean image's Ubuntu 22.04 venv brings pip 22.0.2, which does not read it; the
  indexes serve pip their pages without it, so it reads each wheel's own, as 22.0.2 does.
  The upstream file's ``tensorrt==10.6.0 --extra-index-url https://pypi.nvidia.com`` line: pip
  ignores an index option on a requirement line, and on PyPI tensorrt 10.6.0 is an sdist
  whose build fetches the same wheels from NVIDIA's index, which the stand-ins do not model:
  the plain script gives pip NVIDIA's index on its command line.
- tbf counts frames (headers included) while the floor counts payload bytes; the ACKs travel
  the other way, uncapped. The servers run on the same two CPUs as the box's tools.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from redbox.app import flavors, install  # noqa: E402
from redbox.settings.registry import DEFAULTS  # noqa: E402
from tests import flavor_indexes as fi  # noqa: E402

from . import converge, data, netns, report, standins  # noqa: E402 - ROOT first

PORTS = {"git": 8001, fi.PYPI: 8002, fi.PYTORCH_CU124: 8003, fi.NVIDIA: 8004, "github": 8005,
         "cdn": 8006, "clip": 8007}
TOOLS = ("red-app-checkout", "red-app-pip", "red-app-models", "red-app-clip")
# What a container has before the converge writes there.
CONTAINER_DIRS = ("/logs", "/var/lib/red", "/root", "/opt/red", "/tmp")  # noqa: S108
PYENV = Path("/root/.pyenv/versions")
# The package indexes: what uv installs from its cache in a re-created container.
WHEEL_INDEXES = (fi.PYPI, fi.PYTORCH_CU124, fi.NVIDIA)


# -- the container's places


def setting(name: str):
    return DEFAULTS.get(name)


class Box:
    """One container's places: /workspace is ``workspace``, every other path under ``root``."""

    def __init__(self, root: Path, workspace: Path):
        self.root, self.workspace = root, workspace
        self.base = str(setting("base_workspace_dir")).rstrip("/")
        for path in (*CONTAINER_DIRS, self.base):
            self.place(path).mkdir(parents=True, exist_ok=True)

    def place(self, path: str) -> Path:
        if path == self.base or path.startswith(self.base + "/"):
            return self.workspace / path[len(self.base):].lstrip("/")
        return self.root / path.lstrip("/")


# -- the bench's context


def find_python(version: str) -> Path | None:
    """A python<version> that runs (pyenv's, else the one on PATH)."""
    candidates = sorted(PYENV.glob(f"{version}*/bin/python{version}"), reverse=True)
    found = shutil.which(f"python{version}")
    candidates += [Path(found)] if found else []
    for candidate in candidates:
        if install._answers(str(candidate), version):
            return candidate
    return None


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.link = args.link_mbit * 1e6 / 8 * args.scale  # bytes/s on the simulated wire
        stream = min(args.stream_mbit or args.link_mbit, args.link_mbit)
        self.stream = stream * 1e6 / 8 * args.scale if args.stream_mbit else 0.0
        self.bin = Path(sys.executable).parent
        self.uv = self.bin / "uv"
        self.python: Path | None = None
        self.work = Path()
        self.logs = Path()
        self.net: netns.Network | None = None
        self.servers: subprocess.Popen | None = None
        self.flow: subprocess.Popen | None = None
        self.urls = standins.Urls.at(netns.SERVERS_IP, PORTS)
        self.built: standins.Built | None = None
        self.red: list[tuple[str, bool, str]] = []
        self.asked = 0.0  # the resolved wheels' sizes as bench/app/data.py gives them, scaled

    def say(self, line: str) -> None:
        print(line, flush=True)
        if self.logs != Path():
            with open(self.logs / "bench.log", "a", encoding="utf-8") as handle:
                handle.write(line + "\n")

    # -- setup and teardown

    def preflight(self) -> list[str]:
        problems = []
        if os.geteuid() != 0:
            problems.append("run it as root (network namespaces, tc)")
        for tool in ("ip", "tc", "git", "curl"):
            if not shutil.which(tool):
                problems.append(f"{tool} is not installed")
        for tool in (*TOOLS, "uv"):
            if not (self.bin / tool).exists():
                problems.append(f"{self.bin / tool} is missing (make deps)")
        for version in flavors.UPSTREAM.pythons:
            self.python = find_python(version)
            if self.python:
                break
        if self.python is None:
            problems.append(f"no Python {' or '.join(flavors.UPSTREAM.pythons)} for the "
                            "upstream flavor")
        return problems

    def start(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="red-bench-app-", dir=self.args.work_dir))
        self.logs = self.work / "logs"
        self.logs.mkdir()
        stale = netns.remove_stale()
        if stale:
            self.say(f"removed namespaces of benches no longer running: {', '.join(stale)}")
        started = time.monotonic()
        self.built = standins.build(self.work / "standins", self.args.scale, self.urls)
        self.say(f"stand-ins in {self.work} ({time.monotonic() - started:.1f} s): "
                 f"{len(self.built.wheels)} wheels, {len(self.built.models)} models "
                 f"{report.mb(self.built.model_bytes())} MB, CLIP "
                 f"{report.mb(self.built.clip_bytes())} MB, repository pack "
                 f"{self.built.pack_bytes / 1e3:.0f} kB (scale {self.args.scale:g})")
        self.net = netns.Network(self.link)
        self.net.up()
        config = {"root": str(self.built.root), "host": netns.SERVERS_IP, "ports": PORTS,
                  "indexes": list(standins.INDEXES), "assets_path": standins.ASSETS_PATH,
                  "latency_ms": self.args.latency_ms, "stream_bytes_per_s": self.stream}
        path = self.work / "servers.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        with open(self.logs / "servers.log", "ab") as log:
            self.servers = subprocess.Popen(
                [*self.net.prefix(self.net.servers), sys.executable, "-m", "bench.app.servers",
                 str(path)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, text=True, start_new_session=True)
        self.ask(None, timeout=60)

    def ask(self, command: str | None, timeout: float = 60) -> dict:
        """A command to the servers (None: their first line); their JSON answer."""
        process = self.servers
        if command is not None:
            process.stdin.write(command + "\n")
            process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"the servers did not answer {command or 'at start'} "
                               f"(see {self.logs / 'servers.log'})")
        return json.loads(line)

    def stop(self) -> None:
        stop(self.flow)
        if self.servers is not None:
            with contextlib.suppress(OSError, ValueError):
                self.servers.stdin.close()
            stop(self.servers, grace=5)
        if self.net is not None:
            self.net.down()
        if self.work != Path() and not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)

    # -- the floor

    def resolve(self) -> list[str]:
        """The wheel files uv resolves for the upstream flavor (what the floor counts)."""
        home = self.work / "resolve"
        home.mkdir()
        text = fi.localize(fi.UPSTREAM_REQUIREMENTS.read_text(encoding="utf-8"),
                           self.urls.indexes)
        requirements = home / "requirements.txt"
        requirements.write_text(install.without_line_options(text), encoding="utf-8")
        overrides = home / "overrides.txt"
        overrides.write_text("".join(f"{line}\n" for line in flavors.UPSTREAM.overrides),
                             encoding="utf-8")
        extra = [*install.index_options(text)[1],
                 *(fi.localize(url, self.urls.indexes)
                   for url in flavors.UPSTREAM.extra_index_urls)]
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "UV_NO_CONFIG": "1",
               "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1"}
        done = subprocess.run(
            [*self.net.prefix(self.net.box), str(self.uv), "pip", "compile", "-q",
             "--no-header", "--no-annotate", "--no-cache", "--python", str(self.python),
             str(requirements), "--overrides", str(overrides),
             f"--index-strategy={flavors.UPSTREAM.index_strategy}",
             "--default-index", self.urls.indexes[fi.PYPI],
             *(f"--extra-index-url={url}" for url in dict.fromkeys(extra))],
            capture_output=True, text=True, env=env, timeout=600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"uv pip compile failed: {done.stderr[-2000:]}")
        pins = dict(line.split("==", 1) for line in done.stdout.split()
                    if "==" in line)
        files = []
        for dist in fi.distributions():
            name = standins.wheel_filename(dist)
            if pins.get(fi.normalize(dist.name)) == dist.version and name in self.built.wheels:
                files.append(name)
                self.asked += data.wheel_size(fi.normalize(dist.name))[0] * data.MB \
                    * self.args.scale
        if len(files) != len(pins):
            raise RuntimeError(f"{len(pins)} pins, {len(files)} wheels found for them")
        return files

    def floor(self, wheels: list[str]) -> tuple[float, int]:
        """(seconds, bytes): all the bytes over the link, plus one first-byte delay."""
        count = (sum(self.built.wheels[name] for name in wheels) + self.built.model_bytes()
                 + self.built.clip_bytes() + self.built.pack_bytes)
        return count / self.link + self.args.latency_ms / 1000, count

    # -- the flows

    def environment(self, home: Path, tmp: Path, extra: dict[str, str]) -> dict[str, str]:
        tmp.mkdir(parents=True, exist_ok=True)
        home.mkdir(parents=True, exist_ok=True)
        return {"PATH": f"{self.python.parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                        "/usr/bin:/sbin:/bin",
                "HOME": str(home), "TMPDIR": str(tmp), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
                "GIT_TERMINAL_PROMPT": "0", "NO_COLOR": "1", **extra}

    def plan_red(self) -> None:
        """Red's app steps from the deploy's plan, with the stand-ins' URLs as data."""
        nvidia = fi.localize(flavors.NVIDIA_INDEX, self.urls.indexes)
        commands = converge.plan_commands([
            f"visomaster_repo_url={self.urls.git}", f"visomaster_extra_index_urls={nvidia}",
            f"visomaster_clip_url={self.built.clip_url}",
            f"visomaster_clip_sha256={self.built.clip_sha256}", *self.args.data])
        self.red = converge.app_steps(commands)
        if not self.red:
            raise RuntimeError("the deploy's plan has no app steps: bench/app/converge.py "
                               "no longer reads it")

    def red_steps(self, box: Box, tag: str) -> tuple[list[dict], dict]:
        """Red's steps as the converge runs them, in this container's places."""
        steps = []
        for number, (name, background, script) in enumerate(self.red):
            command = converge.localize(script, lambda path: str(box.place(path)),
                                        str(self.bin))
            steps.append({"name": name, "argv": ["sh", "-c", command], "background": background,
                          "cwd": "/", "log": str(self.logs / f"{tag}-{number}-{name}.log")})
        env = self.environment(box.place("/root"), box.place(CONTAINER_DIRS[-1]), {
            "UV_DEFAULT_INDEX": self.urls.indexes[fi.PYPI],
            # /workspace and /opt are two filesystems in a container: uv copies from its cache.
            "UV_LINK_MODE": self.args.uv_link_mode})
        return steps, env

    def plain_steps(self, box: Box, tag: str) -> tuple[list[dict], dict]:
        app_dir = box.place(setting("visomaster_dir"))
        venv = box.place("/venv")
        app_dir.parent.mkdir(parents=True, exist_ok=True)
        requirements = setting("visomaster_requirements")
        nvidia = fi.localize(flavors.NVIDIA_INDEX, self.urls.indexes)
        clip = f'"$HOME/.cache/clip/{data.CLIP_NAME}"'
        steps = [
            ("clone", ["git", "clone", "-q", self.urls.git, str(app_dir)], "/"),
            ("venv", [str(self.python), "-m", "venv", str(venv)], "/"),
            ("pip", [str(venv / "bin" / "pip"), "install", "-r", requirements,
                     "--extra-index-url", nvidia], str(app_dir)),
            ("models", [str(venv / "bin" / "python"), "download_models.py"], str(app_dir)),
            ("clip", ["sh", "-c", f'mkdir -p "$HOME/.cache/clip" && curl -sSfL -o {clip} '
                                  f"{self.built.clip_url}"], "/"),
        ]
        env = self.environment(box.place("/root"), box.place(CONTAINER_DIRS[-1]), {
            "PIP_INDEX_URL": self.urls.indexes[fi.PYPI],
            "PIP_CACHE_DIR": str(box.place("/root/.cache/pip")),
            # The stand-ins answer plain HTTP (the real indexes are HTTPS).
            "PIP_TRUSTED_HOST": netns.SERVERS_IP,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"})
        return [{"name": name, "argv": argv, "background": False, "cwd": cwd,
                 "log": str(self.logs / f"{tag}-{number}-{name}.log")}
                for number, (name, argv, cwd) in enumerate(steps)], env

    def run_flow(self, tag: str, steps: list[dict], env: dict) -> dict:
        """One flow in the box's namespace; its result with the servers' counters."""
        spec = self.work / f"{tag}.json"
        result = self.work / f"{tag}-result.json"
        spec.write_text(json.dumps({"steps": steps, "env": env, "result": str(result),
                                    "timeout": self.args.flow_timeout}), encoding="utf-8")
        self.ask("reset")
        load = os.getloadavg()[0]
        with open(self.logs / f"{tag}-runner.log", "ab") as log:
            self.flow = subprocess.Popen(
                [*self.net.prefix(self.net.box), sys.executable, "-m", "bench.app.flows",
                 str(spec)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        try:
            self.flow.wait(timeout=self.args.flow_timeout + 60)
        finally:
            stop(self.flow)
            self.flow = None
        stats = self.ask("stats")
        if not result.exists():
            raise RuntimeError(f"flow {tag} left no result "
                               f"(see {self.logs / (tag + '-runner.log')})")
        outcome = json.loads(result.read_text(encoding="utf-8"))
        outcome["stats"] = stats
        outcome["load"] = (load, os.getloadavg()[0])
        outcome["steps"] = report.label_steps(outcome["steps"])
        return outcome

    # -- checks after a flow (not timed)

    def check_app(self, outcome: dict, app_dir: Path, venv: Path, clip: Path) -> list[str]:
        """What a flow left, checked apart from what its tools say (not timed)."""
        problems = [f"{step['label']} exited {step.get('rc')} (log {step['log']})"
                    for step in outcome["steps"] if step.get("rc") != 0]
        bad = [model["name"] for model in self.built.models
               if sha256_of(app_dir / model["path"]) != model["sha256"]]
        if bad:
            problems.append(f"{len(bad)} model files missing or wrong: {', '.join(bad[:5])}")
        if sha256_of(clip) != self.built.clip_sha256:
            problems.append(f"the CLIP weights are missing or wrong at {clip}")
        done = subprocess.run([str(venv / "bin" / "python"), "-c",
                               "import torch, tensorrt; print(torch.__version__)"],
                              capture_output=True, text=True, check=False)
        if done.stdout.strip() != "2.4.1+cu124":
            problems.append(f"torch in {venv}: {done.stdout.strip() or done.stderr[-200:]}")
        return problems

    def red_details(self, box: Box, outcome: dict) -> None:
        """What Red's tools wrote about each step (their logs and state files)."""
        logs = box.place(setting("base_logs_dir"))
        pip_log = read(logs / "visomaster-pip.log")
        models = read_json(box.place(setting("visomaster_models_state")))
        clip = next((found for found in (report.tool_json(line, "verified") for line in
                                         read(logs / "visomaster-models.log").splitlines())
                     if found and found.get("tool") == "red-app-clip"), None)
        servers = outcome["stats"]["servers"]
        for step in outcome["steps"]:
            if step["name"] == "pip":
                step["uv"] = report.uv_phases(pip_log)
            elif step["name"] == "models":
                step["models"] = {"verified": models.get("checked"),
                                  "files": len(servers["cdn"]["files"]),
                                  "bytes": sum(entry[1] for entry in
                                               servers["cdn"]["files"].values())}
            elif step["name"] == "clip":
                step["clip"] = {**(clip or {}), "bytes": servers["clip"]["bytes"]}

    def one_run(self, number: int) -> dict:
        run_dir = self.work / f"run{number}"
        workspace = run_dir / "workspace"
        outcomes = {}
        for name in ("red", "recreated"):
            box = Box(run_dir / f"root-{name}", workspace)
            steps, env = self.red_steps(box, f"run{number}-{name}")
            outcome = self.run_flow(f"run{number}-{name}", steps, env)
            self.red_details(box, outcome)
            outcome["problems"] = self.check_app(
                outcome, box.place(setting("visomaster_dir")),
                box.place(setting("python_app_venv")),
                box.place(setting("visomaster_clip_dir")) / data.CLIP_NAME)
            outcomes[name] = outcome
        outcomes["recreated"]["hashed_models"] = self.built.model_bytes() \
            if not _on_workspace(setting("visomaster_models_cache")) else 0
        plain = Box(run_dir / "plain-root", run_dir / "plain-workspace")
        steps, env = self.plain_steps(plain, f"run{number}-plain")
        outcomes["plain"] = self.run_flow(f"run{number}-plain", steps, env)
        outcomes["plain"]["problems"] = self.check_app(
            outcomes["plain"], plain.place(setting("visomaster_dir")), plain.place("/venv"),
            plain.place(f"/root/.cache/clip/{data.CLIP_NAME}"))
        if not self.args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        return outcomes


def read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def read_json(path: Path) -> dict:
    try:
        found = json.loads(read(path) or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _on_workspace(path: str) -> bool:
    base = str(setting("base_workspace_dir")).rstrip("/")
    return path.startswith(base + "/")


def sha256_of(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def sha256_rate() -> float:
    """This machine's SHA-256 bytes/s on one core (for the full-size estimates)."""
    block = os.urandom(64 * 1024 * 1024)
    started = time.perf_counter()
    hashlib.sha256(block).hexdigest()
    return len(block) / (time.perf_counter() - started)


def copy_rate() -> float:
    """This machine's file copy bytes/s on the bench's own filesystem (/var/tmp)."""
    with tempfile.TemporaryDirectory(prefix="red-bench-copy-", dir="/var/tmp") as directory:
        source, target = Path(directory) / "a", Path(directory) / "b"
        source.write_bytes(os.urandom(256 * 1024 * 1024))
        started = time.perf_counter()
        shutil.copyfile(source, target)
        with open(target, "rb+") as handle:
            os.fsync(handle.fileno())
        return source.stat().st_size / (time.perf_counter() - started)


def stop(process: subprocess.Popen | None, grace: float = 15) -> None:
    """End a process the bench started, and its session: SIGTERM, then SIGKILL."""
    if process is None or process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# -- the report


def step_rows(outcome: dict, scale: float) -> list[list[str]]:
    rows = []
    for step in outcome["steps"]:
        rows.append([step["label"], f"{step['start']:.1f}", f"{step.get('end', 0):.1f}",
                     f"{step.get('end', 0) - step['start']:.1f}", detail(step, scale)])
    return rows


def detail(step: dict, scale: float) -> str:
    """What a step did, from its tool's records and the servers' counters."""
    if step.get("uv"):
        return "uv: " + ", ".join(f"{phase} {count} in {seconds:.1f} s"
                                  for phase, (count, seconds) in step["uv"].items())
    if step.get("models") and step["background"]:
        found = step["models"]
        return (f"the CDN sent {found['files']} files, {found['bytes'] / 1e6:.1f} MB "
                f"({found['bytes'] / scale / 1e9:.2f} GB full size) in the flow")
    if step.get("models"):
        return f"{step['models']['verified']} files verified at its end"
    if step.get("clip"):
        found = step["clip"]
        return (f"{'verified' if found.get('verified') else 'NOT verified'}; the CLIP server "
                f"sent {found['bytes'] / 1e6:.1f} MB in the flow")
    return ""


def full_size_estimates(say, runs: list[dict], scale: float, red: float,
                        recreated: float) -> None:
    """What --scale shrinks in a re-created container, at full size on this machine."""
    hashed = report.median(run["recreated"].get("hashed_models", 0) for run in runs)
    if hashed:
        rate = sha256_rate()
        extra = hashed / scale / rate - hashed / rate
        say(f"full size, not simulated: the re-created container hashes the models again "
            f"({hashed / scale / 1e9:.1f} GB; visomaster_models_cache is not on the "
            f"workspace): "
            f"about {extra:.0f} s more at this machine's SHA-256 rate ({rate / 1e6:.0f} MB/s), "
            f"recreated/first about {(recreated + extra) / red:.2f}")
    # uv's copy from its cache into the venv (two filesystems in a container): per byte, so
    # --scale shrinks it; at least the wheels' bytes (a CUDA wheel unpacks to 2-3x them).
    wheels = report.median(sum(run["red"]["stats"]["servers"][index]["bytes"]
                               for index in WHEEL_INDEXES) for run in runs)
    rate = copy_rate()
    extra = wheels / scale / rate - wheels / rate
    say(f"full size, not simulated: the re-created container's uv copies at least "
        f"{wheels / scale / 1e9:.1f} GB from its cache into the venv: about {extra:.0f} s "
        f"more at this machine's copy rate ({rate / 1e6:.0f} MB/s), recreated/first about "
        f"{(recreated + extra) / red:.2f}")


def print_report(bench: Bench, runs: list[dict], floor: tuple[float, int]) -> None:
    say, args = bench.say, bench.args
    totals = {name: [run[name]["seconds"] for run in runs] for name in ("red", "recreated",
                                                                        "plain")}
    red, plain = report.median(totals["red"]), report.median(totals["plain"])
    recreated = report.median(totals["recreated"])
    floor_s, floor_bytes = floor
    say("")
    say(f"network: link {args.link_mbit:g} Mbit/s, "
        f"{f'{args.stream_mbit:g} Mbit/s per stream' if args.stream_mbit else 'no per-stream cap'}"
        f", first byte after {args.latency_ms:g} ms per connection; sizes x{args.scale:g}, rates "
        f"with them (wire: {bench.link * 8 / 1e6:.2f} Mbit/s)")
    if args.data or args.uv_link_mode != "copy":
        say("what-if: " + ", ".join([*args.data, *([f"uv links by {args.uv_link_mode}"]
                                                  if args.uv_link_mode != "copy" else [])]))
    say(f"floor: {floor_bytes / 1e6:.1f} MB ({floor_bytes / args.scale / 1e9:.2f} GB full size) "
        f"/ the link + {args.latency_ms:g} ms = {floor_s:.1f} s")
    say("")
    say("per run (s):")
    rows = [[f"run {n + 1}", f"{run['red']['seconds']:.1f}", f"{run['recreated']['seconds']:.1f}",
             f"{run['plain']['seconds']:.1f}"] for n, run in enumerate(runs)]
    rows.append(["median", f"{red:.1f}", f"{recreated:.1f}", f"{plain:.1f}"])
    for line in report.table(rows, ["", "Red", "recreated", "plain"]):
        say("  " + line)
    for name in ("red", "recreated", "plain"):
        middle = sorted(runs, key=lambda run, name=name: run[name]["seconds"])[len(runs) // 2]
        outcome = middle[name]
        say("")
        say(f"{name}: steps of the median run ({outcome['seconds']:.1f} s; seconds from the "
            "flow's start)")
        for line in report.table(step_rows(outcome, args.scale),
                                 ["step", "start", "end", "took", ""]):
            say("  " + line)
        use = report.link_use(outcome["stats"]["samples"], outcome["stats"]["sample_seconds"],
                              bench.link, outcome["seconds"])
        spans = "; ".join(
            f"{start:.1f}-{end:.1f} s ("
            f"{', '.join(report.running_at(outcome['steps'], start, end)) or 'nothing running'})"
            for start, end in use["low"]) or "none"
        say(f"  link: {use['average']:.0%} of it on average, >= 80% busy for "
            f"{use['busy']:.0%} of the time; below half for 1 s or more: {spans}")
    say("")
    say("bytes each server sent (median of the runs, MB here / GB at full size; requests):")
    rows = []
    for server in PORTS:
        row = [server]
        for name in ("red", "recreated", "plain"):
            sent = report.median(run[name]["stats"]["servers"][server]["bytes"] for run in runs)
            asked = report.median(run[name]["stats"]["servers"][server]["requests"]
                                  for run in runs)
            row.append(f"{sent / 1e6:.2f} / {sent / args.scale / 1e9:.2f}; {asked:.0f}")
        rows.append(row)
    for line in report.table(rows, ["server", "Red", "recreated", "plain"]):
        say("  " + line)
    say("")
    twice = [f"run {n + 1} {name}: {line}" for n, run in enumerate(runs)
             for name in ("red", "recreated", "plain")
             for line in report.duplicates(run[name]["stats"]["servers"])]
    say("files fetched more than once: " + ("; ".join(twice) if twice else "none"))
    problems = [f"run {n + 1} {name}: {line}" for n, run in enumerate(runs)
                for name in ("red", "recreated", "plain") for line in run[name]["problems"]]
    say("flows that did not end with a working app: " + ("; ".join(problems) if problems
                                                         else "none"))
    full_size_estimates(say, runs, args.scale, red, recreated)
    loads = [value for run in runs for name in ("red", "recreated", "plain")
             for value in run[name]["load"]]
    cpus = os.cpu_count() or 1
    say(f"this machine's load (1-minute average, the bench's own work included; {cpus} CPUs) at "
        f"the flows' starts and ends: {min(loads):.1f} to {max(loads):.1f}"
        + (" -- above the CPU count: other work was running, the figures are noisier"
           if max(loads) > cpus else ""))
    say("")
    for line in report.goals(red, plain, floor_s, recreated):
        say(line)
    say(report.last_line(red, plain, floor_s, recreated))


# -- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench-app", description="First boot to a working app: "
                                "Red against a plain script and the floor, on a simulated "
                                "network (see bench/app/__main__.py's docstring).")
    p.add_argument("--link-mbit", type=float, default=1000,
                   help="the link's rate at full size, Mbit/s (default 1000)")
    p.add_argument("--stream-mbit", type=float, default=0,
                   help="each connection's cap at full size, Mbit/s (default 0: none)")
    p.add_argument("--latency-ms", type=float, default=50,
                   help="first-byte delay of each new connection (default 50)")
    p.add_argument("--scale", type=float, default=0.01,
                   help="sizes and rates times this (default 0.01)")
    p.add_argument("--runs", type=int, default=3, help="runs; medians are reported (default 3)")
    p.add_argument("--flow-timeout", type=float, default=3600,
                   help="seconds one flow may take (default 3600)")
    p.add_argument("--work-dir", default="/var/tmp",  # noqa: S108 - a parent, mkdtemp's
                   help="where the bench's directory is made (default /var/tmp)")
    p.add_argument("--keep", action="store_true", help="keep the bench's directory")
    p.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for the deploy's plan of Red's steps, as `pyinfra --data` "
                        "takes it (visomaster_models_streams=8): what-ifs")
    p.add_argument("--uv-link-mode", choices=("copy", "hardlink"), default="copy",
                   help="how uv puts files from its cache into Red's venv: copy (default: the "
                        "cache on the /workspace volume, the venv in /opt, two filesystems) "
                        "or hardlink (as if both were on one)")
    a = p.parse_args(argv)
    if a.link_mbit <= 0 or a.stream_mbit < 0 or a.latency_ms < 0:
        p.error("--link-mbit must be > 0, --stream-mbit and --latency-ms >= 0")
    if not 0 < a.scale <= 1:
        p.error("--scale must be in (0, 1]")
    if a.runs < 1:
        p.error("--runs must be >= 1")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    problems = bench.preflight()
    if problems:
        for line in problems:
            print(f"bench-app: {line}", file=sys.stderr)
        return 2

    def terminate(*_args) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, terminate)
    try:
        bench.start()
        bench.plan_red()
        bench.say("Red's app steps (the deploy's plan): " + ", ".join(
            name + (" (background)" if background else "") for name, background, _ in bench.red))
        wheels = bench.resolve()
        floor = bench.floor(wheels)
        bench.say(f"uv resolves {len(wheels)} wheels, "
                  f"{sum(bench.built.wheels[name] for name in wheels) / 1e6:.1f} MB (their "
                  f"estimated sizes: {bench.asked / 1e6:.1f} MB); floor {floor[0]:.1f} s")
        runs = []
        for number in range(1, args.runs + 1):
            outcome = bench.one_run(number)
            runs.append(outcome)
            bench.say(f"run {number}/{args.runs}: Red {outcome['red']['seconds']:.1f} s, "
                      f"recreated {outcome['recreated']['seconds']:.1f} s, plain "
                      f"{outcome['plain']['seconds']:.1f} s"
                      + "".join(f"; {name}: {', '.join(outcome[name]['problems'])}"
                                for name in outcome if outcome[name]["problems"]))
        print_report(bench, runs, floor)
        if args.keep:
            bench.say(f"kept: {bench.work}")
        return 0
    except KeyboardInterrupt:
        print("bench-app: interrupted; cleaning up", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        print(f"bench-app: {error}", file=sys.stderr)
        return 1
    finally:
        bench.stop()


if __name__ == "__main__":
    sys.exit(main())
