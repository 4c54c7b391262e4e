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
from operations.portal import setup_portal
from operations.provisioning import setup_provisioning
from operations.python import setup_python
from operations.runtime import setup_runtime
from operations.ssh import setup_ssh
from operations.supervisor import setup_supervisor
from operations.visomaster import setup_visomaster

# Building an image (red_phase=install) resolves no runtime setting: programs get the
# defaults, secrets and host keys are left for the first start.
runtime = settings.current()
install, configure = settings.halves()

setup_base(install=install)
# Before the concerns that ship tools: they import the box-side library.
setup_runtime(install=install, configure=configure)
if install:
    setup_python()
programs = [
    *setup_ssh(runtime, install=install, configure=configure,
               building_image=runtime.red_phase == "install"),
    *setup_desktop(runtime, install=install, configure=configure),
    *setup_jupyter(runtime, install=install, configure=configure),
    *setup_visomaster(install=install, configure=configure),
]
# The front door hands on the VNC password and Jupyter's token: their changes restart it.
programs += setup_portal(runtime, programs, install=install, configure=configure)
setup_provisioning(runtime, install=install, configure=configure)
if install:
    setup_notebooks()
# Last: supervisor applies the program configs the concerns above wrote, restarting only
# what changed.
setup_supervisor(programs, install=install, configure=configure)
