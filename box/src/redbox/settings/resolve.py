"""
The one rule for every setting in ``redbox.settings.registry``: ``--data`` > environment (the first
env name set) > data (group data, inventory data, or the box's settings file) > default. A
bad value falls back with one line naming where it came from and what was done instead;
a secret's value is never shown; a strict setting stops the run. The same code resolves
the deploy's settings (``operations/settings.py``) and the box-side tools' (``box_settings``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redbox.app import flavors
from redbox.app.gpu import Gpu
from redbox.settings import parse
from redbox.settings.registry import BY_KEY, DEFAULTS, SETTINGS, SHARED_SECRET_ENV, Setting

# What the deploy leaves on the box for its tools: the resolved non-secret values and which
# keys came from --data (so a tool applies the same precedence without pyinfra).
SETTINGS_FILE = "/etc/red/settings.json"

Data = Callable[[str], Any]
# The box's GPU, asked only when a flavor is chosen: (the first GPU, "") or (None, why).
GpuProbe = Callable[[], tuple[Gpu | None, str]]
FLAVOR_SELECTOR = "visomaster_flavor"


class StrictSettingError(ValueError):
    """A strict setting (a build setting) has a bad value: the run stops."""


@dataclass
class Resolved:
    """Resolved settings: by key (``resolved["sshd_port"]`` or ``resolved.sshd_port``)."""

    values: dict[str, Any]
    # Where each value came from: "--data KEY", an env name, or "KEY" (data or default).
    sources: dict[str, str] = field(default_factory=dict)
    # The phrase of each refused value ("is not an http(s) URL").
    problems: dict[str, str] = field(default_factory=dict)
    decisions: list[str] = field(default_factory=list)
    # Keys whose default a selector's value stood in for: "visomaster_flavor=fusion".
    presets: dict[str, str] = field(default_factory=dict)
    # The flavor for this box's GPU (visomaster_flavor=auto picks it).
    flavor: flavors.Choice | None = None

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["values"][key]
        except KeyError:
            raise AttributeError(key) from None

    def secret_path(self, key: str) -> str:
        return f"{self.values['secrets_dir']}/{key}"


def _source(setting: Setting, env: Mapping[str, str], data: Data, cli: set[str],
            default: Any = None):
    """
    (source, raw) for a setting: --data, its env names, then data, then its default. A
    selector's preset (``default``) stands in for the default, and for data that only repeats
    the registry's default (group_data/all.py holds every default).
    """
    if setting.key in cli:
        return f"--data {setting.key}", data(setting.key)
    name, raw = setting.from_env(env)
    if name is not None:
        return name, raw
    raw = data(setting.key)
    if default is not None and (raw is None or raw == setting.default):
        return setting.key, default
    return setting.key, setting.default if raw is None else raw


def _keys(setting: Setting, env: Mapping[str, str], data: Data, cli: set[str],
          notes: list[str]) -> list[str]:
    """SSH public keys from every env name (or --data), one per line; bad lines skipped."""
    if setting.key in cli:
        sources = [(f"--data {setting.key}", data(setting.key))]
    else:
        sources = [(name, env.get(name)) for name in setting.env]
        if not any(value for _, value in sources):
            sources = [(setting.key, data(setting.key))]
    keys: list[str] = []
    for name, value in sources:
        if not value:
            continue
        # Env values often carry several keys joined by literal "\n"s.
        text = "\n".join(value) if isinstance(value, (list, tuple)) else str(value)
        for number, raw_line in enumerate(text.replace("\\n", "\n").splitlines(), 1):
            line = raw_line.strip()
            if not line or line.startswith("#"):
                continue
            if parse.ssh_public_key(line):
                if line not in keys:
                    keys.append(line)
            else:
                notes.append(f"{name}: line {number} is not an SSH public key: skipped")
    if not keys:
        notes.append(
            f"{'/'.join(setting.env)} unset: no key added; "
            "keys already in /root/.ssh/authorized_keys are kept"
        )
    return keys


def _shown(setting: Setting, raw: Any) -> str:
    return parse.show_url(str(raw)) if setting.parser is parse.http_url else parse.show(raw)


def resolve(env: Mapping[str, str] | None = None, data: Data | None = None,
            cli: Iterable[str] = (), build_env: Mapping[str, str] | None = None,
            gpu: GpuProbe | None = None) -> Resolved:
    """
    Resolve every setting.

    + env: the box's runtime environment (empty at image build: no runtime setting is read)
    + data: a key's value from --data / group data / the settings file, None when unset
    + cli: the keys given with --data (they win over the environment)
    + build_env: the environment build settings are read from (the process running the build)
    + gpu: asks for the box's GPU (the flavor follows it); none: not known here (an image
      build), auto takes the fallback flavor without a word
    """
    env = env or {}
    data = data or DEFAULTS.get
    cli = set(cli)
    build_env = build_env or {}
    result = Resolved(values={})
    notes = result.decisions
    taken_ports: set[int] = set()
    # A port left at its default holds it whatever the order: a value another setting gives
    # that equals it falls back (JUPYTER_PORT=8443 against the door's default 8443).
    held_defaults = {setting.default for setting in SETTINGS if setting.distinct_port
                     and setting.key not in cli and setting.from_env(env)[0] is None}
    # Defaults that selectors (visomaster_flavor) stand in for, by key: (value, "selector=choice").
    presets: dict[str, tuple[Any, str]] = {}
    for setting in SETTINGS:
        if setting.combine_env:
            result.values[setting.key] = _keys(setting, env, data, cli, notes)
            continue
        preset, chosen_by = presets.get(setting.key, (None, None))
        source, raw = _source(setting, build_env if setting.build else env, data, cli, preset)
        result.sources[setting.key] = source
        if chosen_by is not None and raw is preset:
            result.presets[setting.key] = chosen_by
        if setting.secret and raw is None:
            # The shared name is left out of the line when the secret has names of its own
            # (JUPYTER_TOKEN unset); the front door's token has only the shared one.
            own_names = [name for name in setting.env if name != SHARED_SECRET_ENV]
            names = own_names or list(setting.env) or [setting.key]
            notes.append(f"{'/'.join(names)} unset: using the "
                         f"generated secret kept in {_secret_file(result, setting)} "
                         "(root-only; read it there)")
            result.values[setting.key] = None
            continue
        try:
            value = setting.parser(raw)
        except parse.Invalid as invalid:
            result.problems[setting.key] = invalid.problem
            value = _fallback(setting, source, raw, invalid.problem, result, preset=
                              None if chosen_by is None else (preset, chosen_by))
        else:
            if setting.warn and (warning := setting.warn(value)):
                notes.append(f"{source}: {warning}")
        if setting.distinct_port and value is not None:
            if value in taken_ports or (value != setting.default and value in held_defaults):
                notes.append(f"{source}={value} is already used by another service: "
                             f"using {setting.default}")
                value = setting.default
            taken_ports.add(value)
        result.values[setting.key] = value
        if setting.key == FLAVOR_SELECTOR:
            value = _choose_flavor(value, result, gpu)
        if setting.presets:
            _select(setting, value, presets, result)
    return result


def _choose_flavor(configured: str, result: Resolved, gpu: GpuProbe | None) -> str:
    """The flavor whose presets apply: the configured one, or auto's pick for the GPU."""
    fallback = result.values["visomaster_fallback_flavor"]
    if gpu is None:
        result.flavor = flavors.Choice(configured, fallback if configured == flavors.AUTO
                                       else configured, "the GPU is not known here")
    else:
        found, problem = gpu()
        result.flavor = flavors.choose(configured, found, fallback, problem)
        chosen = result.flavor.chosen or "nothing"
        result.decisions.append(
            f"{result.sources[FLAVOR_SELECTOR]}={configured}: {chosen} ({result.flavor.reason})")
        if result.flavor.warning:
            result.decisions.append(result.flavor.warning)
    # A refusal installs nothing; the settings still hold a flavor's values.
    return result.flavor.chosen or fallback


def _select(selector: Setting, value: Any, presets: dict[str, tuple[Any, str]],
            result: Resolved) -> None:
    """
    Record what a selector's value (auto's pick, for the flavor) presets; a choice other than
    the default gets one line.
    """
    chosen = selector.presets.get(value, {})
    for key, preset in chosen.items():
        presets[key] = (preset, f"{selector.key}={value}")
    if result.values[selector.key] != selector.default:
        result.decisions.append(
            f"{result.sources[selector.key]}={value}: defaults "
            + ", ".join(f"{key}={' '.join(v) if isinstance(v, list) else v}"
                        for key, v in chosen.items())
            + " (each still settable by its own --data or env)")


def _secret_file(result: Resolved, setting: Setting) -> str:
    return f"{result.values.get('secrets_dir', DEFAULTS['secrets_dir'])}/{setting.key}"


def _fallback(setting: Setting, source: str, raw: Any, problem: str, result: Resolved, *,
              preset: tuple[Any, str] | None = None) -> Any:
    if setting.strict:
        names = " or ".join([f"--data {setting.key}=...", *setting.env])
        raise StrictSettingError(
            f"{source}={parse.show(raw)} {problem} (set it with {names})"
        )
    if setting.secret:
        result.decisions.append(
            f"{source} {problem}: using the generated secret kept in "
            f"{_secret_file(result, setting)}"
        )
        return None
    default = setting.default if preset is None else preset[0]
    shown = ", ".join(default) if isinstance(default, list) else default
    action = setting.fallback or f"using {shown}" + (
        f" (the default of {preset[1]})" if preset is not None else "")
    result.decisions.append(f"{source}={_shown(setting, raw)} {problem}: {action}")
    return default


def settings_file_payload(resolved: Resolved, cli: Iterable[str],
                          per_run: Iterable[str] = ()) -> dict:
    """
    What the deploy writes to SETTINGS_FILE: every non-secret value as resolved, whatever its
    source (a converge over SSH and one on the box, whose environments name a value in
    different ways, write the same file), and the --data keys.

    + per_run: keys a caller sets for one run only (red_phase=configure at boot): their
      defaults are left out too, so the boot's configure run and the full run after it write
      the same file
    """
    kept = set(cli)
    per_run = set(per_run) - kept
    # A --data value the caller does not keep (a per-run one: red-provision's fallback logs
    # dir, the entrypoint's skipped app steps) is not the box's setting: not written either.
    values = {key: value for key, value in resolved.values.items()
              if not BY_KEY[key].secret
              and (resolved.sources.get(key) != f"--data {key}" or key in kept)
              and not (key in per_run and value == BY_KEY[key].default)}
    return {"values": values, "cli": sorted(set(cli) - {
        key for key in cli if key in BY_KEY and BY_KEY[key].secret})}


def box_settings(env: Mapping[str, str] | None = None, path: str = SETTINGS_FILE) -> Resolved:
    """
    The settings as a box-side tool sees them: the environment over what the last converge
    wrote to ``path`` (values from --data win), over the defaults. A setting the environment
    names, even empty (``PROVISIONING_SCRIPT= red-onstart``: no URL), is not taken from the
    file: the converge's copy of an env value must not outlive the env's own say.
    """
    env = os.environ if env is None else env
    try:
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
    except (OSError, ValueError):
        saved = {}
    values = saved.get("values") if isinstance(saved, dict) else None
    values = values if isinstance(values, dict) else {}
    cli = saved.get("cli") if isinstance(saved, dict) else None
    cli = [key for key in cli if key in values] if isinstance(cli, list) else []
    named = {setting.key for setting in SETTINGS
             if setting.key not in cli and any(name in env for name in setting.env_names)}
    values = {key: value for key, value in values.items() if key not in named}
    return resolve(env, data=values.get, cli=cli)


@dataclass
class ProvisioningSettings:
    """What the boot-time flow and the converge runs need."""

    # "" when PROVISIONING_SCRIPT is unset or unusable (then url_problem says why).
    script_url: str
    url_problem: str | None
    script_timeout: int
    connect_timeout: int
    download_timeout: int
    download_retries: int
    download_backoff: int
    lock_timeout: int
    supervisor_wait: int
    state_dir: str
    fallback_scripts: tuple[str, ...]
    decisions: list[str] = field(default_factory=list)


# The seed's local scripts, in the seed's order: without a URL the first that exists runs.
SEED_SCRIPTS = (
    "/vast_ai_provisioning_script.sh",
    "/src/provisioning_script.sh",
    "/VisoMaster/src/provisioning_script.sh",
)


def provisioning_settings(
        source: Resolved | Mapping[str, str] | None = None) -> ProvisioningSettings:
    """
    The provisioning view of resolved settings (or of ``box_settings`` for an environment);
    its decisions are the provisioning ones.
    """
    resolved = source if isinstance(source, Resolved) else box_settings(source)
    prefix = "provisioning_"
    return ProvisioningSettings(
        script_url=resolved["provisioning_script"],
        url_problem=resolved.problems.get("provisioning_script"),
        script_timeout=resolved["provisioning_script_timeout"],
        connect_timeout=resolved["provisioning_download_connect_timeout"],
        download_timeout=resolved["provisioning_download_timeout"],
        download_retries=resolved["provisioning_download_retries"],
        download_backoff=resolved["provisioning_download_backoff"],
        lock_timeout=resolved["provisioning_lock_timeout"],
        supervisor_wait=resolved["provisioning_supervisor_wait"],
        state_dir=resolved["provisioning_state_dir"],
        fallback_scripts=SEED_SCRIPTS,
        decisions=[line for line in resolved.decisions
                   if any(_about(line, setting) for setting in SETTINGS
                          if setting.key.startswith(prefix))],
    )


def _about(line: str, setting: Setting) -> bool:
    return any(line.startswith(f"{name}=") for name in (*setting.env, setting.key,
                                                         f"--data {setting.key}"))
