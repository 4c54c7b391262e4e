"""
supervisor: the distro's supervisord runs every service, logs each to /logs/<program>.log and
is controlled through a root-only unix socket. A converge restarts only what changed.
"""

from pyinfra.api import deploy
from pyinfra.operations import server
from pyinfra.operations.util import any_changed

from operations import _files, settings
from operations.facts import SUPERVISORD_PIDFILE, SupervisordRunning
from operations.ops import apt_install, template, upload
from operations.program import Program


@_files.up_front
def _asked_every_run() -> None:
    if settings.halves()[1]:
        _files.expect_fact(SupervisordRunning, socket=settings.get("supervisor_socket"))


@deploy("Set up supervisor")
def setup_supervisor(programs: list[Program], install: bool = True, configure: bool = True):
    """
    Install supervisor and its main config; when supervisord already runs, apply changed
    program configs and restart programs whose inputs changed, leaving the rest alone; when
    it does not, start it (unless the caller starts it itself, as the entrypoint does).

    + programs: every program the other concerns described, with their config ops
    + install: run the install half (package, main config, health check)
    + configure: run the configure half (start supervisord, apply changes)
    """
    socket = settings.get("supervisor_socket")
    if install:
        apt_install(["supervisor"], name="Install supervisor")
    # Both halves, like the program configs: it names the logs dir, which a boot may move (a
    # read-only /logs falls back to another).
    _files.template(
        name="Upload /etc/supervisor/supervisord.conf",
        src=template("supervisor", "/etc/supervisor/supervisord.conf"),
        dest="/etc/supervisor/supervisord.conf",
        mode="644",
        socket=socket,
        pidfile=SUPERVISORD_PIDFILE,
        logs_dir=settings.get("base_logs_dir"),
        log_maxbytes=settings.get("supervisor_log_maxbytes"),
        log_backups=settings.get("supervisor_log_backups"),
    )
    if install:
        for script in ("red-entrypoint", "red-healthcheck"):
            upload("supervisor", f"/opt/red/bin/{script}")
    if not configure:
        return
    if not _files.fact(SupervisordRunning, socket=socket):
        # The entrypoint starts supervisord itself (in the foreground, as PID 1) after the
        # converge; a live box or an on-start script needs it started here.
        if settings.get("supervisor_start"):
            server.shell(
                name="Start supervisord",
                commands=["supervisord -c /etc/supervisor/supervisord.conf"],
            )
        return
    for program in programs:
        server.shell(
            name=f"Apply the changed supervisor program {program.name}",
            commands=["supervisorctl reread >/dev/null", f"supervisorctl update {program.name}"],
            _if=program.conf_op.did_change,
        )
        if program.restart_on:
            server.shell(
                name=f"Restart {program.name} for its changed inputs",
                commands=[f"supervisorctl restart {program.name}"],
                _if=[
                    any_changed(*program.restart_on),
                    lambda program=program: not program.conf_op.did_change(),
                ],
            )
