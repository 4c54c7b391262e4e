"""
What the parts of the Vast inventory share: its one error, its warnings and notes.
"""

from __future__ import annotations

import re
import sys

# One token of printable ASCII: an API key, a host name or address.
TOKEN = re.compile(r"[\x21-\x7e]+")


class VastInventoryError(Exception):
    """
    The inventory cannot be built; the message is one line meant for the operator.
    """

    def __init__(self, message: str):
        # Collapse whitespace: messages quote server replies and OS errors, and the
        # contract is one line on stderr.
        super().__init__(" ".join(str(message).split()))


def warn(message: str) -> None:
    print(f"red inventory: warning: {' '.join(message.split())}", file=sys.stderr)


def say(message: str) -> None:
    print(f"red inventory: {' '.join(message.split())}", file=sys.stderr)
