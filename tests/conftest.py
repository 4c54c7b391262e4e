"""
Shared by every test tier: the repository root on sys.path (deploy code is imported), and the
box-side library (files/lib/opt/red/lib) for this process and the tools it runs.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "files" / "lib" / "opt" / "red" / "lib"
for _path in (LIB, ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
# The tools' entry points look in /opt/red/lib, absent here: they find the repository's copy.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(LIB), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
