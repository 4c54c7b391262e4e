"""
The box-side runtime, the same on every box however it was converged: the tool venv
(/opt/red/tool, the locked pyinfra of requirements/tool.lock), the deploy itself at
/opt/red/deploy (the tree the box's own converges run, stamped with its version), and Red's
box library ``redbox`` (the project in box/) built and pip-installed into the tool venv, its
console scripts linked into /opt/red/bin. It goes on the box before any concern ships a tool.
"""

from __future__ import annotations

import hashlib
import io
import shlex
import tarfile
from pathlib import Path

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, deploy, operation

from operations import _files, settings
from operations.ops import TOOL_VENV, pip_requirements, shipped_text, venv, venv_asks
from redbox.provision import DEPLOY_DIR, VERSION_FILE

BIN = "/opt/red/bin"
BOX_PROJECT = "box"
OLD_LIB_DIR = "/opt/red/lib"
TOOL_LOCK = "requirements/tool.lock"
# The deploy's version on the box (VERSION_FILE): a content hash of the tree below (see
# tree_version).
# What a box needs to converge itself: the deploy and everything it reads (not the tests,
# the inventories or the docs). The image's build context (.dockerignore) holds at least this.
DEPLOY_TREE = ("deploy.py", "pyproject.toml", "group_data", "operations", "files", "templates",
               "requirements", BOX_PROJECT)
_SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
# The box library's own tests stay with the controller (and out of the image's context).
BOX_TESTS = Path(BOX_PROJECT, "tests")
# One fixed time for every file of the tarball (the version is by content): a wheel built from
# the copy (the box library) needs one after 1980, zip's epoch.
TREE_MTIME = 946684800  # 2000-01-01
# The tree's packages its runs import (pyinfra runs deploy.py and group_data from source).
IMPORTED = ("operations",)


def uv_pin(lock: str) -> str:
    """The lock's uv pin (``uv==0.13.9``): what bootstraps the tool venv's installs."""
    pins = [line.split()[0] for line in lock.splitlines() if line.startswith("uv==")]
    if len(pins) != 1:
        raise ValueError(f"{TOOL_LOCK} pins uv {len(pins)} times, not once")
    return pins[0]


def tree_files(root: Path, tops: tuple[str, ...] = DEPLOY_TREE) -> list[tuple[str, Path]]:
    """(relative path, path) of every file of the deploy tree under root, sorted."""
    found = []
    for top in tops:
        path = root / top
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        for item in candidates:
            relative = item.relative_to(root)
            if (item.is_file() and not item.name.endswith(".pyc")
                    and not _SKIPPED_DIRS.intersection(relative.parts)
                    and not relative.is_relative_to(BOX_TESTS)):
                found.append((relative.as_posix(), item))
    return sorted(found)


def _mode(path: Path) -> int:
    return 0o755 if path.stat().st_mode & 0o111 else 0o644


def tree_version(root: Path, tops: tuple[str, ...] = DEPLOY_TREE) -> str:
    """The deploy tree's version: a sha256 over each file's path, mode and content."""
    digest = hashlib.sha256()
    for relative, path in tree_files(root, tops):
        content = hashlib.sha256(path.read_bytes()).hexdigest()
        digest.update(f"{relative}\0{_mode(path):o}\0{content}\n".encode())
    return digest.hexdigest()


def tree_tarball(root: Path, version: str) -> io.BytesIO:
    """The deploy tree as a gzipped tar (owner root, normalized modes), its version inside."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        entries = [(relative, path.read_bytes(), _mode(path))
                   for relative, path in tree_files(root)]
        entries.append((VERSION_FILE, f"{version}\n".encode(), 0o644))
        for relative, data, mode in entries:
            info = tarfile.TarInfo(relative)
            info.size, info.mode, info.mtime = len(data), mode, TREE_MTIME
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


@operation()
def deploy_tree(src: str, dest: str):
    """
    Keep a copy of the deploy tree at dest, stamped with its version: replaced as a whole when
    the version differs (a newer controller), else left alone. A converge running from dest
    itself (the box's own) only re-stamps it.

    + src: the deploy tree being run (the repository, or the image build's context)
    + dest: where the box keeps it
    """
    root = Path(src).resolve()
    # Once per run: a fleet's deploy code runs per box, the tree it runs from is the same.
    version = settings.once_per_run(("deploy tree version", root), lambda: tree_version(root))
    # The stamp holds what `echo` wrote: the version and a newline.
    if _files.holds(f"{dest}/{VERSION_FILE}", f"{version}\n".encode()):
        host.noop(f"{dest} is at version {version[:12]}")
        return
    stamp = StringCommand("echo", version, ">", QuoteString(f"{dest}/{VERSION_FILE}"))
    if root == Path(dest).resolve():
        yield stamp
        return
    staging, archive = f"{dest}.new", f"{dest}.tar.gz"
    yield FileUploadCommand(tree_tarball(root, version), archive)
    python = f"{TOOL_VENV}/bin/python3"
    # Extracted beside it, byte-compiled by the Python that runs it (every boot's converge
    # imports it: compiling the deploy at the first boot of each container cost ~0.1 s; a
    # module that does not compile says so when imported), then swapped in: a run cut short
    # never leaves half a tree.
    yield StringCommand(
        "rm -rf", QuoteString(staging), "&& mkdir -p", QuoteString(staging),
        "&& tar -xzf", QuoteString(archive), "--no-same-owner -C", QuoteString(staging),
        "&& rm -f", QuoteString(archive),
        "&& { [ ! -x", QuoteString(python), "] || ( cd", QuoteString(staging), "&&",
        QuoteString(python), "-m compileall -q", *IMPORTED, ">/dev/null ) || true ; }",
        "&& { [ ! -e", QuoteString(dest), "] || mv", QuoteString(dest),
        QuoteString(f"{dest}.old"), "; }",
        "&& mv", QuoteString(staging), QuoteString(dest),
        "&& rm -rf", QuoteString(f"{dest}.old"),
    )


def console_scripts(pyproject: Path) -> list[str]:
    """The names in a pyproject's [project.scripts] (no tomllib: the controller may run 3.10)."""
    names, inside = [], False
    for line in pyproject.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            inside = line.strip() == "[project.scripts]"
        elif inside and "=" in line and not line.lstrip().startswith("#"):
            names.append(line.split("=", 1)[0].strip())
    return names


def script_links() -> dict[str, str]:
    """/opt/red/bin/<tool> -> the tool venv's console script, for each of the box library's."""
    scripts = console_scripts(Path(settings.ROOT) / BOX_PROJECT / "pyproject.toml")
    return {f"{BIN}/{name}": f"{TOOL_VENV}/bin/{name}" for name in scripts}


def readlinks_probe(paths) -> str:
    """A probe printing one line per path: its link target, or nothing (no link there)."""
    quoted = " ".join(shlex.quote(path) for path in paths)
    return f'for p in {quoted}; do printf "%s\\n" "$(readlink "$p")"; done'


@operation()
def links(links: dict[str, str]):
    """
    Symbolic links, answered by one probe for all of them; a file in a link's place is
    replaced (Red's own tools lived there as files before).

    + links: path -> target
    """
    paths = sorted(links)
    probe = readlinks_probe(paths)
    _files.expect_output(probe)
    current = dict(zip(paths, _files.output_of(probe).split("\n"), strict=False))
    wrong = [path for path in paths if current.get(path) != links[path]]
    if not wrong:
        host.noop(f"{len(paths)} links are in place")
        return
    _files.wrote(*wrong)
    yield StringCommand(" && ".join(
        f"ln -sfn {shlex.quote(links[path])} {shlex.quote(path)}" for path in wrong))


@operation()
def remove_old_library():
    """
    Red's library before it was a package (/opt/red/lib, and the tool venv's .pth naming it):
    removed when a box still has it. Red's own files, nothing of the user's.
    """
    if _files.state_of(OLD_LIB_DIR) is None:
        host.noop(f"no {OLD_LIB_DIR}")
        return
    _files.wrote(OLD_LIB_DIR)
    yield StringCommand("rm -rf", QuoteString(OLD_LIB_DIR), "&& rm -f",
                        f"{TOOL_VENV}/lib/python3*/site-packages/red-lib.pth")


@_files.up_front
def _asked_every_run() -> None:
    """The deploy's version stamp, the tool venv, the tools' links (install half)."""
    if settings.halves()[0]:
        _files.expect(f"{DEPLOY_DIR}/{VERSION_FILE}", OLD_LIB_DIR)
        _files.expect_all(*venv_asks(TOOL_VENV, "python3"))
        _files.expect_output(readlinks_probe(sorted(script_links())))


@deploy("Set up the box-side runtime")
def setup_runtime(install: bool = True, configure: bool = True):
    """
    The tool venv with the locked pyinfra, the deploy tree, the box library (redbox) built and
    installed into the tool venv, and its console scripts linked into /opt/red/bin.

    + install: run the install half (all of it)
    + configure: run the configure half (nothing: the library reads its settings at run time)
    """
    if not install:
        return
    # The image build bootstraps this venv from the same lock to run the deploy at all; here
    # the deploy owns it (its stamp), as on a box converged over SSH.
    venv(name=f"Create the tool venv {TOOL_VENV}", path=TOOL_VENV, python="python3")
    pip_requirements(
        name=f"Install the locked pyinfra into {TOOL_VENV}",
        venv=TOOL_VENV,
        requirements=shipped_text(TOOL_LOCK),
        stamp_name="tool",
        uv_from=uv_pin(shipped_text(TOOL_LOCK)),
    )
    deploy_tree(name=f"Copy the deploy to {DEPLOY_DIR} (stamped with its version)",
                src=str(settings.ROOT), dest=DEPLOY_DIR)
    root = Path(settings.ROOT)
    box_version = settings.once_per_run(
        ("box library version", root), lambda: tree_version(root, (BOX_PROJECT,)))
    # Built from the box's copy of the deploy, offline: its build backend is in the lock.
    pip_requirements(
        name=f"Build and install the box library (redbox) into {TOOL_VENV}",
        venv=TOOL_VENV,
        requirements=f"{DEPLOY_DIR}/{BOX_PROJECT}\n",
        pip_args=["--no-deps", "--no-index", "--no-build-isolation", "--reinstall"],
        stamp_key=box_version,
        stamp_name="redbox",
    )
    # The tools' documented paths (supervisor's programs, the seed's contract, users' habits).
    links(name=f"Link the box library's tools into {BIN}", links=script_links())
    remove_old_library(name=f"Remove {OLD_LIB_DIR}, the box library's old place")
