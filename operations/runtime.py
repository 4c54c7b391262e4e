"""
The box-side runtime, the same on every box however it was converged: the tool venv
(/opt/red/tool, the locked pyinfra of requirements/tool.lock), the deploy itself at
/opt/red/deploy (the tree the box's own converges run, stamped with its version), and Red's
library ``redbox`` (files/lib/opt/red/lib/redbox) at /opt/red/lib, where the tools in
/opt/red/bin find it. It goes on the box before any concern ships a tool.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, deploy, operation

from operations import _files, settings
from operations._common import pip_requirements, shipped_text, static_file, venv, venv_asks
from redbox.provision import DEPLOY_DIR, VERSION_FILE

LIB_DIR = "/opt/red/lib"
PACKAGE = f"{LIB_DIR}/redbox"
TOOL_VENV = "/opt/red/tool"
TOOL_LOCK = "requirements/tool.lock"
# The deploy's version on the box (VERSION_FILE): a content hash of the tree below (see
# tree_version).
# What a box needs to converge itself: the deploy and everything it reads (not the tests,
# the inventories or the docs). The image's build context (.dockerignore) holds at least this.
DEPLOY_TREE = ("deploy.py", "pyproject.toml", "group_data", "operations", "files", "templates",
               "requirements")
_SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
# The tree's packages its runs import (pyinfra runs deploy.py and group_data from source).
IMPORTED = ("operations", "files/lib/opt/red/lib")


def tree_files(root: Path) -> list[tuple[str, Path]]:
    """(relative path, path) of every file of the deploy tree under root, sorted."""
    found = []
    for top in DEPLOY_TREE:
        path = root / top
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        for item in candidates:
            relative = item.relative_to(root)
            if (item.is_file() and not item.name.endswith(".pyc")
                    and not _SKIPPED_DIRS.intersection(relative.parts)):
                found.append((relative.as_posix(), item))
    return sorted(found)


def _mode(path: Path) -> int:
    return 0o755 if path.stat().st_mode & 0o111 else 0o644


def tree_version(root: Path) -> str:
    """The deploy tree's version: a sha256 over each file's path, mode and content."""
    digest = hashlib.sha256()
    for relative, path in tree_files(root):
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
            info.size, info.mode, info.mtime = len(data), mode, 0
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


PYTHON3_VERSION_PROBE = "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'"


@_files.up_front
def _asked_every_run() -> None:
    """The deploy's version stamp, python3's version and the tool venv (install half)."""
    if settings.halves()[0]:
        _files.expect(f"{DEPLOY_DIR}/{VERSION_FILE}")
        _files.expect_output(PYTHON3_VERSION_PROBE)
        _files.expect_all(*venv_asks(TOOL_VENV, "python3"))


@deploy("Set up the box-side runtime")
def setup_runtime(install: bool = True, configure: bool = True):
    """
    The tool venv with the locked pyinfra, the deploy tree, the redbox package and the tool
    venv's .pth for it.

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
    )
    deploy_tree(name=f"Copy the deploy to {DEPLOY_DIR} (stamped with its version)",
                src=str(settings.ROOT), dest=DEPLOY_DIR)
    _files.directory(name=f"Create {LIB_DIR}", path=LIB_DIR, mode="755")
    # Bytecode is the box's own business (and differs between Pythons).
    _files.tree(name=f"Upload {PACKAGE}", src=static_file("lib", PACKAGE), dest=PACKAGE)
    # The tool venv's site-packages (python3's version: the venv is made from it, maybe later
    # in this very run): a .pth there puts the library on its sys.path, for
    # `python -m redbox...`; the tools' entry points add /opt/red/lib themselves.
    version = _files.output_of(PYTHON3_VERSION_PROBE)
    if version:
        site = f"{TOOL_VENV}/lib/python{version}/site-packages"
        _files.put(
            name=f"Upload {site}/red-lib.pth",
            src=StringIO(f"{LIB_DIR}\n"),
            dest=f"{site}/red-lib.pth",
            mode="644",
        )
    else:
        host.noop(f"no python3 on this box yet: the .pth for {LIB_DIR} waits for the next run")
