"""Red's deploy, one module per concern; ``deploy.py`` orders them."""

import sys
from pathlib import Path

# The box-side library, imported by the deploy as it is shipped (files/lib -> /opt/red/lib).
LIB = Path(__file__).resolve().parent.parent / "files" / "lib" / "opt" / "red" / "lib"
if str(LIB) not in sys.path:
    sys.path.insert(0, str(LIB))
