"""Names for what Red keeps instead of deleting: unique, sibling, stamped with UTC time."""

from __future__ import annotations

import os

from redbox.core.log import stamp as _stamp


def unique(base: str) -> str:
    """base, or base-2, base-3... : the first that does not exist."""
    if not os.path.lexists(base):
        return base
    number = 2
    while os.path.lexists(f"{base}-{number}"):
        number += 1
    return f"{base}-{number}"


def moved_aside(path: str, when: str | None = None) -> str:
    """Where path goes when it is moved aside: ``PATH.moved-aside-<stamp>``, unique."""
    return unique(f"{path}.moved-aside-{when or _stamp()}")


def user_files(path: str, when: str | None = None) -> str:
    """Where copies of a user's files in path go: ``PATH.user-files-<stamp>``, unique."""
    return unique(f"{path}.user-files-{when or _stamp()}")
