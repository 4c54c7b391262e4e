"""
JupyterLab in its own venv (the app's pins conflict with a current Jupyter's), with the app
venv registered as a kernel, a token that is always required, and its supervisor program.
"""

from pyinfra.api import deploy
from pyinfra.operations import files

from operations import settings
from operations._common import (
    Program,
    autostart_unless_port_taken,
    pip_requirements,
    secret,
    shipped_text,
    supervisor_program,
    template,
    upload,
    venv,
)

KERNEL_NAME = "red-app"


@deploy("Set up JupyterLab")
def setup_jupyter(runtime: settings.RuntimeSettings, install: bool = True,
                  configure: bool = True, listen: str = "0.0.0.0",  # noqa: S104
                  base_url: str = "/") -> list[Program]:
    """
    Install JupyterLab, register the app kernel, keep the token and describe its program.

    + runtime: the resolved runtime settings (port, token)
    + install: run the install half (venv, packages, kernel, wrapper)
    + configure: run the configure half (the token)
    + listen: Jupyter's address (loopback behind the front door)
    + base_url: Jupyter's base URL (the front door's /jupyter/)
    """
    jupyter_venv = settings.get("jupyter_venv")
    if install:
        venv(name=f"Create the Jupyter venv {jupyter_venv}", path=jupyter_venv, python="python3")
        pip_requirements(
            name="Install JupyterLab from requirements/jupyter.lock",
            venv=jupyter_venv,
            requirements=shipped_text(settings.get("jupyter_lock")),
            stamp_name="jupyterlab",
        )
        kernel_json = f"{jupyter_venv}/share/jupyter/kernels/{KERNEL_NAME}/kernel.json"
        files.template(
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
    program = Program(
        name="jupyter",
        command=(
            f"/opt/red/bin/red-jupyter {jupyter_venv} {runtime.jupyter_port} "
            f"{settings.get('jupyter_root_dir')} {token_path} {listen} {base_url}"
        ),
        priority=50,
        # Vast's jupyter mode runs its own Jupyter on JUPYTER_PORT: ours must not fight it.
        autostart=autostart_unless_port_taken(
            "jupyter", runtime.jupyter_port, "JUPYTER_PORT", configure
        ),
        # Jupyter needs a few seconds to import before it counts as started.
        startsecs=5,
        restart_on=restart_on,
    )
    return [supervisor_program(program)]
