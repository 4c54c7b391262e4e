"""
SSH: OpenSSH's server, key-only, root by key; host keys made per container by its program at
its first start (red-sshd), never baked into an image; authorized_keys filled from the env,
keys already there kept.
"""

import posixpath

from pyinfra.api import deploy
from pyinfra.facts.server import AuthorizedKeys
from pyinfra.operations import files

from operations import _files, settings
from operations.ops import (
    ROOT_AUTHORIZED_KEYS,
    apt_install,
    authorized_keys,
    template,
    upload,
)
from operations.ports import autostart_unless_port_taken
from operations.program import Program, supervisor_program

HOST_KEY_TYPES = ("rsa", "ecdsa", "ed25519")
ROOT_SSH_DIR = posixpath.dirname(ROOT_AUTHORIZED_KEYS)


@_files.up_front
def _asked_every_run() -> None:
    if settings.halves()[1]:
        _files.expect_fact(AuthorizedKeys, user="root", path=ROOT_AUTHORIZED_KEYS)
        _files.expect_with_directories(ROOT_SSH_DIR)


def _host_key_paths():
    for key_type in HOST_KEY_TYPES:
        yield f"/etc/ssh/ssh_host_{key_type}_key"
        yield f"/etc/ssh/ssh_host_{key_type}_key.pub"


@deploy("Set up SSH")
def setup_ssh(runtime: settings.RuntimeSettings, install: bool = True, configure: bool = True,
              building_image: bool = False) -> list[Program]:
    """
    Install and harden sshd and add the users' public keys.

    + runtime: the resolved runtime settings (port, keys)
    + install: run the install half (package, hardening, wrapper)
    + configure: run the configure half (authorized_keys)
    + building_image: drop the host keys the package made, so no two containers share them
    """
    restart_on = []
    if install:
        apt_install(["openssh-server"], name="Install OpenSSH server")
        if building_image:
            _files.expect(*_host_key_paths())
            for path in _host_key_paths():
                files.file(name=f"Remove {path} from the image", path=path, present=False)
        restart_on.append(
            _files.template(
                name="Upload /etc/ssh/sshd_config.d/red.conf",
                src=template("ssh", "/etc/ssh/sshd_config.d/red.conf"),
                dest="/etc/ssh/sshd_config.d/red.conf",
                mode="644",
            )
        )
        upload("ssh", "/opt/red/bin/red-sshd")
    if configure:
        _files.directory(name=f"Create {ROOT_SSH_DIR}", path=ROOT_SSH_DIR, mode="700")
        authorized_keys(
            name="Add public keys from SSH_PUBLIC_KEY/PUBLIC_KEY to /root/.ssh/authorized_keys",
            keys=runtime.ssh_authorized_keys,
        )
    program = build_program(runtime)
    program.restart_on = restart_on
    # Vast's ssh/jupyter modes run their own sshd on the port: ours must not fight it.
    program.autostart = autostart_unless_port_taken(
        "sshd", runtime.sshd_port, settings.PORT_ENV["sshd_port"], configure
    )
    return [supervisor_program(program)]


def build_program(runtime: settings.RuntimeSettings) -> Program:
    """sshd's program for these settings (no pyinfra host needed)."""
    return Program(
        name="sshd",
        command="/opt/red/bin/red-sshd",
        priority=10,
        module=__name__,
        environment={"RED_SSHD_PORT": runtime.sshd_port},
        port_setting="sshd_port",
        port=runtime.sshd_port,
        # Key-only (templates/ssh/etc/ssh/sshd_config.d/red.conf.j2).
        public=True,
    )
