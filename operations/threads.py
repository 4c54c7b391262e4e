"""
Thread caps on a starved host (the rule: ``redbox.core.threads``). Where the box's pids budget
is far below what thread pools sized to its visible cores take, the pools' variables go into
Red's block of /etc/environment and /etc/profile.d/red.sh (operations/provisioning.py: SSH
sessions, Jupyter terminals) and into the environment of the programs that run such pools
(``supervisor_program`` adds them). Each converge decides again from the host it runs on: on a
healthy host none are written, so caps a box had elsewhere disappear, and a program's config
changes (and so restarts it) only when its caps do. A variable in the container's own env is
the user's: never capped.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.connectors.local import LocalConnector

from operations import _files, settings
from redbox.core import threads

# The programs whose processes run thread pools or start what does: the app, Jupyter (its
# kernels and terminals), the desktop (its terminals) and the box tools the programs run.
CAPPED_PROGRAMS = frozenset({"visomaster", "jupyter", "desktop", "portal", "status"})


class HostLimits(FactBase):
    """
    Returns the box's pids budget, visible cores and CPU quota as
    ``redbox.core.threads.HostLimits(pids_max, cores, quota)``, each None when unlimited or
    unreadable: its cgroup's pids.max and cpu.max (v2; else v1's pids.max and cfs files) and
    nproc. One read-only shell, asked with the converge's batch.
    """

    def command(self) -> str:
        files = " ".join(f"/{path}" for path in threads.CGROUP_FILES)
        # GNU nproc answers OMP_NUM_THREADS when it is set (a capped session's): not the cores.
        return (f"for f in {files}; do [ -r \"$f\" ] && printf '%s\\t%s\\n' \"$f\" "
                "\"$(cat \"$f\")\"; done; "
                "printf 'cores\\t%s\\n' \"$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)\"")

    def process(self, output) -> threads.HostLimits:
        files, cores = {}, None
        for line in output:
            name, _, text = line.partition("\t")
            if name == "cores" and text.strip().isdigit():
                cores = int(text)
            elif name.startswith("/"):
                files[name[1:]] = text
        return threads.limits_from(files, cores)


@_files.up_front
def _asked_every_run() -> None:
    """The host's limits and, in the box itself, PID 1's env (configure half)."""
    if settings.halves()[1]:
        _files.expect_fact(HostLimits)
        if host.connector_cls is LocalConnector:
            _files.expect_fact(settings.ContainerEnvironment)


def caps() -> dict[str, str]:
    """This host's thread caps ({}: a healthy host, or an image build, which reads no host)."""
    if not settings.halves()[1]:
        return {}
    return settings.once_per_host("thread caps", _decide)


def program_caps(name: str) -> dict[str, str]:
    """The caps a program gets in its environment ({} for one that runs no thread pools)."""
    return caps() if name in CAPPED_PROGRAMS else {}


def _decide() -> dict[str, str]:
    limits = _files.fact(HostLimits) or threads.HostLimits(None, None, None)
    found, reason = threads.thread_caps(*limits, user_env=_container_environment())
    if reason:
        settings.record([reason], topic="threads")
    return found


def _container_environment() -> dict[str, str]:
    """
    What the container was started with (PID 1's env). In the box, not the converge's own: one
    run from an SSH session has this block's caps in it, which are no user's choice.
    """
    if host.connector_cls is LocalConnector:
        return _files.fact(settings.ContainerEnvironment) or {}
    return settings.runtime_environment()
