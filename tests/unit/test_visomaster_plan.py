"""
Plan-level tests of operations/visomaster.py: the real deploy against @fake hosts whose facts
describe a box in one state (tests/fixtures/fake_visomaster_inventory.py). The commands the
deploy would run are read from pyinfra's debug log; nothing touches this machine.
"""


import pytest

from operations.visomaster import APP_PACKAGES, _checkout_notes
from redbox.app.flavors import FUSION
from tests.plan import plan as run_plan

INVENTORY = "tests/fixtures/fake_visomaster_inventory.py"
GROUPS = ("vm_fresh", "vm_in_state", "vm_out_of_state", "vm_small_shm", "vm_with_env",
          "vm_pip_backoff", "vm_fusion")
# The install run (its check runs the same tool with --check).
PIP_APPLY = "== red-app-pip"
CHECKOUT_APPLY = "/opt/red/bin/red-app-checkout --url "
# The models' download run (its check runs the same tool with --attempts 0).
MODELS_APPLY = "/opt/red/bin/red-app-models --repo /workspace/VisoMaster --models-data " \
    "app/processors/models_data.py --python"


def plan(group: str, *data: str) -> tuple[list[str], str]:
    """Run the deploy on one fake host; return the commands it ran and pyinfra's output."""
    code, commands, output = run_plan(group, data=data, inventory=INVENTORY)
    assert code == 0, output[-5000:]
    return commands, output


def matching(commands: list[str], text: str) -> list[str]:
    return [command for command in commands if text in command]


@pytest.fixture(scope="module")
def plans():
    """Each group's configure plan, computed once."""
    return {group: plan(group, "red_phase=configure") for group in GROUPS}


def test_install_phase_installs_ffmpeg_and_qt_libraries_and_never_clones():
    commands, output = plan("vm_fresh", "red_phase=install")
    installs = [c for c in commands if " install --no-install-recommends " in c]
    assert any(all(package in c.split() for package in APP_PACKAGES) for c in installs)
    assert not matching(commands, "red-app-checkout --")
    assert not matching(commands, "git clone")
    assert not matching(commands, "red-app-models --")
    assert not matching(commands, "/workspace/VisoMaster/requirements")
    for path in ("/opt/red/bin/red-visomaster", "/usr/share/applications/red-visomaster.desktop",
                 "/root/Desktop/red-visomaster.desktop"):
        assert f"simulating put_file on @fake/vm-fresh: {path}" in output
    for tool in ("red-app-checkout", "red-app-models"):
        assert f"ln -sfn /opt/red/tool/bin/{tool} /opt/red/bin/{tool}" in output


def test_configure_installs_no_package(plans):
    commands, _ = plans["vm_out_of_state"]
    assert not [c for c in commands if " install --no-install-recommends " in c]
    assert not matching(commands, "apt-get update")


def test_fresh_box_runs_the_checkout_and_skips_what_needs_the_checkout(plans):
    commands, output = plans["vm_fresh"]
    applies = matching(commands, CHECKOUT_APPLY)
    assert applies == [
        "/opt/red/bin/red-app-checkout --url https://github.com/visomaster/VisoMaster.git "
        "--ref v0.1.6 --dest /workspace/VisoMaster --log /logs/visomaster-checkout.log "
        "--retries 3 --backoff 2.0"
    ]
    # No checkout yet (the fake box does not change): no requirements file, no model list.
    assert not matching(commands, PIP_APPLY)
    assert not matching(commands, MODELS_APPLY)
    assert not matching(commands, "== red-app-clip")  # it comes with the app
    assert "requirements file /workspace/VisoMaster/requirements_cu124.txt does not exist " \
        "(No such file or directory)" in output
    # Said from the batch's stat: red-app-pip is not even started to find that out.
    assert not matching(commands, "visomaster-status.json --check")


def test_checkout_in_state_pip_stamp_current_and_models_verified_change_nothing(plans):
    commands, output = plans["vm_in_state"]
    assert matching(commands, "red-app-checkout --check")
    assert not matching(commands, CHECKOUT_APPLY)
    assert not matching(commands, PIP_APPLY)
    assert matching(commands, "--attempts 0")
    assert not matching(commands, MODELS_APPLY)
    assert "/opt/red/venv already has visomaster installed" in output


def test_out_of_state_box_checks_out_installs_and_downloads(plans):
    commands, _ = plans["vm_out_of_state"]
    assert len(matching(commands, CHECKOUT_APPLY)) == 1
    [pip] = matching(commands, PIP_APPLY)
    assert "--venv /opt/red/venv --requirements /workspace/VisoMaster/requirements_cu124.txt " \
        "--flavor upstream --key ref=v0.1.6" in pip
    # The NVIDIA index on uv's command line, the kernel, uv's places, the bounds; the output
    # appended to the pip log.
    assert "--extra-index-url https://pypi.nvidia.com --also ipykernel==6.29.5 " \
        "--cache-dir /workspace/red-cache/uv --python-dir /opt/red/python" in pip
    assert "--deadline 1800 --timeout 15 --retries 2 --backoff 600" in pip
    assert "--state /var/lib/red/visomaster-pip.json" in pip
    assert "--status /var/lib/red/visomaster-status.json" in pip
    assert ">> /logs/visomaster-pip.log" in pip
    assert "visomaster: installing /workspace/VisoMaster/requirements_cu124.txt into " \
        "/opt/red/venv FAILED" in pip  # the startup log's line when it fails
    # The models start in the background before the install (their list comes with the
    # checkout), and the same run after it waits for that one and checks they verify.
    background, models = matching(commands, MODELS_APPLY)
    assert background.startswith("setsid sh -c '{ echo '\"'\"'== red-app-models ")
    assert background.endswith("</dev/null >/dev/null 2>&1 &")
    # Its outcome reaches the startup log as the foreground run's does.
    assert "downloaded and verified" in background and "models NOT verified" in background
    assert "--pip-state" not in background
    assert commands.index(background) < commands.index(pip) < commands.index(models)
    assert "--python /opt/red/venv/bin/python --attempts 3 --timeout 3600 --deadline 3600 " \
        "--backoff 600" in models
    assert "--state /var/lib/red/models-state.json" in models
    # The hashes on the workspace with the files (a re-created container trusts them).
    assert "--cache /workspace/red-cache/models-verified.json" in models
    assert "models NOT verified" in models  # the startup log line when they do not verify


def test_app_failures_are_reported_and_never_stop_the_rest_of_the_deploy():
    commands, output = plan("vm_offline", "red_phase=configure")
    # Each app step ran and failed, and supervisor's part still ran after them.
    checkout = commands.index(next(c for c in commands if c.startswith(CHECKOUT_APPLY)))
    assert matching(commands[checkout:], PIP_APPLY)
    assert matching(commands[checkout:], MODELS_APPLY)
    assert matching(commands[checkout:], "supervisor")
    assert ("VisoMaster: checkout of https://github.com/visomaster/VisoMaster.git at v0.1.6 into "
            "/workspace/VisoMaster FAILED: git clone failed after 4 attempts: Could not resolve "
            "host; nothing was lost, the next converge retries") in output
    [note] = [c for c in commands[checkout:] if c.startswith("{ printf '%s visomaster: %s\\n'")]
    assert "FAILED: git clone failed" in note and ">> /logs/startup.log" in note
    # (The models' background start too: the fake fails every command of that run.)
    assert output.count("Error (ignored)") == 4, output[-3000:]


def test_checkout_and_steps_can_be_turned_off():
    commands, _ = plan("vm_out_of_state", "red_phase=configure", "visomaster_checkout=false",
                       "visomaster_install_requirements=false",
                       "visomaster_download_models=false")
    assert not matching(commands, "red-app-checkout --")
    assert not matching(commands, "red-app-pip --")
    assert not matching(commands, "red-app-models --")


def test_pip_gets_only_the_extra_indexes_given():
    commands, _ = plan("vm_out_of_state", "red_phase=configure",
                       "visomaster_extra_index_urls=[]")
    [pip] = matching(commands, PIP_APPLY)
    assert "--extra-index-url" not in pip


def test_a_failed_install_or_download_in_its_backoff_is_not_repeated_and_says_when(plans):
    commands, output = plans["vm_pip_backoff"]
    assert matching(commands, "visomaster-status.json --check")
    assert not matching(commands, PIP_APPLY)
    assert ("pip install of /workspace/VisoMaster/requirements_cu124.txt skipped: it failed 2 "
            "time(s) with these inputs (index pypi.nvidia.com: read timed out x4); next try "
            "after 2026-12-02T01:00:00Z; `/opt/red/bin/red-app-pip --retry-now` tries now"
            ) in output
    # The models likewise: verified (the check), not downloaded again inside their backoff.
    assert matching(commands, "--attempts 0")
    assert not matching(commands, MODELS_APPLY)
    assert ("models download in /workspace/VisoMaster skipped: it failed 1 time(s) with this "
            "model list (the deadline ran out after 1 download run(s)); next try after "
            "2026-12-02T00:10:00Z; `/opt/red/bin/red-app-models --retry-now` tries now") in output


def test_the_fusion_flavor_checks_out_the_fork_and_installs_its_file_with_its_indexes(plans):
    commands, output = plans["vm_fusion"]
    [apply] = matching(commands, CHECKOUT_APPLY)
    assert ("--url https://github.com/VisoMasterFusion/VisoMaster-Fusion.git "
            f"--ref {FUSION.ref} ") in apply
    [check] = matching(commands, "visomaster-status.json --check")
    assert "--requirements /workspace/VisoMaster/requirements_cu13.txt" in check
    assert "--extra-index-url https://download.pytorch.org/whl/cu130 " \
        "--extra-index-url https://pypi.nvidia.com --extra-index-url https://aiinfra" in check
    assert "VISOMASTER_FLAVOR=fusion: defaults visomaster_repo_url=" in output


def test_small_shm_gets_one_warning_with_the_fix(plans):
    _, output = plans["vm_small_shm"]
    # (The debug log also shows the command that appends it to the box's startup log.)
    lines = [line for line in output.splitlines()
             if "/dev/shm is 64 MB" in line and ">> /logs/startup.log" not in line]
    assert len(lines) == 1
    assert "docker run --shm-size=2g" in lines[0]
    assert "/dev/shm is" not in plans["vm_in_state"][1]


def test_env_names_set_the_app_and_a_bad_value_falls_back(plans):
    commands, output = plans["vm_with_env"]
    [apply] = matching(commands, CHECKOUT_APPLY)
    assert "--ref v0.2.0 --dest /data/app " in apply
    assert not matching(commands, "red-app-models --repo")
    assert "VISOMASTER_AUTOSTART='maybe' is not true or false: using False" in output


def test_bad_data_values_fall_back_with_a_line():
    commands, output = plan("vm_fresh", "red_phase=configure", "visomaster_ref=--upload-pack=x",
                            "visomaster_dir=relative/dir")
    [apply] = matching(commands, CHECKOUT_APPLY)
    assert "--ref v0.1.6 --dest /workspace/VisoMaster " in apply
    assert "--data visomaster_ref='--upload-pack=x' is not a tag, branch or commit name" in output
    assert "--data visomaster_dir='relative/dir' is not an absolute directory below /" in output


SUMMARY = {"dest": "/workspace/VisoMaster", "url": "file:///srv/app.git", "ref": "v2",
           "reason": "destination has files but no .git", "commit": "0123456789abcdef"}


def test_notes_name_where_files_went():
    notes = _checkout_notes({
        **SUMMARY, "action": "cloned",
        "moved_aside": ["/workspace/VisoMaster.moved-aside-20260101-000000"],
    }, True, "/logs/visomaster-checkout.log")
    assert notes[0] == (
        "/workspace/VisoMaster was not a clone of file:///srv/app.git (destination has files but "
        "no .git): moved aside to /workspace/VisoMaster.moved-aside-20260101-000000, nothing in "
        "it deleted"
    )
    assert notes[1] == "/workspace/VisoMaster cloned to v2 (0123456789ab)"


def test_notes_name_saved_user_files_and_backup_branches():
    notes = _checkout_notes({
        **SUMMARY, "action": "updated", "user_files_backup": "/workspace/VisoMaster.user-files-X",
        "user_files": [{"path": "README.md", "in_worktree": False},
                       {"path": "notes.txt", "in_worktree": True}],
        "backup_branches": [{"name": "red-backup/X", "commits": 2}],
    }, True, "/logs/visomaster-checkout.log")
    assert "2 local commit(s) in /workspace/VisoMaster kept on branch red-backup/X" in notes
    assert ("2 edited or untracked file(s) in /workspace/VisoMaster copied to "
            "/workspace/VisoMaster.user-files-X before moving to v2; v2 replaced your version of "
            "README.md (yours are in the copy)") in notes


def test_notes_on_failure_and_on_no_change():
    [line] = _checkout_notes({**SUMMARY, "action": "error", "error": "git clone failed"}, False,
                            "/logs/visomaster-checkout.log")
    assert line.startswith("checkout of file:///srv/app.git at v2 into /workspace/VisoMaster "
                           "FAILED: git clone failed;")
    assert "/logs/visomaster-checkout.log" in line
    assert _checkout_notes({**SUMMARY, "action": "unchanged"}, True, "log") == []
    assert _checkout_notes(None, False, "log") == [
        "checkout FAILED without a report; details in log"]


def test_an_image_that_bakes_the_app_in_checks_out_and_installs_but_leaves_the_models():
    commands, _ = plan("vm_out_of_state", "red_phase=install", "visomaster_in_image=true")
    assert len(matching(commands, CHECKOUT_APPLY)) == 1
    assert len(matching(commands, PIP_APPLY)) == 1
    assert not matching(commands, "red-app-models --")
    assert not matching(commands, "df -Pk /dev/shm")  # a runtime check: the boot's


def test_baking_reads_the_app_from_the_builds_visomaster_args_only():
    from operations.settings import baked_app_env
    build = {"VISOMASTER_IN_IMAGE": "1", "VISOMASTER_REF": "v2", "SSH_PORT": "2200"}
    assert baked_app_env(build) == {"VISOMASTER_IN_IMAGE": "1", "VISOMASTER_REF": "v2"}
    assert baked_app_env({"VISOMASTER_REF": "v2"}) == {}
    assert baked_app_env({"VISOMASTER_IN_IMAGE": "0", "VISOMASTER_REF": "v2"}) == {}


def test_the_clip_weights_are_fetched_verified_into_the_workspace(plans):
    commands, _ = plans["vm_out_of_state"]
    # Started in the background before the install (like the models), then the same run
    # after it, which waits for that one (one run per state file) and finds them verified.
    background, clip = matching(commands, "== red-app-clip")
    [pip] = matching(commands, PIP_APPLY)
    assert commands.index(background) < commands.index(pip) < commands.index(clip)
    assert background.startswith("setsid sh -c '{ echo '\"'\"'== red-app-clip ")
    assert background.endswith("</dev/null >/dev/null 2>&1 &")
    assert "downloaded and verified" in background and "CLIP weights NOT verified" in background
    assert "/opt/red/bin/red-app-clip --url https://openaipublic.azureedge.net/clip/models/" \
        "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt " \
        "--sha256 5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f " \
        "--dir /workspace/red-cache/clip --link /root/.cache/clip --attempts 3 --deadline 3600" \
        " --failure-backoff 600 --state /var/lib/red/clip-state.json" in clip
    assert "CLIP weights NOT verified" in clip
    # Its check reads the same state file (a recorded failure's backoff).
    checks = matching(commands, "red-app-clip --check")
    assert checks and all("--state /var/lib/red/clip-state.json" in c for c in checks)


def test_the_clip_weights_in_their_backoff_are_not_fetched_and_say_when(plans):
    commands, output = plans["vm_pip_backoff"]
    assert matching(commands, "red-app-clip --check")
    assert not matching(commands, "== red-app-clip")  # neither the background nor the fetch
    assert ("CLIP weights download into /workspace/red-cache/clip skipped: it failed 1 time(s) "
            "with this URL and hash (ViT-B-16.pt: [Errno -3] Temporary failure in name "
            "resolution (https://openaipublic.azureedge.net/clip/models/x/ViT-B-16.pt) (after 3 "
            "attempts)); next try after 2026-12-02T00:10:00Z; `/opt/red/bin/red-app-clip "
            "--retry-now` tries now") in output
    assert "Error (ignored)" not in output


def test_the_clip_weights_follow_the_models_state_and_backoff_settings():
    commands, _ = plan("vm_out_of_state", "red_phase=configure",
                       "visomaster_models_state=/data/red/models.json",
                       "visomaster_models_backoff=60", "visomaster_install_requirements=false")
    [clip] = matching(commands, "== red-app-clip")  # no install to overlap: the fetch only
    assert "--failure-backoff 60 --state /data/red/clip-state.json" in clip


def test_notes_name_the_models_carried_into_a_new_remotes_tree():
    notes = _checkout_notes({
        **SUMMARY, "action": "cloned", "moved_aside": ["/workspace/VisoMaster.moved-aside-X"],
        "carried_over": {"from": "/workspace/VisoMaster.moved-aside-X", "bytes": 3000000,
                         "files": ["model_assets/a.onnx", "tensorrt-engines/a.trt"]},
    }, True, "/logs/visomaster-checkout.log")
    assert ("2 model/engine file(s) (3000000 bytes) moved from /workspace/VisoMaster.moved-aside-X"
            " into the new checkout /workspace/VisoMaster, not downloaded again: "
            "model_assets/a.onnx, tensorrt-engines/a.trt") in notes
