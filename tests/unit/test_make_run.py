"""`make run` and `make push` as a user's machine sees them (a fake engine on PATH)."""

import os
import subprocess

import pytest

from tests.conftest import ROOT

DOCKER_INFO = {
    "nvidia": '{"io.containerd.runc.v2":{},"nvidia":{"path":"nvidia-container-runtime"}}',
    "plain": '{"io.containerd.runc.v2":{},"runc":{"path":"runc"}}',
}


def make_dry(tmp_path, target: str, docker_runtimes: str | None, **env) -> str:
    """`make -n TARGET` with a docker that answers `info` (or no engine: podman)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    docker = bin_dir / "docker"
    if docker_runtimes is None:
        docker.write_text("#!/bin/sh\nexit 1\n")
    else:
        docker.write_text(f"#!/bin/sh\n[ \"$1\" = info ] && echo '{docker_runtimes}'\nexit 0\n")
    docker.chmod(0o755)
    run_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **env}
    for name in ("SSH_PORT", "VNC_PW", "PORTAL_PORT"):
        if name not in env:
            run_env.pop(name, None)
    result = subprocess.run(["make", "-n", "-s", target, "IMAGE=ghcr.io/me/red:1.0"], cwd=ROOT,
                            env=run_env, capture_output=True, text=True, check=True)
    return result.stdout


@pytest.mark.parametrize(("runtimes", "gpu"), [("nvidia", True), ("plain", False)])
def test_docker_run_passes_the_gpu_when_nvidia_is_there_and_never_binds_port_22(
        tmp_path, runtimes, gpu):
    command = make_dry(tmp_path, "run", DOCKER_INFO[runtimes])
    assert command.startswith("docker run")
    assert ("--gpus all" in command) is gpu
    assert "-p 2222:22" in command and "-p 22:" not in command
    # The front door is the one web port; noVNC and Jupyter stay behind it.
    assert "-p 8443:8443" in command
    assert "6080" not in command and "8888" not in command
    moved = make_dry(tmp_path, "run", DOCKER_INFO[runtimes], PORTAL_PORT="9443")
    assert "-p 9443:9443" in moved and "-e PORTAL_PORT" in moved


def test_podman_run_moves_sshd_off_the_hosts_port_22(tmp_path):
    command = make_dry(tmp_path, "run", None)
    assert command.startswith("podman run") and "--network host" in command
    assert "-e SSH_PORT=2222" in command
    # A port the user chose is passed through as it is.
    chosen = make_dry(tmp_path, "run", None, SSH_PORT="2200")
    assert "-e SSH_PORT=2222" not in chosen and "-e SSH_PORT" in chosen


def test_push_pushes_the_named_image(tmp_path):
    assert make_dry(tmp_path, "push", DOCKER_INFO["plain"]).strip() == \
        "docker push ghcr.io/me/red:1.0"


def test_release_workflow_builds_the_cuda_image_for_amd64_on_a_tag_and_pushes_it():
    # actionlint (make lint) checks the workflow's syntax and expressions; this, what it does.
    text = (ROOT / ".github/workflows/release.yml").read_text()
    assert 'tags: ["v*"]' in text
    assert "REGISTRY: ${{ vars.RED_REGISTRY || 'ghcr.io' }}" in text
    build = text[text.index("docker/build-push-action"):]
    for line in ("platforms: linux/amd64", "push: true",
                 "BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04"):
        assert line in build
