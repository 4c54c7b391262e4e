"""
Defaults for every setting of the deploy, generated from box/src/redbox/settings/
registry.py by `make settings-docs` (a unit test checks it is current): edit the
registry, not this file. Override per run with ``--data key=value``; at container start
the environment variables in docs/settings.md override these.
Precedence: ``--data`` > environment > this file.
"""

# -- base: the seed's directories, the locale, where secrets live
# which half runs: install (image build, reads no runtime setting), configure (runtime only) or
# all (boot and live boxes)
red_phase = 'all'
# the user's work; Vast mounts volumes here
base_workspace_dir = '/workspace'
# every service's log
base_logs_dir = '/logs'
# the diagnostic notebooks
base_notebooks_dir = '/notebooks'
# the system locale (glibc's built-in C.UTF-8 needs no locale-gen)
base_locale = 'C.UTF-8'
# where generated secrets are kept, root-only (0600)
secrets_dir = '/etc/red/secrets'

# -- python: the app's venv
# the image's default app venv's Python (upstream runs on 3.10 or 3.11; a flavor's own Python
# replaces it at its install; build arg PYTHON_VERSION) (env RED_PYTHON_VERSION)
python_version = '3.10'
# the app's venv
python_app_venv = '/opt/red/venv'
# ipykernel in the app venv, so Jupyter can run the app's Python
python_ipykernel_version = '6.29.5'

# -- ssh
# port of the image's sshd (env SSH_PORT)
sshd_port = 22
# public keys added to root's authorized_keys (several allowed, one per line; keys already there
# are kept) (env SSH_PUBLIC_KEY, PUBLIC_KEY)
ssh_authorized_keys = []

# -- jupyter: JupyterLab in its own venv
# JupyterLab's port (loopback behind the front door, base URL /jupyter/) (env JUPYTER_PORT)
jupyter_port = 8888
# Jupyter's token, 8+ printable characters (env JUPYTER_TOKEN, OPEN_BUTTON_TOKEN)
# jupyter_token: generated when unset, kept in /etc/red/secrets/jupyter_token (root-only)
# JupyterLab's own venv
jupyter_venv = '/opt/red/jupyter'
# JupyterLab's pins (in the deploy)
jupyter_lock = 'requirements/jupyter.lock'
# what Jupyter's file browser shows
jupyter_root_dir = '/'

# -- desktop: TigerVNC's Xvnc on loopback, xfce, noVNC
# noVNC (the desktop in a browser; loopback behind the front door) (env NOVNC_PORT)
novnc_port = 6080
# the X display number
vnc_display = 1
# Xvnc's raw VNC port, loopback only (env VNC_PORT)
vnc_port = 5901
# desktop size, 640x480..7680x4320 (else DISPLAY_SIZEW x DISPLAY_SIZEH) (env VNC_RESOLUTION)
vnc_resolution = '1920x1080'
# the desktop's colour depth
vnc_depth = 24
# VNC password: 6 to 8 characters (VNC reads only 8) (env VNC_PW, VNC_PASSWORD,
# OPEN_BUTTON_TOKEN)
# vnc_password: generated when unset, kept in /etc/red/secrets/vnc_password (root-only)

# -- supervisor
# start supervisord when it is not running (the entrypoint starts it itself)
supervisor_start = True
# supervisord's root-only control socket
supervisor_socket = '/var/run/supervisor.sock'
# size-based rotation of each /logs/<program>.log
supervisor_log_maxbytes = '10MB'
# rotated logs kept per program
supervisor_log_backups = 3

# -- visomaster: the app, checked out and set up at configure time
# the flavor auto takes on a box without a usable GPU (the app needs one to start) (env
# VISOMASTER_FALLBACK_FLAVOR)
visomaster_fallback_flavor = 'upstream'
# which VisoMaster: auto (the one that runs on the box's GPU, by nvidia-smi: upstream where it
# runs, fusion where only it does, nothing on a GPU neither runs on), upstream (v0.1.6, torch
# 2.4.1+cu124, Python 3.10, sm_50-sm_90, driver >= 525.60) or fusion (the fork's CUDA 13 line,
# torch 2.11.0+cu130, Python 3.12, sm_75-sm_120, driver >= 580); it sets the defaults of the
# repo URL, ref, requirements file and extra indexes (each still settable) (env
# VISOMASTER_FLAVOR)
visomaster_flavor = 'auto'
# the app's repository (env VISOMASTER_REPO_URL)
visomaster_repo_url = 'https://github.com/visomaster/VisoMaster.git'
# tag, branch or commit: the flavor pins a tag or commit; a branch name (main) follows that
# branch at every converge (env VISOMASTER_REF)
visomaster_ref = 'v0.1.6'
# bake the checkout at its ref and its packages into the image (build arg VISOMASTER_IN_IMAGE=1,
# with the VISOMASTER_* build args choosing which); the models are still fetched and verified at
# boot (env VISOMASTER_IN_IMAGE)
visomaster_in_image = False
# the checkout, in the workspace volume; it must stay writable (env VISOMASTER_DIR)
visomaster_dir = '/workspace/VisoMaster'
# converge the checkout on each converge; false leaves the directory alone (env
# VISOMASTER_CHECKOUT)
visomaster_checkout = True
# network retries of the clone or fetch
visomaster_checkout_retries = 3
# seconds before the first checkout retry, doubling
visomaster_checkout_backoff = 2
# requirements file in the checkout (its own index lines are used too) (env
# VISOMASTER_REQUIREMENTS)
visomaster_requirements = 'requirements_cu124.txt'
# extra indexes on uv's command line, spaces or commas between (an index option written on a
# requirement line, which uv refuses, is moved there too) (env VISOMASTER_EXTRA_INDEX_URLS)
visomaster_extra_index_urls = ['https://pypi.nvidia.com']
# install the flavor into its venv with uv, again only when the file, ref, flavor or Python
# changed (env VISOMASTER_INSTALL_REQUIREMENTS)
visomaster_install_requirements = True
# seconds one install of the app's requirements may take; then uv is stopped, the failure
# recorded (env VISOMASTER_PIP_DEADLINE)
visomaster_pip_deadline = 1800
# uv's timeout per HTTP request (UV_HTTP_TIMEOUT)
visomaster_pip_timeout = 15
# uv's retries per HTTP request (UV_HTTP_RETRIES)
visomaster_pip_retries = 2
# seconds a failed install (same inputs) is not tried again by a converge, doubling per failure
# up to 6 h; `red-app-pip --retry-now` tries at once
visomaster_pip_backoff = 600
# uv's download cache, on the workspace volume: a container re-created on it reinstalls the app
# from there (env VISOMASTER_UV_CACHE_DIR)
visomaster_uv_cache_dir = '/workspace/red-cache/uv'
# where uv keeps the Pythons it manages for a flavor the system lacks (Fusion's 3.12 on Ubuntu
# 22.04)
visomaster_python_dir = '/opt/red/python'
# where uv downloads those Pythons from instead of GitHub (a mirror of python-build-standalone's
# releases, for restricted networks) (env VISOMASTER_PYTHON_MIRROR, UV_PYTHON_INSTALL_MIRROR)
visomaster_python_mirror = ''
# the app install's record: result, cause, backoff (JSON)
visomaster_pip_state = '/var/lib/red/visomaster-pip.json'
# the app's progress: current step, state, percent (JSON)
visomaster_status_file = '/var/lib/red/visomaster-status.json'
# fetch the app's model files (Red's fetcher, several streams) and verify every model's SHA-256
# (env VISOMASTER_DOWNLOAD_MODELS)
visomaster_download_models = True
# fetch rounds until every model verifies
visomaster_models_attempts = 3
# seconds one fetch round may take before it is stopped
visomaster_models_timeout = 3600
# seconds all the fetch rounds of one converge may take together; then the failure is recorded
# (env VISOMASTER_MODELS_DEADLINE)
visomaster_models_deadline = 3600
# seconds a failed model (or CLIP) download (same model list, URL and hash) is not tried again
# by a converge, doubling per failure up to 6 h; `red-app-models --retry-now` (`red-app-clip
# --retry-now`) tries at once
visomaster_models_backoff = 600
# the models' verification record (JSON); CLIP's, clip-state.json, lies beside it
visomaster_models_state = '/var/lib/red/models-state.json'
# the verified model files' hashes (size, times, inode), on the workspace volume with the files:
# a container re-created on it does not hash them again
visomaster_models_cache = '/workspace/red-cache/models-verified.json'
# model files Red's fetcher downloads at once (each resumed after a cut, verified before it
# replaces the model) (env VISOMASTER_MODELS_STREAMS)
visomaster_models_streams = 4
# fetch and verify the CLIP weights the text masks load (ViT-B/16) at provisioning (env
# VISOMASTER_DOWNLOAD_CLIP)
visomaster_download_clip = True
# where the CLIP ViT-B/16 weights come from (openai/CLIP's clip.py; a mirror) (env
# VISOMASTER_CLIP_URL)
visomaster_clip_url = 'https://openaipublic.azureedge.net/clip/models/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt'
# their SHA-256 (the URL's directory name) (env VISOMASTER_CLIP_SHA256)
visomaster_clip_sha256 = '5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f'
# the persistent CLIP cache; ~/.cache/clip (where CLIP looks) links to it
visomaster_clip_dir = '/workspace/red-cache/clip'
# start the app on the desktop at boot (env VISOMASTER_AUTOSTART)
visomaster_autostart = False
# below this /dev/shm size (MB) a warning names the --shm-size fix
visomaster_min_shm_mb = 1024

# -- provisioning: the seed's boot-time flow (red-onstart) and converge runs
# URL of a script to download and run at boot; none: the seed's local scripts (env
# PROVISIONING_SCRIPT)
provisioning_script = ''
# seconds the script may run; then its process group is stopped (env PROVISIONING_TIMEOUT)
provisioning_script_timeout = 3600
# seconds to connect when downloading the script (env PROVISIONING_CONNECT_TIMEOUT)
provisioning_download_connect_timeout = 10
# seconds for one download attempt (env PROVISIONING_DOWNLOAD_TIMEOUT)
provisioning_download_timeout = 120
# download retries after the first attempt (env PROVISIONING_DOWNLOAD_RETRIES)
provisioning_download_retries = 3
# seconds before the first download retry, doubling (env PROVISIONING_DOWNLOAD_BACKOFF)
provisioning_download_backoff = 2
# seconds a second converge waits for the one in progress, then exits 75 (env
# PROVISIONING_LOCK_TIMEOUT)
provisioning_lock_timeout = 900
# seconds the boot-time flow waits for supervisord to answer
provisioning_supervisor_wait = 120
# markers, the lock and the downloaded script
provisioning_state_dir = '/var/lib/red/provisioning'
# keep Red's marked block in /root/onstart.sh (Vast runs it at every start in its ssh/jupyter
# modes; it brings the services back); false removes the block
provisioning_onstart_block = True
# where logs go when base_logs_dir cannot be written
provisioning_fallback_logs_dir = '/var/log/red'

# -- notebooks
# what Red shipped last time, per notebook (a user's edits are never overwritten)
notebooks_state_dir = '/var/lib/red/notebooks'

# -- portal: the front door (nginx on one HTTPS port) and the status page
# one authenticated HTTPS entrance (nginx) for the status page, the desktop and Jupyter; false:
# no front door, noVNC and Jupyter on their own ports off loopback (env PORTAL_ENABLED)
portal_enabled = True
# the front door's HTTPS port; point Vast's OPEN_BUTTON_PORT at it (env PORTAL_PORT)
portal_port = 8443
# also keep noVNC and Jupyter on their own ports off loopback (trade-off: two more public
# listeners, behind only the VNC password over plain HTTP and Jupyter's token) (env
# PORTAL_DIRECT_PORTS)
portal_direct_ports = False
# the front door's token: 8 to 256 characters of A-Z a-z 0-9 . _ ~ - (what a URL carries as is)
# (env OPEN_BUTTON_TOKEN)
# portal_token: generated when unset, kept in /etc/red/secrets/portal_token (root-only)
# the front door's config, secrets include and self-signed certificate (root-only)
portal_dir = '/etc/red/portal'
# Vast's instance certificate, served as is when it and its key exist
portal_instance_cert = '/etc/instance.crt'
# the instance certificate's key
portal_instance_key = '/etc/instance.key'
# days the self-signed certificate (made once per container) is valid
portal_cert_days = 3650
# the status page and its assets, served by the front door
portal_www_dir = '/opt/red/portal/www'
# JupyterLab's base_url behind the front door (on its direct port too, when kept)
portal_jupyter_base_url = '/jupyter/'
# the JSON status and log tails the status page reads
portal_status_dir = '/var/lib/red/status'
# seconds between two status snapshots
portal_status_interval = 2
