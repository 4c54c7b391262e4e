"""
The box-side runtime: Red's library ``redbox`` (files/lib/opt/red/lib/redbox) at /opt/red/lib,
where the tools in /opt/red/bin find it. It goes on the box before any concern ships a tool.
"""

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Command
from pyinfra.operations import files

from operations._common import static_file

LIB_DIR = "/opt/red/lib"
PACKAGE = f"{LIB_DIR}/redbox"
TOOL_PYTHON = "/opt/red/tool/bin/python3"


@deploy("Set up the box-side library")
def setup_runtime(install: bool = True, configure: bool = True):
    """
    Ship the redbox package; let the tool venv import it.

    + install: run the install half (the package, the tool venv's .pth)
    + configure: run the configure half (nothing: the library reads its settings at run time)
    """
    if not install:
        return
    files.directory(name=f"Create {LIB_DIR}", path=LIB_DIR, mode="755")
    files.sync(
        name=f"Upload {PACKAGE}",
        src=static_file("lib", PACKAGE),
        dest=PACKAGE,
        mode="644",
        dir_mode="755",
        # Bytecode is the box's own business (and differs between Pythons).
        exclude=["*.pyc"],
        exclude_dir=["__pycache__", "*/__pycache__"],
    )
    # The tool venv's site-packages: a .pth there puts the library on its sys.path, for
    # `python -m redbox...`; the tools' entry points add /opt/red/lib themselves.
    site = host.get_fact(
        Command,
        f"{TOOL_PYTHON} -c 'import sysconfig; print(sysconfig.get_path(\"purelib\"))' "
        "2>/dev/null || true",
    )
    if site and site.startswith("/"):
        files.put(
            name=f"Upload {site}/red-lib.pth",
            src=StringIO(f"{LIB_DIR}\n"),
            dest=f"{site}/red-lib.pth",
            mode="644",
        )
    else:
        host.noop(f"no tool venv at {TOOL_PYTHON}: its .pth for {LIB_DIR} is left out")
