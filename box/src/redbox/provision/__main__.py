"""python -m redbox.provision: what the red-provision console script runs."""

import sys

from redbox.provision.cli import main

sys.exit(main())
