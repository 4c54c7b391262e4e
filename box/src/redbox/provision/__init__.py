"""
red-provision: converge this box with Red's deploy, and the seed's boot-time flow.

A module a job: runner (`run`: the converge), download and script (fetching and running a
provisioning script), onstart (the boot-time flow), status (`status`), cli (the command line and
its usage); common holds what they share.
"""

# The deploy (operations/) imports these from the package; importing it loads only common.
from redbox.provision.common import DEPLOY_DIR, OWN_SCRIPTS, RUN_ONLY_KEYS, VERSION_FILE

__all__ = ["DEPLOY_DIR", "OWN_SCRIPTS", "RUN_ONLY_KEYS", "VERSION_FILE"]
