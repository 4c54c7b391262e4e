"""Red's deploy, one module per concern; ``deploy.py`` orders them."""

# The deploy imports the box library (box/, the redbox package) as an installed package: the
# controller's venv has it (the README's setup step), a box's tool venv too (runtime.py).
# Faster equivalents of two pyinfra internals (see _speedups): before any op is called.
from operations import _speedups

_speedups.install()
