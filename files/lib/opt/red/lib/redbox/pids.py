"""Process checks."""

from __future__ import annotations

import os


def alive(pid) -> bool:
    """True when a process with this pid exists (also one we may not signal)."""
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True
