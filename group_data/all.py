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

# -- visomaster: the app, checked out and set up at configure time (boot or live box)
# The app's git repository (the VisoMaster-Fusion fork also works: set its requirements file).
visomaster_repo_url = "https://github.com/visomaster/VisoMaster.git"
# Tag, branch or commit to check out; v0.1.6 (537cff8) is upstream's latest release.
visomaster_ref = "v0.1.6"
# The checkout, in the workspace volume so it outlives the container; it must stay writable.
visomaster_dir = "/workspace/VisoMaster"
# Converge the checkout to repo_url at ref on each converge; false leaves the directory alone.
visomaster_checkout = True
# Clone/fetch attempts after the first one fails (network errors only).
visomaster_checkout_retries = 3
# Seconds before the first retry; each further retry waits twice as long.
visomaster_checkout_backoff = 2
# The requirements file in the checkout, pip-installed into python_app_venv.
visomaster_requirements = "requirements_cu124.txt"
# Given on pip's command line: pip ignores an index option written on a requirement line.
visomaster_extra_index_urls = ["https://pypi.nvidia.com"]
# pip-install the requirements whenever the file, the ref or the interpreter changed.
visomaster_install_requirements = True
# Fetch the models with the app's own downloader and verify each file's SHA-256.
visomaster_download_models = True
# Downloader runs before the models are reported as not verified.
visomaster_models_attempts = 3
# The models' verification state (JSON), for the diagnostic notebook.
visomaster_models_state = "/var/lib/red/models-state.json"
# Start the app on the VNC desktop at boot; otherwise its desktop icon or menu entry does.
visomaster_autostart = False
# A smaller /dev/shm (MB) gets a warning with the `docker run --shm-size` fix.
visomaster_min_shm_mb = 1024

# -- provisioning: the seed's boot-time flow (red-onstart) and converge runs (red-provision)
# URL of a script to download and run at boot (the seed's PROVISIONING_SCRIPT); "" = none,
# then the seed's local scripts run instead.
provisioning_script = ""
# Seconds the downloaded (or local) script may run; then its process group is stopped.
provisioning_script_timeout = 3600
# Download: seconds to connect, seconds for a whole attempt, retries after the first attempt,
# and the first pause between attempts (doubled each time: 2, 4, 8 s).
provisioning_download_connect_timeout = 10
provisioning_download_timeout = 120
provisioning_download_retries = 3
provisioning_download_backoff = 2
# A second converge waits this long for the one in progress, then exits 75 changing nothing.
provisioning_lock_timeout = 900
# Seconds the entrypoint's boot-time flow waits for supervisord to answer before it runs.
provisioning_supervisor_wait = 120
# Markers (in-progress, completed, failed, onstart.json), the lock and the downloaded script.
provisioning_state_dir = "/var/lib/red/provisioning"
# Where logs go when base_logs_dir cannot be written (a read-only mount): said on stderr.
provisioning_fallback_logs_dir = "/var/log/red"

# -- notebooks: what Red shipped last time, per notebook (a user's edits are never overwritten)
notebooks_state_dir = "/var/lib/red/notebooks"

# -- portal: the front door (issue 9). A block of its own so the settings registry can take it
# over; each line: env name, default, meaning.
# PORTAL_ENABLED: one authenticated HTTPS entrance (nginx) for the status page, the desktop and
# Jupyter; false: no front door, noVNC and Jupyter back on their own ports off loopback.
portal_enabled = True
# PORTAL_PORT: the front door's HTTPS port; point Vast's OPEN_BUTTON_PORT at it.
portal_port = 8443
# PORTAL_DIRECT_PORTS: also keep noVNC (NOVNC_PORT) and Jupyter (JUPYTER_PORT) on their own
# ports off loopback, as before the front door. Trade-off: two more listeners on the public IP,
# authenticated only by the VNC password (8 characters, plain HTTP) and Jupyter's token.
portal_direct_ports = False
# OPEN_BUTTON_TOKEN (or --data portal_token): the front door's token; unset: generated once and
# kept in <secrets_dir>/portal_token. 8+ characters of A-Z a-z 0-9 . _ ~ - (URL-safe as is).
portal_token = None
# Config, the secrets include and the self-signed certificate (root-only).
portal_dir = "/etc/red/portal"
# Vast's instance certificate, used as is when both files exist.
portal_instance_cert = "/etc/instance.crt"
portal_instance_key = "/etc/instance.key"
# Days the self-signed certificate (made once per container) is valid.
portal_cert_days = 3650
# The status page and its assets, served by the front door.
portal_www_dir = "/opt/red/portal/www"
# JupyterLab's base_url behind the front door (also on its direct port when that is kept).
portal_jupyter_base_url = "/jupyter/"
# The status writer: the JSON status and log tails the page reads, and how often (seconds).
portal_status_dir = "/var/lib/red/status"
portal_status_interval = 2
