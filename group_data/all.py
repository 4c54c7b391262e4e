"""
Defaults for every setting of the deploy: the one home for tunables.

Override per run with ``--data key=value``; at container start the environment variables
named in ``operations/settings.py`` (and in the README's settings table) override these.
Precedence: ``--data`` > environment > this file.
"""

# Which half of the deploy runs: "install" (image build, reads no runtime settings),
# "configure" (secrets, keys, ports, resolution) or "all" (boot time and live boxes).
red_phase = "all"

# -- base
# Where the user's work lives; Vast mounts volumes here.
base_workspace_dir = "/workspace"
# Every service logs here (the seed's contract).
base_logs_dir = "/logs"
# Diagnostic notebooks (the seed's contract).
base_notebooks_dir = "/notebooks"
# glibc's built-in UTF-8 locale: present on Ubuntu 22.04 and Debian 12 without locale-gen.
base_locale = "C.UTF-8"

# -- python: the app's venv
# VisoMaster needs 3.10 (3.11 works; 3.12 has no wheels for its pins).
python_version = "3.10"
python_app_venv = "/opt/red/venv"
# ipykernel in the app venv, so Jupyter (its own venv) can run the app's Python.
python_ipykernel_version = "6.29.5"

# -- jupyter: JupyterLab in its own venv, pinned by the lock file beside its name
jupyter_venv = "/opt/red/jupyter"
jupyter_lock = "requirements/jupyter.lock"  # jupyterlab==4.6.6 and its dependencies
jupyter_port = 8888
jupyter_root_dir = "/"

# -- ssh
# The port our sshd listens on (not pyinfra's ssh_port, which is how it connects).
sshd_port = 22

# -- vnc: TigerVNC's Xvnc, loopback only
vnc_display = 1
vnc_port = 5901
vnc_resolution = "1920x1080"
vnc_depth = 24

# -- novnc: websockify serving noVNC, the browser's way in
novnc_port = 6080

# -- secrets: generated ones live here, root-only
secrets_dir = "/etc/red/secrets"

# -- supervisor
# Start supervisord when it is not running (the entrypoint passes false: it starts it itself).
supervisor_start = True
supervisor_socket = "/var/run/supervisor.sock"
# Size-based rotation of every /logs/<program>.log.
supervisor_log_maxbytes = "10MB"
supervisor_log_backups = 3
