"""Vast's conventions the deploy meets: session env through PAM, launch modes, port holders."""

import os
import shutil
import socket
import subprocess

import pytest

from operations.facts import PortListeners, SupervisordRunning, VastLaunchMode
from operations.provisioning import _pam_environment


def test_pam_environment_quotes_values_and_skips_what_pam_cannot_read():
    lines, notes = _pam_environment({
        "SSH_PORT": "22", "PROVISIONING_SCRIPT": "https://x.example/p.sh?a=1&b=2",
        "BAD": 'say "hi"', "MONEY": "$HOME", "TWO": "a\nb",
    })
    assert lines == ['SSH_PORT="22"', 'PROVISIONING_SCRIPT="https://x.example/p.sh?a=1&b=2"']
    assert [note.split()[0] for note in notes] == ["BAD", "MONEY", "TWO"]
    assert all("\n" not in note for note in notes)


@pytest.mark.parametrize(("content", "mode"), [
    ("jupyter", "jupyter"), ("JUPYTER=1\n", "jupyter"), ("", "ssh"), ("ssh", "ssh"),
    (None, None),
])
def test_launch_mode_from_dot_launch(tmp_path, content, mode):
    # The fact's own command, pointed at a file in a temporary root.
    launch = tmp_path / ".launch"
    if content is not None:
        launch.write_text(content)
    command = VastLaunchMode().command().replace("/.launch", str(launch))
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True).stdout
    assert VastLaunchMode().process(output.splitlines()) == mode


def test_port_holders_are_found_without_ss():
    # A bare box may lack iproute2: the /proc branch must name the same process as ss does.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        # With a port nobody listens on, asked in the same process.
        command = PortListeners().command(ports=[port, 1])
        without_ss = command.replace("command -v ss", "command -v ss-is-not-installed")
        outputs = [subprocess.run(["bash", "-c", text], capture_output=True, text=True)
                   .stdout.splitlines() for text in (command, without_ss)]
    found = [PortListeners().process(output) for output in outputs]
    assert found[0] == found[1] and list(found[0]) == [port]
    (holder,) = found[0][port]
    assert holder["name"].startswith("python") and holder["pid"] and not holder["supervised"]


def _listeners_with_ss(tmp_path, port: int, processless_answers: int) -> tuple[dict, int]:
    """
    The fact through an `ss` whose first ``processless_answers`` answers list the port's
    listener without its process (as real ss does for a socket bound between its /proc scan
    and its socket dump), then pass to the real ss. Returns the fact and how often ss ran.
    """
    calls = tmp_path / "calls"
    fake_ss = tmp_path / "bin" / "ss"
    fake_ss.parent.mkdir()
    fake_ss.write_text(
        "#!/bin/sh\n"
        f"echo x >> {calls}\n"
        f"if [ $(wc -l < {calls}) -le {processless_answers} ]; then\n"
        f"  echo 'LISTEN 0 128 127.0.0.1:{port} 0.0.0.0:*'; exit 0\nfi\n"
        f'exec {shutil.which("ss")} "$@"\n')
    fake_ss.chmod(0o755)
    command = PortListeners().command(ports=[port])
    env = {**os.environ, "PATH": f"{fake_ss.parent}:{os.environ['PATH']}"}
    output = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                            env=env).stdout.splitlines()
    return PortListeners().process(output), len(calls.read_text().splitlines())


def test_a_listener_bound_while_ss_looks_is_not_taken_for_a_foreign_one(tmp_path):
    # CI saw it: sshd bound its port (after making host keys) while the converge's ss ran,
    # which then listed it without a process: sshd was kept from starting as "foreign".
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        found, calls = _listeners_with_ss(tmp_path, port, processless_answers=1)
    (holder,) = found[port]
    assert calls == 2
    assert holder["name"].startswith("python") and holder["pid"] == os.getpid()


def test_a_listener_whose_process_stays_invisible_is_foreign(tmp_path):
    # The host's or another container's listener on a shared network: asked twice, no process.
    found, calls = _listeners_with_ss(tmp_path, 1, processless_answers=2)
    assert calls == 2
    assert found == {1: [{"name": "?", "pid": None, "supervised": False}]}


def test_pam_block_marker_survives_pyinfras_awk_regex():
    # files.block's Block fact puts the marker, unescaped, in a single-quoted awk regex.
    from operations.provisioning import PAM_BLOCK_MARKER

    assert not set(PAM_BLOCK_MARKER) & set("'\"/()[]\\.*+?|^$")


def test_supervisord_running_is_read_from_its_pidfile_and_socket(tmp_path):
    # A live process named supervisord (a copy of sleep: /proc/<pid>/comm is its file name).
    fake = tmp_path / "supervisord"
    shutil.copy("/bin/sleep", fake)
    pidfile, sock = tmp_path / "supervisord.pid", tmp_path / "supervisor.sock"
    fact = SupervisordRunning()

    def running() -> bool:
        command = fact.command(socket=str(sock), pidfile=str(pidfile))
        output = subprocess.run(["sh", "-c", command], capture_output=True, text=True).stdout
        return fact.process(output.splitlines())

    assert not running()  # no pidfile
    with subprocess.Popen([str(fake), "60"]) as process, \
            socket.socket(socket.AF_UNIX) as server:
        pidfile.write_text(f"{process.pid}\n")
        assert not running()  # no socket
        server.bind(str(sock))
        server.listen()
        assert running()
        # The pidfile names another process: not ours.
        pidfile.write_text(f"{os.getpid()}\n")
        assert not running()
        pidfile.write_text(f"{process.pid}\n")
        process.kill()
        process.wait()
    assert not running()  # a stale pidfile
