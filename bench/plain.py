"""
The bench's baseline: a plain build of the same stack, with no configuration tool.

Kept in step with the deploy rather than hand-kept:
- its packages are the ones the deploy's own install plan installs on a fresh Debian 12 host
  (pyinfra's @fake connector, tests/plan.py), parsed from the plan's apt-get commands;
- its venvs are made from the same lock files (requirements/jupyter.lock, the app's ipykernel);
- its supervisor programs, wrappers, box-side library and config files are copied out of a Red
  box converged with the bench's own environment, so both run exactly the same programs.
What it lacks is what Red is for: a 15-line entrypoint writes the secrets, host keys and the
front door's certificate and starts supervisord; nothing is checked, resolved or repaired.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

from operations import settings
from tests.boxes import podman
from tests.conftest import ROOT
from tests.plan import plan

# What a converged Red box holds that its programs read (everything else is packages/venvs).
COPIED = ("/etc/supervisor", "/etc/red", "/opt/red/bin", "/opt/red/tool", "/opt/red/portal",
          "/etc/ssh/sshd_config", "/etc/ssh/sshd_config.d", "/etc/environment")
# Made per container by the entrypoint below, never copied from another box.
PER_CONTAINER = ("/etc/red/secrets", "/etc/red/portal/tls", "/etc/red/settings.json")
ENTRYPOINT = textwrap.dedent("""\
    #!/usr/bin/env bash
    # The plain build's start: secrets, host keys, a certificate, then supervisord.
    set -euo pipefail
    secrets=/etc/red/secrets tls=/etc/red/portal/tls
    mkdir -p /logs /run/sshd "$secrets" "$tls" && chmod 700 "$secrets" "$tls"
    ssh-keygen -A >/dev/null
    keep() { [ -s "$secrets/$1" ] || printf %s "$2" > "$secrets/$1"; }
    random() { head -c 48 /dev/urandom | base64 | tr -dc A-Za-z0-9 | head -c "$1"; }
    keep jupyter_token "${JUPYTER_TOKEN:-$(random 32)}"
    keep vnc_password "${VNC_PW:-$(random 8)}"
    keep portal_token "${OPEN_BUTTON_TOKEN:-$(random 32)}"
    chmod 600 "$secrets"/*
    [ -s "$tls/cert.pem" ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \\
      -nodes -days 825 -subj /CN=localhost -keyout "$tls/key.pem" -out "$tls/cert.pem" 2>/dev/null
    exec /usr/bin/supervisord -n -c /etc/supervisor/supervisord.conf
""")
BAKED_HOST_KEYS = "/etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub"
_INSTALL = re.compile(r"apt-get .*install --no-install-recommends (.+)$")


def packages(python_version: str = "3.11") -> list[str]:
    """The Debian packages the deploy's install plan installs on a fresh Debian 12 host."""
    result = plan("debian_12", data=("red_phase=install", f"python_version={python_version}"))
    if result.code != 0:
        raise SystemExit("the deploy's install plan failed:\n" + result.output[-3000:])
    found: list[str] = []
    for command in result.commands:
        match = _INSTALL.search(command)
        if match:
            found += [word for word in shlex.split(match.group(1)) if word not in found]
    if not found:
        raise SystemExit("the install plan installs no package: the parser is out of date")
    return found


def dockerfile(base: str, python_version: str, package_list: list[str]) -> str:
    setting = settings.DEFAULTS.get
    app_venv, jupyter_venv = setting("python_app_venv"), setting("jupyter_venv")
    kernel = f"{jupyter_venv}/share/jupyter/kernels"
    return "\n".join([
        f"FROM {base}",
        "ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 LC_ALL=C.UTF-8 "
        "PIP_DISABLE_PIP_VERSION_CHECK=1",
        # openssh-server's install makes host keys: Red's image bakes none (every container
        # makes its own at first start), so neither does this one, or its boot would skip
        # work Red's does.
        "RUN apt-get update && apt-get install -y --no-install-recommends "
        + " ".join(package_list) + f" && rm -rf /var/lib/apt/lists/* {BAKED_HOST_KEYS}",
        "COPY jupyter.lock /tmp/jupyter.lock",
        # Red's build does the same: pip trusts the machine's extra CAs (a build secret).
        "COPY with-extra-ca /usr/local/bin/with-extra-ca",
        f"RUN --mount=type=secret,id=extra_ca python3 -m venv {jupyter_venv} && "
        f"with-extra-ca {jupyter_venv}/bin/pip install --no-cache-dir -r /tmp/jupyter.lock && "
        f"python{python_version} -m venv {app_venv} && with-extra-ca {app_venv}/bin/pip install "
        f"--no-cache-dir ipykernel=={setting('python_ipykernel_version')} && "
        "rm /tmp/jupyter.lock /usr/local/bin/with-extra-ca",
        "COPY tree/ /",
        f"COPY kernels/ {kernel}/",
        "COPY entrypoint /usr/local/bin/plain-entrypoint",
        'ENTRYPOINT ["/usr/local/bin/plain-entrypoint"]',
        "",
    ])


def context(red_box: str, base: str, python_version: str, directory: Path) -> Path:
    """The plain build's context, from the deploy's plan and a converged Red box."""
    (directory / "Dockerfile").write_text(dockerfile(base, python_version,
                                                     packages(python_version)))
    (directory / "jupyter.lock").write_text((ROOT / "requirements" / "jupyter.lock").read_text())
    shutil.copy2(ROOT / "files/build/opt/red/bin/red-with-extra-ca", directory / "with-extra-ca")
    (directory / "entrypoint").write_text(ENTRYPOINT)
    (directory / "entrypoint").chmod(0o755)
    tree = directory / "tree"
    for path in COPIED:
        target = tree / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        podman("cp", f"{red_box}:{path}", str(target), check=False)
    for path in PER_CONTAINER:
        subprocess.run(["rm", "-rf", str(tree / path.lstrip("/"))], check=True)
    kernels = f"{settings.DEFAULTS.get('jupyter_venv')}/share/jupyter/kernels"
    podman("cp", f"{red_box}:{kernels}", str(directory / "kernels"))
    return directory


def build_context(work: Path, tag: str, no_cache: bool) -> float:
    """Build the plain image from a context made by ``context``; seconds the build took."""
    args = ["build", "--isolation", "chroot", "--network", "host", "--format", "docker",
            *(["--no-cache"] if no_cache else []), "-t", tag]
    cas = sorted(Path(os.environ.get("EXTRA_CA_DIR") or "/nonexistent").glob("*.crt"))
    if cas:  # as `make image` passes them
        bundle = work / "extra-ca.pem"
        bundle.write_text("".join(ca.read_text() for ca in cas))
        args += ["--secret", f"id=extra_ca,src={bundle}"]
    started = time.monotonic()
    result = podman(*args, str(work), check=False, timeout=3600)
    if result.returncode != 0:
        raise SystemExit("the plain build failed:\n" + result.stderr[-3000:])
    return time.monotonic() - started
