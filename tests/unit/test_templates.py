"""Templates render for representative data, and supervisor's own parser accepts the result."""

import json

from jinja2 import StrictUndefined
from pyinfra.api.util import get_template
from supervisor.options import ServerOptions

from operations._common import Program, template


def render(concern: str, dest: str, **data) -> str:
    # pyinfra's own template loader, so the test sees what files.template would upload.
    assert get_template(template(concern, dest)).environment.undefined is StrictUndefined
    return get_template(template(concern, dest)).render(**data)


PROGRAMS = [
    Program(name="sshd", command="/opt/red/bin/red-sshd 22022", priority=10),
    Program(
        name="desktop",
        command="/opt/red/bin/red-desktop 1",
        priority=30,
        environment={"HOME": "/root", "XDG_CONFIG_DIRS": "/etc/red/xdg:/etc/xdg"},
    ),
    Program(name="visomaster", command="/opt/red/venv/bin/python main.py", priority=90,
            autostart=False, startsecs=5),
]


def write_config(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    common = {"logs_dir": str(logs), "log_maxbytes": "10MB", "log_backups": 3}
    main = render("supervisor", "/etc/supervisor/supervisord.conf",
                  socket=str(tmp_path / "supervisor.sock"), **common)
    main = main.replace("/etc/supervisor/conf.d/*.conf", f"{conf_d}/*.conf")
    (tmp_path / "supervisord.conf").write_text(main)
    for program in PROGRAMS:
        conf = render("supervisor", "/etc/supervisor/conf.d/program.conf",
                      program=program, **common)
        (conf_d / f"{program.name}.conf").write_text(conf)
    return tmp_path / "supervisord.conf", logs


def test_supervisor_parser_accepts_the_generated_config(tmp_path):
    path, logs = write_config(tmp_path)
    options = ServerOptions()
    options.realize(args=["-c", str(path)])
    groups = {group.name: group for group in options.process_group_configs}
    assert set(groups) == {"sshd", "desktop", "visomaster"}
    desktop = groups["desktop"].process_configs[0]
    assert desktop.environment == {"HOME": "/root", "XDG_CONFIG_DIRS": "/etc/red/xdg:/etc/xdg"}
    assert desktop.stdout_logfile == str(logs / "desktop.log")
    assert desktop.stdout_logfile_maxbytes == 10 * 1024 * 1024
    assert desktop.redirect_stderr and desktop.autorestart
    assert groups["visomaster"].process_configs[0].autostart is False
    assert [g.name for g in sorted(options.process_group_configs)] == [
        "sshd", "desktop", "visomaster"]


def test_control_interface_is_a_root_only_socket_never_tcp(tmp_path):
    path, _ = write_config(tmp_path)
    options = ServerOptions()
    options.realize(args=["-c", str(path)])
    (server,) = options.server_configs
    assert server["family"] == 1  # AF_UNIX
    assert server["chmod"] == 0o700
    assert "inet_http_server" not in path.read_text()


def test_kernel_spec_is_json_pointing_at_the_app_venv():
    dest = "/opt/red/jupyter/share/jupyter/kernels/red-app/kernel.json"
    spec = json.loads(render("jupyter", dest, app_python="/opt/red/venv/bin/python",
                             python_version="3.10"))
    assert spec["argv"][:3] == ["/opt/red/venv/bin/python", "-m", "ipykernel_launcher"]
    assert "3.10" in spec["display_name"]


def test_sshd_config_is_key_only():
    conf = render("ssh", "/etc/ssh/sshd_config.d/red.conf")
    settings = dict(line.split(None, 1) for line in conf.splitlines()
                    if line and not line.startswith("#"))
    assert settings["PasswordAuthentication"] == "no"
    assert settings["KbdInteractiveAuthentication"] == "no"
    assert settings["PermitRootLogin"] == "prohibit-password"
