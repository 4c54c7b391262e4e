"""Shared by every test tier: the repository root on sys.path (deploy code is imported)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "files" / "lib" / "opt" / "red" / "lib"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
