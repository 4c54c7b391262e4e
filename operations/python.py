"""
The app's Python: the interpreter VisoMaster needs, from the distro when it ships that version,
and a venv for the app with ipykernel so Jupyter can run it as a kernel.
"""

from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt

from operations import _files, settings
from operations.ops import (
    apt_install,
    forget_apt_lists,
    pip_requirements,
    venv,
    venv_asks,
)
from redbox.settings.registry import BY_KEY

_PYTHON_VERSION_ENV = BY_KEY["python_version"].env[0]

# The Python each distro release ships as python3: the versions apt has without extra sources.
DISTRO_PYTHON = {
    ("Ubuntu", 20): "3.8",
    ("Ubuntu", 22): "3.10",
    ("Ubuntu", 24): "3.12",
    ("Debian", 11): "3.9",
    ("Debian", 12): "3.11",
    ("Debian", 13): "3.13",
}
# Newer Ubuntus get other Pythons from deadsnakes: apt-signed packages with security updates,
# installed like everything else. uv-managed Pythons would come from GitHub release assets,
# which the build machines (and some users' networks) cannot reach.
DEADSNAKES_PPA = "ppa:deadsnakes/ppa"


def python_packages(distro: dict, version: str) -> tuple[list[str], str | None]:
    """
    The apt packages for ``python<version>`` with venv support on a distro, and the PPA they
    need (or None). Raises DeployError naming the setting when the distro cannot provide it.
    """
    name, major = distro.get("name"), distro.get("major")
    packages = [f"python{version}", f"python{version}-venv"]
    native = DISTRO_PYTHON.get((name, major))
    if version == native:
        return packages, None
    if name == "Ubuntu":
        return packages, DEADSNAKES_PPA
    shipped = f"ships Python {native}" if native else "is not a distro Red knows"
    raise DeployError(
        f"python_version={version} cannot be installed: {name} {major} {shipped}. "
        f"Set python_version (--data python_version=X.Y or {_PYTHON_VERSION_ENV}=X.Y)"
        + (f", e.g. to {native}." if native else ".")
    )


@_files.up_front
def _asked_every_run() -> None:
    """The distro and the app venv (install half)."""
    if settings.halves()[0]:
        _files.expect_fact(LinuxDistribution)
        _files.expect_all(*venv_asks(settings.get("python_app_venv"), _interpreter()))


def _interpreter() -> str:
    """The app venv's interpreter, by the name its packages install."""
    return f"python{settings.python_version()}"


@deploy("Set up the app's Python")
def setup_python():
    """
    Install the app's interpreter and create its venv with ipykernel (build time only).
    """
    version = settings.python_version()
    packages, ppa = python_packages(_files.fact(LinuxDistribution), version)
    if ppa:
        apt_install(
            ["software-properties-common", "gpg-agent"], name="Install add-apt-repository"
        )
        apt.ppa(name=f"Add {ppa}", src=ppa)
        forget_apt_lists()
    apt_install(packages, name=f"Install Python {version}")
    app_venv = settings.get("python_app_venv")
    venv(name=f"Create the app venv {app_venv} (Python {version})", path=app_venv,
         python=_interpreter())
    pip_requirements(
        name="Install ipykernel into the app venv",
        venv=app_venv,
        requirements=f"ipykernel=={settings.get('python_ipykernel_version')}\n",
        stamp_name="ipykernel",
    )
