"""
Every setting of Red, declared once: key, default, the env names users know (in precedence
order), parser, whether it is a secret, and one line of doc. ``redbox.settings.resolve`` applies the
one rule to all of them (``--data`` > env > group data > default; a bad value falls back
with one line); ``group_data/all.py`` and docs/settings.md are generated from
this list (``make settings-docs``) and checked against it by the unit tests.

Deliberately strict (a bad value stops the run instead of falling back): ``red_phase`` and
``python_version``, the two build settings: a wrong value would silently build another image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redbox.app import flavors
from redbox.settings import parse

# Bounds for VNC_RESOLUTION: below 640x480 the desktop is unusable, above 8K Xvnc's
# framebuffer alone would take hundreds of MB.
RESOLUTION_MIN, RESOLUTION_MAX = (640, 480), (7680, 4320)
# VNC's DES authentication reads 8 characters; fewer than 6 is too weak to accept.
VNC_PASSWORD_MIN, VNC_PASSWORD_MAX = 6, 8
# Vast's one secret for its web "open" buttons: the natural shared fallback for ours.
SHARED_SECRET_ENV = "OPEN_BUTTON_TOKEN"  # noqa: S105 - a variable name, not a secret
# The front door's token travels in URLs (?token=): only characters a URL carries as they
# are, which also keeps it data in nginx's config. Vast's OPEN_BUTTON_TOKEN is of this kind.
PORTAL_TOKEN_MIN, PORTAL_TOKEN_MAX = 8, 256


@dataclass(frozen=True)
class Setting:
    key: str
    default: Any
    parser: Callable[[Any], Any]
    doc: str
    # Env names in precedence order; the first that is set and non-empty is used.
    env: tuple[str, ...] = ()
    # Generated when unset (kept root-only in secrets_dir/<key>); its value is never logged.
    secret: bool = False
    # Stops the run instead of falling back (the build settings).
    strict: bool = False
    # Read from the environment of the process that runs the deploy (the image build), not
    # from the box's runtime environment.
    build: bool = False
    # Ports that must differ from each other: a clash falls back to the default.
    distinct_port: bool = False
    # Every env name contributes (several SSH keys), instead of the first one set.
    combine_env: bool = False
    # When none of ``env`` is set: these names' values joined by the separator (Vast's
    # DISPLAY_SIZEW x DISPLAY_SIZEH for the desktop size), any of them set.
    joined_env: tuple[tuple[str, ...], str] | None = None
    # What a fallback does, when not "using <default>".
    fallback: str | None = None
    # A note for a value that is accepted but weaker than it looks.
    warn: Callable[[Any], str | None] | None = None
    # Shown in docs/settings.md's default column, when not the value itself.
    shown_default: str | None = None
    # The concern (a heading in group_data/all.py).
    group: str = ""
    # A selector ("flavor"): per value, the defaults it stands in for other settings' own
    # (declared after it). An explicit --data or env value of those settings still wins.
    presets: dict[str, dict[str, Any]] | None = None

    @property
    def joined_name(self) -> str | None:
        """The source name of a joined value ("DISPLAY_SIZEW/DISPLAY_SIZEH")."""
        return "/".join(self.joined_env[0]) if self.joined_env else None

    def from_env(self, env) -> tuple[str | None, Any]:
        """(the env name, its raw value) this setting takes from ``env``; (None, None): unset."""
        for name in self.env:
            value = env.get(name)
            if value is not None and value != "":
                return name, value
        if self.joined_env and any(env.get(name) for name in self.joined_env[0]):
            names, separator = self.joined_env
            return self.joined_name, separator.join(env.get(name, "") for name in names)
        return None, None

    @property
    def env_names(self) -> tuple[str, ...]:
        """Every env name the setting reads, its joined ones last."""
        return self.env + (self.joined_env[0] if self.joined_env else ())



def _flavor_presets(flavor: flavors.Flavor) -> dict[str, Any]:
    """What a flavor (redbox.app.flavors, declared there once) sets by default."""
    return {"visomaster_repo_url": flavor.repo_url, "visomaster_ref": flavor.ref,
            "visomaster_requirements": flavor.requirements,
            "visomaster_extra_index_urls": list(flavor.extra_index_urls)}


# The flavors of VisoMaster (visomaster_flavor): what each one sets by default.
VISOMASTER_FLAVORS: dict[str, dict[str, Any]] = {
    name: _flavor_presets(flavor) for name, flavor in flavors.FLAVORS.items()}
UPSTREAM, FUSION = VISOMASTER_FLAVORS["upstream"], VISOMASTER_FLAVORS["fusion"]
# openai/CLIP's clip/clip.py _MODELS["ViT-B/16"]; the hash is the URL's directory name.
CLIP_SHA256 = "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"
CLIP_URL = f"https://openaipublic.azureedge.net/clip/models/{CLIP_SHA256}/ViT-B-16.pt"


def _s(group: str, key: str, default: Any, parser, doc: str, **extra) -> Setting:
    return Setting(key=key, default=default, parser=parser, doc=doc, group=group, **extra)


SETTINGS: tuple[Setting, ...] = (
    # -- base
    _s("base", "red_phase", "all", parse.choice("install", "configure", "all"),
       "which half runs: install (image build, reads no runtime setting), configure "
       "(runtime only) or all (boot and live boxes)", strict=True),
    _s("base", "base_workspace_dir", "/workspace", parse.absolute_dir,
       "the user's work; Vast mounts volumes here"),
    _s("base", "base_logs_dir", "/logs", parse.absolute_dir, "every service's log"),
    _s("base", "base_notebooks_dir", "/notebooks", parse.absolute_dir,
       "the diagnostic notebooks"),
    _s("base", "base_locale", "C.UTF-8", parse.word,
       "the system locale (glibc's built-in C.UTF-8 needs no locale-gen)"),
    _s("base", "secrets_dir", "/etc/red/secrets", parse.absolute_dir,
       "where generated secrets are kept, root-only (0600)"),
    # -- python
    _s("python", "python_version", "3.10", parse.python_version,
       "the image's default app venv's Python (upstream runs on 3.10 or 3.11; a flavor's own "
       "Python replaces it at its install; build arg PYTHON_VERSION)",
       env=("RED_PYTHON_VERSION",), strict=True, build=True),
    _s("python", "python_app_venv", "/opt/red/venv", parse.absolute_dir, "the app's venv"),
    _s("python", "python_ipykernel_version", "6.29.5", parse.word,
       "ipykernel in the app venv, so Jupyter can run the app's Python"),
    # -- ssh
    _s("ssh", "sshd_port", 22, parse.port, "port of the image's sshd",
       env=("SSH_PORT",), distinct_port=True),
    _s("ssh", "ssh_authorized_keys", [], lambda raw: raw,
       "public keys added to root's authorized_keys (several allowed, one per line; keys "
       "already there are kept)", env=("SSH_PUBLIC_KEY", "PUBLIC_KEY"), combine_env=True,
       shown_default="none"),
    # -- jupyter
    _s("jupyter", "jupyter_port", 8888, parse.port,
       "JupyterLab's port (loopback behind the front door, base URL /jupyter/)",
       env=("JUPYTER_PORT",), distinct_port=True),
    _s("jupyter", "jupyter_token", None, parse.token(8),
       "Jupyter's token, 8+ printable characters",
       env=("JUPYTER_TOKEN", SHARED_SECRET_ENV), secret=True, shown_default="generated"),
    _s("jupyter", "jupyter_venv", "/opt/red/jupyter", parse.absolute_dir,
       "JupyterLab's own venv"),
    _s("jupyter", "jupyter_lock", "requirements/jupyter.lock", parse.relative_file,
       "JupyterLab's pins (in the deploy)"),
    _s("jupyter", "jupyter_root_dir", "/", parse.absolute_path_or_root,
       "what Jupyter's file browser shows"),
    # -- desktop
    _s("desktop", "novnc_port", 6080, parse.port,
       "noVNC (the desktop in a browser; loopback behind the front door)",
       env=("NOVNC_PORT",), distinct_port=True),
    _s("desktop", "vnc_display", 1, parse.integer(0, 99), "the X display number"),
    _s("desktop", "vnc_port", 5901, parse.port, "Xvnc's raw VNC port, loopback only",
       env=("VNC_PORT",), distinct_port=True),
    _s("desktop", "vnc_resolution", "1920x1080",
       parse.resolution(RESOLUTION_MIN, RESOLUTION_MAX),
       "desktop size, 640x480..7680x4320 (else DISPLAY_SIZEW x DISPLAY_SIZEH)",
       env=("VNC_RESOLUTION",), joined_env=(("DISPLAY_SIZEW", "DISPLAY_SIZEH"), "x")),
    _s("desktop", "vnc_depth", 24, parse.integer(16, 32), "the desktop's colour depth"),
    _s("desktop", "vnc_password", None,
       parse.token(VNC_PASSWORD_MIN),
       "VNC password: 6 to 8 characters (VNC reads only 8)",
       env=("VNC_PW", "VNC_PASSWORD", SHARED_SECRET_ENV), secret=True,
       shown_default="generated", warn=lambda value: (
           f"VNC authentication uses only the first {VNC_PASSWORD_MAX} of its {len(value)} "
           "characters" if len(value) > VNC_PASSWORD_MAX else None)),
    # -- supervisor
    _s("supervisor", "supervisor_start", True, parse.boolean,
       "start supervisord when it is not running (the entrypoint starts it itself)"),
    _s("supervisor", "supervisor_socket", "/var/run/supervisor.sock", parse.absolute_dir,
       "supervisord's root-only control socket"),
    _s("supervisor", "supervisor_log_maxbytes", "10MB", parse.size,
       "size-based rotation of each /logs/<program>.log"),
    _s("supervisor", "supervisor_log_backups", 3, parse.integer(0, 100),
       "rotated logs kept per program"),
    # -- visomaster
    _s("visomaster", "visomaster_fallback_flavor", "upstream", parse.choice(*VISOMASTER_FLAVORS),
       "the flavor auto takes on a box without a usable GPU (the app needs one to start)",
       env=("VISOMASTER_FALLBACK_FLAVOR",)),
    _s("visomaster", "visomaster_flavor", flavors.AUTO,
       parse.choice(flavors.AUTO, *VISOMASTER_FLAVORS),
       "which VisoMaster: auto (the one that runs on the box's GPU, by nvidia-smi: upstream "
       "where it runs, fusion where only it does, nothing on a GPU neither runs on), upstream "
       "(v0.1.6, torch 2.4.1+cu124, Python 3.10, sm_50-sm_90, driver >= 525.60) or fusion "
       "(the fork's CUDA 13 line, torch 2.11.0+cu130, Python 3.12, sm_75-sm_120, driver >= "
       "580); it sets the defaults of the repo URL, ref, requirements file and extra indexes "
       "(each still settable)",
       env=("VISOMASTER_FLAVOR",), presets=VISOMASTER_FLAVORS),
    _s("visomaster", "visomaster_repo_url", UPSTREAM["visomaster_repo_url"],
       parse.git_url, "the app's repository", env=("VISOMASTER_REPO_URL",),
       shown_default="the flavor's"),
    _s("visomaster", "visomaster_ref", UPSTREAM["visomaster_ref"], parse.git_ref,
       "tag, branch or commit: the flavor pins a tag or commit; a branch name (main) follows "
       "that branch at every converge", env=("VISOMASTER_REF",), shown_default="the flavor's"),
    _s("visomaster", "visomaster_in_image", False, parse.boolean,
       "bake the checkout at its ref and its packages into the image (build arg "
       "VISOMASTER_IN_IMAGE=1, with the VISOMASTER_* build args choosing which); the models "
       "are still fetched and verified at boot", env=("VISOMASTER_IN_IMAGE",), strict=True,
       build=True),
    _s("visomaster", "visomaster_dir", "/workspace/VisoMaster", parse.absolute_dir,
       "the checkout, in the workspace volume; it must stay writable",
       env=("VISOMASTER_DIR",)),
    _s("visomaster", "visomaster_checkout", True, parse.boolean,
       "converge the checkout on each converge; false leaves the directory alone",
       env=("VISOMASTER_CHECKOUT",)),
    _s("visomaster", "visomaster_checkout_retries", 3, parse.integer(0, 10),
       "network retries of the clone or fetch"),
    _s("visomaster", "visomaster_checkout_backoff", 2, parse.number(0, 300),
       "seconds before the first checkout retry, doubling"),
    _s("visomaster", "visomaster_requirements", UPSTREAM["visomaster_requirements"],
       parse.relative_file, "requirements file in the checkout (its own index lines are used too)",
       env=("VISOMASTER_REQUIREMENTS",),
       shown_default="the flavor's"),
    _s("visomaster", "visomaster_extra_index_urls", UPSTREAM["visomaster_extra_index_urls"],
       parse.url_list, "extra indexes on uv's command line, spaces or commas between (an index "
       "option written on a requirement line, which uv refuses, is moved there too)",
       env=("VISOMASTER_EXTRA_INDEX_URLS",),
       shown_default="the flavor's"),
    _s("visomaster", "visomaster_install_requirements", True, parse.boolean,
       "install the flavor into its venv with uv, again only when the file, ref, flavor or "
       "Python changed",
       env=("VISOMASTER_INSTALL_REQUIREMENTS",)),
    _s("visomaster", "visomaster_pip_deadline", 1800, parse.integer(60, 86400),
       "seconds one install of the app's requirements may take; then uv is stopped, the "
       "failure recorded", env=("VISOMASTER_PIP_DEADLINE",)),
    _s("visomaster", "visomaster_pip_timeout", 15, parse.integer(1, 300),
       "uv's timeout per HTTP request (UV_HTTP_TIMEOUT)"),
    _s("visomaster", "visomaster_pip_retries", 2, parse.integer(0, 10),
       "uv's retries per HTTP request (UV_HTTP_RETRIES)"),
    _s("visomaster", "visomaster_pip_backoff", 600, parse.integer(0, 86400),
       "seconds a failed install (same inputs) is not tried again by a converge, doubling per "
       "failure up to 6 h; `red-app-pip --retry-now` tries at once"),
    _s("visomaster", "visomaster_uv_cache_dir", "/workspace/red-cache/uv", parse.absolute_dir,
       "uv's download cache, on the workspace volume: a container re-created on it reinstalls "
       "the app from there", env=("VISOMASTER_UV_CACHE_DIR",)),
    _s("visomaster", "visomaster_python_dir", "/opt/red/python", parse.absolute_dir,
       "where uv keeps the Pythons it manages for a flavor the system lacks (Fusion's 3.12 on "
       "Ubuntu 22.04)"),
    _s("visomaster", "visomaster_python_mirror", "", parse.http_url,
       "where uv downloads those Pythons from instead of GitHub (a mirror of "
       "python-build-standalone's releases, for restricted networks)",
       env=("VISOMASTER_PYTHON_MIRROR", "UV_PYTHON_INSTALL_MIRROR"),
       fallback="uv's default (GitHub)", shown_default="none"),
    _s("visomaster", "visomaster_pip_state", "/var/lib/red/visomaster-pip.json",
       parse.absolute_dir, "the app install's record: result, cause, backoff (JSON)"),
    _s("visomaster", "visomaster_status_file", "/var/lib/red/visomaster-status.json",
       parse.absolute_dir, "the app's progress: current step, state, percent (JSON)"),
    _s("visomaster", "visomaster_download_models", True, parse.boolean,
       "fetch the app's model files (Red's fetcher, several streams) and verify every "
       "model's SHA-256",
       env=("VISOMASTER_DOWNLOAD_MODELS",)),
    _s("visomaster", "visomaster_models_attempts", 3, parse.integer(1, 10),
       "fetch rounds until every model verifies"),
    _s("visomaster", "visomaster_models_timeout", 3600, parse.integer(60, 86400),
       "seconds one fetch round may take before it is stopped"),
    _s("visomaster", "visomaster_models_deadline", 3600, parse.integer(60, 86400),
       "seconds all the fetch rounds of one converge may take together; then the failure "
       "is recorded", env=("VISOMASTER_MODELS_DEADLINE",)),
    _s("visomaster", "visomaster_models_backoff", 600, parse.integer(0, 86400),
       "seconds a failed model (or CLIP) download (same model list, URL and hash) is not "
       "tried again by a converge, doubling per failure up to 6 h; `red-app-models "
       "--retry-now` (`red-app-clip --retry-now`) tries at once"),
    _s("visomaster", "visomaster_models_state", "/var/lib/red/models-state.json",
       parse.absolute_dir, "the models' verification record (JSON); CLIP's, "
       "clip-state.json, lies beside it"),
    _s("visomaster", "visomaster_models_cache", "/workspace/red-cache/models-verified.json",
       parse.absolute_dir, "the verified model files' hashes (size, times, inode), on the "
       "workspace volume with the files: a container re-created on it does not hash them "
       "again"),
    _s("visomaster", "visomaster_models_streams", 4, parse.integer(1, 16),
       "model files Red's fetcher downloads at once (each resumed after a cut, verified "
       "before it replaces the model)", env=("VISOMASTER_MODELS_STREAMS",)),
    _s("visomaster", "visomaster_download_clip", True, parse.boolean,
       "fetch and verify the CLIP weights the text masks load (ViT-B/16) at provisioning",
       env=("VISOMASTER_DOWNLOAD_CLIP",)),
    _s("visomaster", "visomaster_clip_url", CLIP_URL, parse.http_url,
       "where the CLIP ViT-B/16 weights come from (openai/CLIP's clip.py; a mirror)",
       env=("VISOMASTER_CLIP_URL",), shown_default="OpenAI's CDN"),
    _s("visomaster", "visomaster_clip_sha256", CLIP_SHA256, parse.sha256,
       "their SHA-256 (the URL's directory name)", env=("VISOMASTER_CLIP_SHA256",),
       shown_default="5806e77c...416f"),
    _s("visomaster", "visomaster_clip_dir", "/workspace/red-cache/clip", parse.absolute_dir,
       "the persistent CLIP cache; ~/.cache/clip (where CLIP looks) links to it"),
    _s("visomaster", "visomaster_autostart", False, parse.boolean,
       "start the app on the desktop at boot", env=("VISOMASTER_AUTOSTART",)),
    _s("visomaster", "visomaster_min_shm_mb", 1024, parse.integer(0, 1048576),
       "below this /dev/shm size (MB) a warning names the --shm-size fix"),
    # -- provisioning
    _s("provisioning", "provisioning_script", "", parse.http_url,
       "URL of a script to download and run at boot; none: the seed's local scripts",
       env=("PROVISIONING_SCRIPT",), fallback="nothing is downloaded", shown_default="none"),
    _s("provisioning", "provisioning_script_timeout", 3600, parse.integer(1, 86400),
       "seconds the script may run; then its process group is stopped",
       env=("PROVISIONING_TIMEOUT",)),
    _s("provisioning", "provisioning_download_connect_timeout", 10, parse.integer(1, 300),
       "seconds to connect when downloading the script", env=("PROVISIONING_CONNECT_TIMEOUT",)),
    _s("provisioning", "provisioning_download_timeout", 120, parse.integer(1, 3600),
       "seconds for one download attempt", env=("PROVISIONING_DOWNLOAD_TIMEOUT",)),
    _s("provisioning", "provisioning_download_retries", 3, parse.integer(0, 10),
       "download retries after the first attempt", env=("PROVISIONING_DOWNLOAD_RETRIES",)),
    _s("provisioning", "provisioning_download_backoff", 2, parse.integer(0, 300),
       "seconds before the first download retry, doubling",
       env=("PROVISIONING_DOWNLOAD_BACKOFF",)),
    _s("provisioning", "provisioning_lock_timeout", 900, parse.integer(0, 86400),
       "seconds a second converge waits for the one in progress, then exits 75",
       env=("PROVISIONING_LOCK_TIMEOUT",)),
    _s("provisioning", "provisioning_supervisor_wait", 120, parse.integer(1, 3600),
       "seconds the boot-time flow waits for supervisord to answer"),
    _s("provisioning", "provisioning_state_dir", "/var/lib/red/provisioning",
       parse.absolute_dir, "markers, the lock and the downloaded script"),
    _s("provisioning", "provisioning_onstart_block", True, parse.boolean,
       "keep Red's marked block in /root/onstart.sh (Vast runs it at every start in its "
       "ssh/jupyter modes; it brings the services back); false removes the block"),
    _s("provisioning", "provisioning_fallback_logs_dir", "/var/log/red", parse.absolute_dir,
       "where logs go when base_logs_dir cannot be written"),
    # -- notebooks
    _s("notebooks", "notebooks_state_dir", "/var/lib/red/notebooks", parse.absolute_dir,
       "what Red shipped last time, per notebook (a user's edits are never overwritten)"),
    # -- portal
    _s("portal", "portal_enabled", True, parse.boolean,
       "one authenticated HTTPS entrance (nginx) for the status page, the desktop and "
       "Jupyter; false: no front door, noVNC and Jupyter on their own ports off loopback",
       env=("PORTAL_ENABLED",)),
    _s("portal", "portal_port", 8443, parse.port,
       "the front door's HTTPS port; point Vast's OPEN_BUTTON_PORT at it",
       env=("PORTAL_PORT",), distinct_port=True),
    _s("portal", "portal_direct_ports", False, parse.boolean,
       "also keep noVNC and Jupyter on their own ports off loopback (trade-off: two more "
       "public listeners, behind only the VNC password over plain HTTP and Jupyter's token)",
       env=("PORTAL_DIRECT_PORTS",)),
    _s("portal", "portal_token", None, parse.url_token(PORTAL_TOKEN_MIN, PORTAL_TOKEN_MAX),
       f"the front door's token: {PORTAL_TOKEN_MIN} to {PORTAL_TOKEN_MAX} characters of "
       "A-Z a-z 0-9 . _ ~ - (what a URL carries as is)",
       env=(SHARED_SECRET_ENV,), secret=True, shown_default="generated"),
    _s("portal", "portal_dir", "/etc/red/portal", parse.absolute_dir,
       "the front door's config, secrets include and self-signed certificate (root-only)"),
    _s("portal", "portal_instance_cert", "/etc/instance.crt", parse.absolute_dir,
       "Vast's instance certificate, served as is when it and its key exist"),
    _s("portal", "portal_instance_key", "/etc/instance.key", parse.absolute_dir,
       "the instance certificate's key"),
    _s("portal", "portal_cert_days", 3650, parse.integer(1, 36500),
       "days the self-signed certificate (made once per container) is valid"),
    _s("portal", "portal_www_dir", "/opt/red/portal/www", parse.absolute_dir,
       "the status page and its assets, served by the front door"),
    _s("portal", "portal_jupyter_base_url", "/jupyter/", parse.url_path,
       "JupyterLab's base_url behind the front door (on its direct port too, when kept)"),
    _s("portal", "portal_status_dir", "/var/lib/red/status", parse.absolute_dir,
       "the JSON status and log tails the status page reads"),
    _s("portal", "portal_status_interval", 2, parse.integer(1, 300),
       "seconds between two status snapshots"),
)

BY_KEY: dict[str, Setting] = {setting.key: setting for setting in SETTINGS}


def _check_presets() -> None:
    """A selector comes before what it selects, and every preset value passes its parser."""
    order = [setting.key for setting in SETTINGS]
    for selector in SETTINGS:
        for choice, values in (selector.presets or {}).items():
            for key, value in values.items():
                if order.index(key) < order.index(selector.key):
                    raise ValueError(f"{selector.key} is declared after {key}, which it presets")
                if BY_KEY[key].parser(value) != value:
                    raise ValueError(f"{selector.key}={choice} presets a bad {key}")


_check_presets()
DEFAULTS: dict[str, Any] = {setting.key: setting.default for setting in SETTINGS}
ENV_NAMES: tuple[str, ...] = tuple(dict.fromkeys(
    name for setting in SETTINGS for name in setting.env
))
