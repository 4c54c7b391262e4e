"""
The box-side runtime without a container: the deploy tree's version and copy, the --data
choices a box's own converges keep, the user's PROVISIONING_SCRIPT run once by its shebang,
and the plan's on-start block and on-box decision log on a @fake (SSH-like) host.
"""

import hashlib
import io
import json
import os
import tarfile

from operations import runtime
from operations.provisioning import ONSTART, ONSTART_BLOCK
from redbox.provision import runner as provision_runner
from redbox.provision.common import INSTALLED, SCRIPT_DONE, VERSION_FILE, markers
from redbox.provision.download import download
from redbox.provision.onstart import mark_script_done, script_done
from redbox.provision.runner import install_in_place, mark_installed, saved_data
from redbox.provision.script import interpreter, run_script
from tests.conftest import ROOT
from tests.plan import plan
from tests.script_server import serve

# This machine's loopback, off the other unit tests' ports.
SERVER_PORT = 25971


def make_tree(root):
    for relative, text in {"deploy.py": "print(1)\n", "operations/a.py": "A = 1\n",
                           "files/x/opt/red/bin/tool": "#!/bin/sh\n"}.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "files/x/opt/red/bin/tool").chmod(0o755)
    return root


def test_tree_version_follows_content_and_modes_not_bytecode_or_other_files(tmp_path):
    root = make_tree(tmp_path)
    first = runtime.tree_version(root)
    (root / "operations/__pycache__").mkdir()
    (root / "operations/__pycache__/a.cpython-311.pyc").write_bytes(b"\0")
    (root / "tests").mkdir()
    (root / "tests/test_x.py").write_text("x\n")
    (root / "README.md").write_text("docs\n")
    assert runtime.tree_version(root) == first
    (root / "operations/a.py").write_text("A = 2\n")
    second = runtime.tree_version(root)
    assert second != first
    (root / "files/x/opt/red/bin/tool").chmod(0o644)
    assert runtime.tree_version(root) not in (first, second)


def test_the_tarball_holds_the_tree_and_its_version(tmp_path):
    root = make_tree(tmp_path)
    version = runtime.tree_version(root)
    with tarfile.open(fileobj=runtime.tree_tarball(root, version)) as tar:
        members = {member.name: member for member in tar.getmembers()}
        assert set(members) == {"deploy.py", "operations/a.py", "files/x/opt/red/bin/tool",
                                runtime.VERSION_FILE}
        assert members["files/x/opt/red/bin/tool"].mode == 0o755
        assert members["deploy.py"].mode == 0o644
        stamp = tar.extractfile(runtime.VERSION_FILE).read().decode()
    assert stamp == f"{version}\n"


def test_the_repository_tree_has_what_a_box_converge_reads():
    names = {relative for relative, _ in runtime.tree_files(ROOT)}
    assert {"deploy.py", "requirements/tool.lock", "group_data/all.py",
            "files/provisioning/vast_ai_provisioning_script.sh",
            "box/pyproject.toml", "box/src/redbox/provision/__init__.py"} <= names
    assert not any(name.startswith(("tests/", "box/tests/", ".venv/", ".git/")) for name in names)


def test_saved_data_gives_back_the_users_choices_not_the_per_run_keys(tmp_path):
    saved = tmp_path / "settings.json"
    saved.write_text(json.dumps({
        "values": {"python_version": "3.11", "vnc_resolution": "1600x900",
                   "supervisor_start": False, "visomaster_checkout": False,
                   "base_logs_dir": "/var/log/red", "sshd_port": 2222},
        "cli": ["python_version", "vnc_resolution", "supervisor_start",
                "visomaster_checkout", "base_logs_dir", "not_a_setting"],
    }))
    assert saved_data(str(saved)) == [
        "--data", 'python_version="3.11"', "--data", 'vnc_resolution="1600x900"']
    # pyinfra JSON-parses a --data value: a string stays a string (not the number 3.11).
    assert json.loads('"3.11"') == "3.11"
    assert saved_data(str(tmp_path / "missing.json")) == []


def test_a_script_runs_by_its_shebang_else_with_bash(tmp_path):
    python_script = tmp_path / "p.sh"
    python_script.write_text("#!/usr/bin/env python3\nimport sys\n"
                             "print('py', sys.version_info[0])\n")
    plain = tmp_path / "plain.sh"
    plain.write_text("echo bash $BASH_VERSION | cut -c1-6\n")
    assert interpreter(str(python_script)) == (
        [str(python_script)], "by its shebang (#!/usr/bin/env python3)")
    assert interpreter(str(plain))[0] == ["bash", str(plain)]
    for script, expected in ((python_script, "script: py 3"), (plain, "script: bash 5")):
        lines = []
        outcome, code = run_script(str(script), 30, str(tmp_path), lines.append)
        assert (outcome, code) == ("ok", 0), lines
        assert expected in (tmp_path / "provisioning.log").read_text()


def test_crlf_line_endings_are_converted_with_a_line(tmp_path):
    routes = {"/crlf.sh": (200, "text/plain", b"#!/bin/bash\r\necho one\r\necho two\r\n")}
    lines = []
    prov = type("Prov", (), dict(connect_timeout=2, download_timeout=5, download_retries=0,
                                 download_backoff=0))()
    with serve(SERVER_PORT, routes) as url:
        dest, reason = download(url + "/crlf.sh", prov, str(tmp_path / "s.sh"), lines.append)
    assert dest and not reason
    assert (tmp_path / "s.sh").read_bytes() == b"#!/bin/bash\necho one\necho two\n"
    assert [line for line in lines if "CRLF" in line] == [
        "the script has CRLF (Windows) line endings: converted to LF before running"]
    outcome, _ = run_script(dest, 30, str(tmp_path), lines.append)
    assert outcome == "ok"


def test_the_success_marker_is_for_one_url_and_hides_its_secrets(tmp_path):
    script = tmp_path / "s.sh"
    script.write_bytes(b"echo hi\n")
    marker = str(tmp_path / SCRIPT_DONE)
    url = "https://user:pw@example.com/setup.sh?token=abc"
    mark_script_done(marker, url, str(script), 1.0)
    done = script_done(marker, url)
    assert done and done["script_sha256"] == hashlib.sha256(b"echo hi\n").hexdigest()
    assert os.stat(marker).st_mode & 0o777 == 0o600
    text = open(marker).read()
    assert "pw" not in text and "abc" not in text
    assert script_done(marker, url.replace("setup", "other")) is None


# -- the plan on a @fake host: pyinfra's SSH-like connector, not @local -------------------------

def test_plan_over_ssh_installs_the_runtime_and_the_onstart_block():
    code, _, output = plan("debian_12", data=["vnc_resolution=bogus"])
    assert code == 0, output[-3000:]
    for name in ("Create the tool venv /opt/red/tool",
                 "Install the locked pyinfra into /opt/red/tool",
                 "Copy the deploy to /opt/red/deploy (stamped with its version)",
                 f"Write Red's on-start block in {ONSTART}"):
        assert name in output, name
    assert ONSTART_BLOCK[-1].split(";")[0] in output
    # The decisions reach the box's startup log (a fact's command, not a change), not only
    # the controller's warnings.
    appends = [line for line in output.splitlines()
               if ">> /logs/startup.log" in line and "vnc_resolution=" in line and "bogus" in line]
    assert appends and "printf '%s %s\\n'" in appends[0]
    code, _, output = plan("debian_12", data=["provisioning_onstart_block=false"])
    assert code == 0 and f"Remove Red's on-start block in {ONSTART}" in output


def test_tar_of_the_repository_is_small():
    # The copy goes over SSH at every deploy change: it must stay small.
    data = runtime.tree_tarball(ROOT, "x").getvalue()
    assert len(data) < 2_000_000
    assert tarfile.open(fileobj=io.BytesIO(data)).getmember("deploy.py")


def test_block_markers_survive_pyinfras_awk_regex_and_shell_quoting():
    # files.block writes each marker unescaped into `awk '/MARKER/ ...'` to update or remove a
    # block: a quote, a slash or a regex character there breaks the update or the removal.
    from operations.provisioning import ONSTART_MARKER, PAM_BLOCK_MARKER
    for marker in (ONSTART_MARKER, PAM_BLOCK_MARKER):
        for mark in ("BEGIN", "END"):
            text = marker.format(mark=mark)
            assert not set(text) & set("'\"/\\()[]{}.*+?|^$"), text


def test_only_the_users_setting_choices_are_kept_for_the_boxs_own_converges():
    from operations.provisioning import chosen_settings
    # pyinfra's --key arrives as override data `ssh_key`: not a setting of Red's.
    assert chosen_settings({"python_version", "ssh_key", "supervisor_start",
                            "visomaster_checkout", "vnc_resolution"}) == {
        "python_version", "vnc_resolution"}


def test_the_install_half_counts_as_in_place_only_for_the_deploy_version_it_was_run_with(
        tmp_path, monkeypatch):
    deploy, state = tmp_path / "deploy", tmp_path / "state"
    deploy.mkdir()
    state.mkdir()
    monkeypatch.setattr(provision_runner, "DEPLOY_DIR", str(deploy))
    paths = markers(str(state))
    # No version on the box, or never installed: not in place.
    assert install_in_place(paths) is None
    (deploy / VERSION_FILE).write_text("v1\n")
    assert install_in_place(paths) is None
    mark_installed(paths, "image build")
    assert install_in_place(paths) == "v1"
    assert json.loads((state / INSTALLED).read_text())["by"] == "image build"
    # A newer deploy arrived (a converge over SSH from a newer controller): not until its own
    # install half completes.
    (deploy / VERSION_FILE).write_text("v2\n")
    assert install_in_place(paths) is None
    (state / INSTALLED).write_text("{not json")
    assert install_in_place(paths) is None

