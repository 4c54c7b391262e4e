"""
Red's templates rendered with pyinfra's own loader (what files.template would upload), and a
supervisor config of the deploy's programs read back by supervisor's own parser.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import StrictUndefined
from pyinfra.api.util import get_template
from supervisor.options import ServerOptions

from operations.ops import template
from operations.program import Program

COMMON = {"log_maxbytes": "10MB", "log_backups": 3}


def render(concern: str, dest: str, **data) -> str:
    loaded = get_template(template(concern, dest))
    assert loaded.environment.undefined is StrictUndefined
    return loaded.render(**data)


def write_config(tmp_path: Path, programs: list[Program]) -> tuple[Path, Path]:
    """supervisord.conf and a conf.d/<name>.conf per program under tmp_path; (conf, logs)."""
    logs = tmp_path / "logs"
    logs.mkdir(parents=True)
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    common = {"logs_dir": str(logs), **COMMON}
    main = render("supervisor", "/etc/supervisor/supervisord.conf",
                  socket=str(tmp_path / "supervisor.sock"),
                  pidfile=str(tmp_path / "supervisord.pid"), **common)
    main = main.replace("/etc/supervisor/conf.d/*.conf", f"{conf_d}/*.conf")
    (tmp_path / "supervisord.conf").write_text(main)
    for program in programs:
        conf = render("supervisor", "/etc/supervisor/conf.d/program.conf",
                      program=program, **common)
        (conf_d / f"{program.name}.conf").write_text(conf)
    return tmp_path / "supervisord.conf", logs


def parsed(tmp_path: Path, programs: list[Program]) -> ServerOptions:
    """supervisor's ServerOptions for the programs' configs, as supervisord reads them."""
    path, _ = write_config(tmp_path, programs)
    options = ServerOptions()
    options.realize(args=["-c", str(path)])
    return options


def process_configs(tmp_path: Path, programs: list[Program]) -> dict:
    """Each program's process config as supervisor parsed it, by name."""
    return {group.name: group.process_configs[0]
            for group in parsed(tmp_path, programs).process_group_configs}
