"""
Templates render for the deploy's own programs and settings, and supervisor's own parser reads
back exactly what the deploy meant: every named setting, quoted for supervisor, arrives intact
in the wrapper's environment.
"""

import json
import shlex
import subprocess
from pathlib import Path

import pytest
from pyinfra.api import OperationValueError
from supervisor.datatypes import RestartUnconditionally, RestartWhenExitUnexpected

from operations import settings
from operations.program import supervisor_word
from operations.programs import default_programs, programs
from tests.conftest import ROOT, TOOLS
from tests.supervisor_config import parsed, process_configs, render, write_config

# What a --data value could hold: spaces, quotes, supervisor's comment and expansion marks.
NASTY = "/srv/my data; x #1 100% %(here)s it's \"q\" $(id) `id` a,b=c \\ end "


def test_supervisor_parser_accepts_the_deploys_programs(tmp_path):
    deployed = default_programs()
    options = parsed(tmp_path, deployed)
    assert [group.name for group in sorted(options.process_group_configs)] == [
        program.name for program in sorted(deployed, key=lambda program: program.priority)]
    configs = process_configs(tmp_path / "again", deployed)
    desktop = configs["desktop"]
    assert desktop.stdout_logfile.endswith("/logs/desktop.log")
    assert desktop.stdout_logfile_maxbytes == 10 * 1024 * 1024
    assert desktop.redirect_stderr and desktop.stopasgroup and desktop.killasgroup
    for program in deployed:
        argv = shlex.split(configs[program.name].command)
        assert argv == ["/usr/bin/env", *(f"{key}={value}" for key, value in
                                          program.environment.items()), program.command,
                        *map(str, program.args)]


def test_services_always_come_back_and_the_app_stays_closed_when_closed(tmp_path):
    # Read from the deploy's own programs: change autorestart/startretries in operations/ and
    # this fails.
    configs = process_configs(tmp_path, default_programs())
    app = configs.pop("visomaster")
    assert app.autorestart is RestartWhenExitUnexpected and app.exitcodes == [0]
    assert app.startretries == 3 and app.autostart is False and app.startsecs == 5
    assert app.command.endswith(" /opt/red/bin/red-visomaster")
    for name, config in configs.items():
        assert config.autorestart is RestartUnconditionally, name
        assert config.startretries == 1000000 and config.autostart is True, name


def test_named_settings_reach_the_wrapper_intact_through_supervisor(tmp_path):
    # The deploy's own builders, given a secrets dir and a checkout path a user could pass.
    nasty = {"secrets_dir": NASTY, "visomaster_dir": NASTY}
    deployed = programs(settings._resolve({}, data=settings.DEFAULTS.get, cli=set()),
                        data=lambda key: nasty.get(key, settings.DEFAULTS.get(key)))
    configs = process_configs(tmp_path, deployed)
    for program in deployed:
        argv = shlex.split(configs[program.name].command)
        at = argv.index(program.command)
        # The wrapper swapped for env: what the wrapper's environment would hold.
        shown = subprocess.run([*argv[:at], "/usr/bin/env", "-0"], capture_output=True,
                               check=True, env={}).stdout.decode().split("\0")
        env = dict(item.split("=", 1) for item in shown if item)
        assert env == {key: str(value) for key, value in program.environment.items()}
        # Named options (the front door's tools) arrive as the same words.
        assert argv[at + 1:] == [str(arg) for arg in program.args]
    status = next(program for program in deployed if program.name == "status")
    assert status.args[status.args.index("--secrets-dir") + 1] == NASTY
    assert status.args[status.args.index("--app-dir") + 1] == NASTY
    xvnc = next(program for program in deployed if program.name == "xvnc")
    assert xvnc.environment["RED_VNC_PASSWORD_FILE"] == f"{NASTY}/vnc_password"
    # One WIDTHxHEIGHT string, as Xvnc's -geometry takes it.
    assert xvnc.environment["RED_VNC_RESOLUTION"] == "1920x1080"


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "[program:evil]\ncommand=touch /tmp/x"])
def test_a_value_that_would_break_the_config_line_is_refused(value):
    with pytest.raises(OperationValueError):
        supervisor_word(value)


@pytest.mark.parametrize("program", default_programs(), ids=lambda program: program.name)
def test_each_config_names_the_module_that_declares_it(tmp_path, program):
    _, _ = write_config(tmp_path, [program])
    header = (tmp_path / "conf.d" / f"{program.name}.conf").read_text().splitlines()[0]
    assert header.startswith(f"; Managed by Red ({program.source}):")
    assert (ROOT / program.source).is_file()
    assert f'name="{program.name}"' in (ROOT / program.source).read_text()


@pytest.mark.parametrize("program", default_programs(), ids=lambda program: program.name)
def test_each_wrapper_refuses_to_start_without_its_named_settings(program):
    concern = program.module.rsplit(".", 1)[1]
    shipped = ROOT / "files" / concern / program.command.lstrip("/")
    # A shell wrapper shipped by its concern, or a console script of the box library.
    command = ["bash", str(shipped)] if shipped.is_file() else [
        str(TOOLS / Path(program.command).name)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False,
                            env={})
    assert result.returncode != 0
    if program.environment:
        first = next(iter(program.environment))
        assert f"{first}" in result.stderr and "must be set" in result.stderr
    else:
        # A tool that takes named options (argparse) refuses without its required ones.
        assert program.args and "the following arguments are required" in result.stderr


def test_control_interface_is_a_root_only_socket_never_tcp(tmp_path):
    options = parsed(tmp_path, default_programs())
    (server,) = options.server_configs
    assert server["family"] == 1  # AF_UNIX
    assert server["chmod"] == 0o700
    assert "inet_http_server" not in (tmp_path / "supervisord.conf").read_text()


def test_kernel_spec_is_json_pointing_at_the_app_venv():
    dest = "/opt/red/jupyter/share/jupyter/kernels/red-app/kernel.json"
    spec = json.loads(render("jupyter", dest, app_python="/opt/red/venv/bin/python",
                             python_version="3.10"))
    assert spec["argv"][:3] == ["/opt/red/venv/bin/python", "-m", "ipykernel_launcher"]
    assert "3.10" in spec["display_name"]


def test_sshd_config_is_key_only():
    conf = render("ssh", "/etc/ssh/sshd_config.d/red.conf")
    options = dict(line.split(None, 1) for line in conf.splitlines()
                   if line and not line.startswith("#"))
    assert options["PasswordAuthentication"] == "no"
    assert options["KbdInteractiveAuthentication"] == "no"
    assert options["PermitRootLogin"] == "prohibit-password"
