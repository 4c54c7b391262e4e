"""
The base system: packages every concern relies on, the locale, and the seed's directories.
"""

from pyinfra.api import deploy

from operations import _files, settings
from operations.ops import apt_install, template
from redbox.settings.registry import SETTINGS

BASE_PACKAGES = [
    "ca-certificates",
    "curl",
    "git",
    "iproute2",
    "less",
    "procps",
    "python3",
    "python3-venv",
]


@_files.up_front
def _asked_every_run() -> None:
    """The secrets' files (configure half): the concerns keep them, each in its own op."""
    if settings.halves()[1]:
        _files.expect(*(settings.secret_path(setting.key) for setting in SETTINGS
                        if setting.secret))


@deploy("Set up the base system")
def setup_base(install: bool = True):
    """
    Install the base packages, set a UTF-8 locale and create the seed's directories.

    + install: run the install half (packages); directories are always ensured
    """
    directories = [settings.get(key) for key in ("base_logs_dir", "base_notebooks_dir",
                                                 "base_workspace_dir")]
    _files.expect(*directories, settings.get("secrets_dir"))
    if install:
        apt_install(BASE_PACKAGES, name="Install base packages")
        _files.template(
            name="Upload /etc/default/locale",
            src=template("base", "/etc/default/locale"),
            dest="/etc/default/locale",
            mode="644",
            locale=settings.get("base_locale"),
        )
    # Every service runs as root and writes its own log here; users read them.
    for path in directories:
        _files.directory(name=f"Create {path}", path=path, mode="755")
    _files.directory(name="Create /opt/red/bin", path="/opt/red/bin", mode="755")
    _files.directory(
        name=f"Create {settings.get('secrets_dir')} (root-only)",
        path=settings.get("secrets_dir"),
        mode="700",
    )
