"""Red's deploy, one module per concern; ``deploy.py`` orders them."""

import sys
from pathlib import Path

# The box-side library, laid out by destination (/opt/red/lib/redbox on the box): the
# deploy imports the very package its tools use.
BOX_LIB = Path(__file__).resolve().parent.parent / "files" / "lib" / "opt" / "red" / "lib"
if str(BOX_LIB) not in sys.path:
    sys.path.insert(0, str(BOX_LIB))

# Faster equivalents of two pyinfra internals (see _speedups): before any op is called.
from operations import _speedups  # noqa: E402

_speedups.install()
