"""
JupyterLab in its own venv (the app's pins conflict with a current Jupyter's), with the app
venv registered as a kernel, a token that is always required, and its supervisor program.
"""

from pyinfra.api import deploy

from operations import _files, settings
from operations.ops import (
    pip_requirements,
    secret,
    shipped_text,
    template,
    upload,
    venv,
    venv_asks,
)
from operations.portal import LOOPBACK, portal_settings
from operations.ports import autostart_unless_port_taken
from operations.program import Program, supervisor_program

KERNEL_NAME = "red-app"
# The distro's python3: Jupyter's pins do not follow the app's Python.
INTERPRETER = "python3"


@_files.up_front
def _asked_every_run() -> None:
    """The Jupyter venv (install half)."""
    if settings.halves()[0]:
        _files.expect_all(*venv_asks(settings.get("jupyter_venv"), INTERPRETER))


@deploy("Set up JupyterLab")
def setup_jupyter(runtime: settings.RuntimeSettings, install: bool = True,
                  configure: bool = True) -> list[Program]:
    """
    Install JupyterLab, register the app kernel, keep the token and describe its program.

    + runtime: the resolved runtime settings (port, token)
    + install: run the install half (venv, packages, kernel, wrapper)
    + configure: run the configure half (the token)
    """
    jupyter_venv = settings.get("jupyter_venv")
    if install:
        venv(name=f"Create the Jupyter venv {jupyter_venv}", path=jupyter_venv,
             python=INTERPRETER)
        pip_requirements(
            name="Install JupyterLab from requirements/jupyter.lock",
            venv=jupyter_venv,
            requirements=shipped_text(settings.get("jupyter_lock")),
            stamp_name="jupyterlab",
        )
        kernel_json = f"{jupyter_venv}/share/jupyter/kernels/{KERNEL_NAME}/kernel.json"
        _files.template(
            name=f"Upload {kernel_json}",
            src=template("jupyter", "/opt/red/jupyter/share/jupyter/kernels/red-app/kernel.json"),
            dest=kernel_json,
            mode="644",
            app_python=f"{settings.get('python_app_venv')}/bin/python",
            python_version=settings.python_version(),
        )
        upload("jupyter", "/opt/red/bin/red-jupyter")
    token_path = settings.secret_path("jupyter_token")
    restart_on = []
    if configure:
        restart_on.append(
            secret(name=f"Keep the Jupyter token in {token_path}", path=token_path,
                   value=runtime.jupyter_token, length=32)
        )
    program = build_program(runtime)
    program.restart_on = restart_on
    # Vast's jupyter mode runs its own Jupyter on JUPYTER_PORT: ours must not fight it.
    program.autostart = autostart_unless_port_taken(
        "jupyter", runtime.jupyter_port, settings.PORT_ENV["jupyter_port"], configure
    )
    return [supervisor_program(program)]


def build_program(runtime: settings.RuntimeSettings, data=settings.get) -> Program:
    """JupyterLab's program for these settings (no pyinfra host needed)."""
    # Behind the front door: on loopback, under the door's path for it.
    door = portal_settings(runtime)
    return Program(
        name="jupyter",
        command="/opt/red/bin/red-jupyter",
        priority=50,
        module=__name__,
        environment={
            "RED_JUPYTER_VENV": data("jupyter_venv"),
            "RED_JUPYTER_PORT": runtime.jupyter_port,
            "RED_JUPYTER_ROOT_DIR": data("jupyter_root_dir"),
            "RED_JUPYTER_TOKEN_FILE": f"{data('secrets_dir')}/jupyter_token",
            "RED_JUPYTER_LISTEN": door.backend_listen,
            "RED_JUPYTER_BASE_URL": door.jupyter_base_url,
        },
        port_setting="jupyter_port",
        port=runtime.jupyter_port,
        # Off loopback only without the front door (or with PORTAL_DIRECT_PORTS): always
        # behind the token.
        public=door.backend_listen != LOOPBACK,
        # Jupyter needs a few seconds to import before it counts as started.
        startsecs=5,
    )
