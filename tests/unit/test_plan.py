"""
Plan-level tests (tests/plan.py): the real deploy on @fake hosts, each answering the distro fact
like a real release.
"""

import re

import pytest

from operations.programs import default_programs
from tests.conftest import ROOT
from tests.plan import plan as run_plan


def plan(group: str, *data: str) -> tuple[int, list[str], str]:
    return run_plan(group, data=data)


def installs(commands: list[str]) -> list[str]:
    return [command for command in commands if " install --no-install-recommends " in command]


def test_ubuntu_2204_installs_python_310_from_apt():
    code, commands, output = plan("ubuntu_2204", "red_phase=install")
    assert code == 0, output
    assert any(command.endswith("install --no-install-recommends python3.10 python3.10-venv")
               for command in installs(commands))
    assert "python3.10 -m venv /opt/red/venv" in commands
    assert not any("apt-add-repository" in command for command in commands)


def test_debian_12_uses_the_overridden_version():
    code, commands, output = plan("debian_12", "red_phase=install")
    assert code == 0, output
    assert any(command.endswith("python3.11 python3.11-venv") for command in installs(commands))
    assert "python3.11 -m venv /opt/red/venv" in commands
    assert not any("python3.10" in command for command in commands)


def test_newer_ubuntu_gets_python_310_from_deadsnakes():
    code, commands, output = plan("ubuntu_2404", "red_phase=install")
    assert code == 0, output
    ppa = commands.index("apt-add-repository -y ppa:deadsnakes/ppa")
    python = next(i for i, c in enumerate(commands) if c.endswith("python3.10 python3.10-venv"))
    # The lists are refreshed between adding the PPA and installing from it.
    assert any(c == "apt-get update" for c in commands[ppa:python])


def test_distro_without_the_version_stops_naming_the_setting():
    code, commands, output = plan("debian_12_default", "red_phase=install")
    assert code != 0
    assert "python_version=3.10 cannot be installed: Debian 12 ships Python 3.11" in output
    assert not installs(commands)


def test_image_build_bakes_no_secret_and_no_host_key():
    # openssh-server's package made host keys: the build removes them.
    code, commands, output = plan("debian_12_with_host_keys", "red_phase=install")
    assert code == 0, output
    assert "rm -f /etc/ssh/ssh_host_ed25519_key" in commands
    assert not any("ssh-keygen" in c or "/dev/urandom" in c for c in commands)


@pytest.mark.parametrize("group", ["ubuntu_2204", "debian_12"])
def test_first_start_makes_secrets_without_showing_them(group):
    secret = "Zq7-unique-vnc"
    code, commands, output = plan(group, "red_phase=configure", f"vnc_password={secret}")
    assert code == 0, output
    # No VNC password was given as data for Jupyter: its token is generated on the box.
    assert any("/dev/urandom" in c and "/etc/red/secrets/jupyter_token" in c for c in commands)
    assert "simulating put_file on @fake" in output and "vnc_password.new" in output
    assert secret not in output
    assert not installs(commands)


def test_host_keys_are_made_by_sshds_program_before_sshd_starts():
    # Not before supervisord (the boot's foreground): sshd's own start makes the missing ones.
    wrapper = (ROOT / "files/ssh/opt/red/bin/red-sshd").read_text().splitlines()
    keygen = wrapper.index("ssh-keygen -A")
    start = next(index for index, line in enumerate(wrapper) if "exec /usr/sbin/sshd" in line)
    assert "set -euo pipefail" in wrapper and keygen < start


def test_configure_phase_installs_nothing():
    code, commands, output = plan("ubuntu_2204", "red_phase=configure")
    assert code == 0, output
    assert not installs(commands)
    assert not any("pip install" in c or "apt-get update" in c for c in commands)


@pytest.mark.parametrize("phase", ["install", "configure"])
def test_the_deploy_writes_a_config_for_every_program_of_the_registry_and_no_other(phase):
    # tests, the bench and the deploy share operations/programs.py's list: it must be the one
    # the deploy applies.
    code, _, output = plan("debian_12", f"red_phase={phase}")
    assert code == 0, output[-3000:]
    written = set(re.findall(r"/etc/supervisor/conf\.d/(\w+)\.conf", output))
    assert written == {program.name for program in default_programs()}


APP_OFF = ("visomaster_checkout=false", "visomaster_install_requirements=false",
           "visomaster_download_models=false")


def test_a_dry_run_asks_the_box_at_once_not_once_per_op():
    # --dry runs each op's body when the deploy calls it, before the later ops have said what
    # they read: what the concerns declare up front makes it one question (18 before). On a
    # box with python3 a second asks for the tool venv's .pth (its path names the version).
    result = run_plan("debian_12", data=APP_OFF, dry=True)
    assert result.code == 0, result.output[-3000:]
    questions = [line for line in result.output.splitlines()
                 if "Loaded fact operations._files.BoxState" in line]
    assert len(questions) == 1, "\n".join(line[:300] for line in questions)
    for path in ("/etc/red/secrets/vnc_password", "/root/.ssh", "/opt/red/venv/pyvenv.cfg",
                 "/opt/red/jupyter/pyvenv.cfg", "/root/Desktop", "/var/lib/red/status",
                 "/var/lib/red/notebooks/check_visomaster_and_gpu.ipynb.sha256"):
        assert f"'{path}'" in questions[0], path
