"""Which git refs a user may name (a tag, branch or commit): data for git, never an option."""

from __future__ import annotations

import re

# No leading "-" (an option) or "/"; no spaces, "~^:?*[\\" or "%".
_REF_RE = re.compile(r"[A-Za-z0-9._+@][A-Za-z0-9._/+@-]*")


def valid(ref: str) -> bool:
    """True for a name git accepts as a tag, branch or (abbreviated) commit."""
    return bool(_REF_RE.fullmatch(ref)) and ".." not in ref and "@{" not in ref \
        and not ref.endswith((".lock", "/", "."))
