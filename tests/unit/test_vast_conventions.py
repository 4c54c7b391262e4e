"""Vast's conventions the deploy meets: session env through PAM, launch modes, port holders."""

import socket
import subprocess

import pytest

from operations._common import PortListeners, VastLaunchMode
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
        command = PortListeners().command(port=port)
        without_ss = command.replace("command -v ss", "command -v ss-is-not-installed")
        outputs = [subprocess.run(["bash", "-c", text], capture_output=True, text=True)
                   .stdout.splitlines() for text in (command, without_ss)]
    found = [PortListeners().process(output) for output in outputs]
    assert found[0] == found[1] and found[0][0]["name"].startswith("python")
    assert found[0][0]["pid"] and not found[0][0]["supervised"]


def test_pam_block_marker_survives_pyinfras_awk_regex():
    # files.block's Block fact puts the marker, unescaped, in a single-quoted awk regex.
    from operations.provisioning import PAM_BLOCK_MARKER

    assert not set(PAM_BLOCK_MARKER) & set("'\"/()[]\\.*+?|^$")
