"""
The diagnostic notebooks (the seed's ``/notebooks/find_provisioning_script.ipynb`` and one for
the app and the GPU): troubleshooting only, they install nothing. A user's edited copy is never
overwritten: when Red ships a new version, the edited one is moved aside first and the move is
logged in /logs/startup.log.
"""

import hashlib
import shlex
from pathlib import Path, PurePosixPath

from pyinfra import host
from pyinfra.api import FileUploadCommand, deploy, operation

from operations import _files, settings
from operations.ops import static_file
from redbox.core.log import SHELL_STAMP, SHELL_TIMESTAMP, startup_log

NOTEBOOKS = ("find_provisioning_script.ipynb", "check_visomaster_and_gpu.ipynb")


@_files.declares("dest", "record")
@operation()
def _notebook(src: str, dest: str, record: str, logs_dir: str):
    """
    Upload a notebook unless its user edited it; an edited copy is moved aside, never lost.

    + src: the notebook Red ships
    + dest: where users open it
    + record: a file holding the SHA-256 of what Red shipped to dest last time
    + logs_dir: where startup.log gets a line for each notebook moved aside
    """
    shipped = hashlib.sha256(Path(src).read_bytes()).hexdigest()
    current = _files.sha256_of(dest)

    def recorded(digest: str) -> bool:
        # The record holds what `echo` wrote: a digest and a newline.
        return _files.holds(record, f"{digest}\n".encode())

    remember = f"echo {shipped} > {shlex.quote(record)}"
    if current == shipped:
        if recorded(shipped):
            host.noop(f"{dest} is the notebook Red ships")
        else:
            yield remember
        return
    if current is not None and not recorded(current):
        if recorded(shipped):
            # Red ships the same version as last time: the user's edits stay where they are.
            host.noop(f"{dest} was edited by its user: kept as it is")
            return
        # find_x.ipynb -> find_x.moved-aside-<UTC time>.ipynb: Jupyter still opens it.
        path = PurePosixPath(dest)
        stem_q = shlex.quote(str(path.with_suffix("")))
        suffix_q = shlex.quote(path.suffix) if path.suffix else ""
        yield (
            f"stamp={SHELL_STAMP}; aside={stem_q}.moved-aside-$stamp{suffix_q}; "
            f"n=1; while [ -e \"$aside\" ]; do n=$((n+1)); "
            f"aside={stem_q}.moved-aside-$stamp-$n{suffix_q}; done; "
            f"mv -- {shlex.quote(dest)} \"$aside\" || exit 1; "
            f"line={SHELL_TIMESTAMP}\" notebooks: \"{shlex.quote(dest)}\" differs "
            "from what Red shipped last time (edited?): moved aside to $aside; the new version "
            "is shipped\"; echo \"$line\"; "
            f"{{ echo \"$line\" >> {shlex.quote(startup_log(logs_dir))}; }} 2>/dev/null || true"
        )
    staging = f"{dest}.red-new"
    yield FileUploadCommand(src, staging)
    yield f"chmod 644 {shlex.quote(staging)} && mv -f {shlex.quote(staging)} " \
          f"{shlex.quote(dest)} && {remember}"


@_files.up_front
def _asked_every_run() -> None:
    """Each notebook and its record (install half)."""
    if settings.halves()[0]:
        state_dir = settings.get("notebooks_state_dir")
        _files.expect_with_directories(state_dir, *(
            path for notebook in NOTEBOOKS
            for path in (_dest(notebook), _record(state_dir, notebook))))


def _dest(notebook: str) -> str:
    return f"{settings.get('base_notebooks_dir')}/{notebook}"


def _record(state_dir: str, notebook: str) -> str:
    return f"{state_dir}/{notebook}.sha256"


@deploy("Set up the diagnostic notebooks")
def setup_notebooks():
    """Ship the diagnostic notebooks to the notebooks directory, keeping users' edits."""
    state_dir = settings.get("notebooks_state_dir")
    _files.directory(name=f"Create {state_dir}", path=state_dir, mode="755")
    for notebook in NOTEBOOKS:
        dest = _dest(notebook)
        _notebook(
            name=f"Upload {dest}, moving a user-edited copy aside",
            src=static_file("notebooks", f"/notebooks/{notebook}"),
            dest=dest,
            record=_record(state_dir, notebook),
            logs_dir=settings.get("base_logs_dir"),
        )
