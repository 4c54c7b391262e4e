"""JSON state files, written atomically (a reader sees the old file or the new, never half)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile


def read(path: str):
    """The file's JSON; None when it does not exist; {"unreadable": why} when it is broken."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        return {"unreadable": str(error)}


def write(path: str, data, mode: int = 0o644) -> None:
    """Replace path with data as indented, sorted JSON: staged beside it, then renamed."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=2, sort_keys=True)
            stream.write("\n")
        os.chmod(staging, mode)
        os.replace(staging, path)
    except BaseException:
        remove(staging)
        raise


def remove(path: str) -> None:
    """Remove a file that may not exist."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
