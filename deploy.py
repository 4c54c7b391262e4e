"""
Red: one deploy for the image build, the container's boot and live Vast boxes.

    pyinfra @local deploy.py -y --data red_phase=install   # docker build: bakes no secrets
    pyinfra @local deploy.py -y                            # boot: applies the environment
    pyinfra inventories/vast.py deploy.py --dry --diff     # live boxes
"""

from operations import settings
from operations.base import setup_base
from operations.desktop import setup_desktop
from operations.jupyter import setup_jupyter
from operations.notebooks import setup_notebooks
from operations.portal import portal_settings, setup_portal
from operations.provisioning import setup_provisioning
from operations.python import setup_python
from operations.ssh import setup_ssh
from operations.supervisor import setup_supervisor
from operations.visomaster import setup_visomaster

phase = settings.get("red_phase")
if phase not in ("install", "configure", "all"):
    raise ValueError(f"red_phase={phase!r}: expected install, configure or all")
install = phase in ("install", "all")
configure = phase in ("configure", "all")
# Building an image resolves no runtime settings: programs get the defaults, secrets and
# host keys are left for the first start.
runtime = settings.runtime() if configure else settings.defaults()

# The front door decides where noVNC and Jupyter listen (loopback behind it).
door = portal_settings(runtime, configure)

setup_base(install=install)
if install:
    setup_python()
programs = [
    *setup_ssh(runtime, install=install, configure=configure,
               building_image=phase == "install"),
    *setup_desktop(runtime, install=install, configure=configure, listen=door.backend_listen),
    *setup_jupyter(runtime, install=install, configure=configure, listen=door.backend_listen,
                   base_url=door.jupyter_base_url),
    *setup_visomaster(install=install, configure=configure),
]
programs += setup_portal(runtime, door, programs, install=install, configure=configure)
setup_provisioning(runtime, install=install, configure=configure)
if install:
    setup_notebooks()
# Last: supervisor applies the program configs the concerns above wrote, restarting only
# what changed.
setup_supervisor(programs, install=install, configure=configure)
