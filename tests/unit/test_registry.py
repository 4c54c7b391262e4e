"""The settings registry: one declaration per setting, and the files generated from it."""

import json
import re

import pytest

from operations import settings
from redbox.provision import RUN_ONLY_KEYS
from redbox.settings import registry
from redbox.settings.resolve import StrictSettingError, box_settings, resolve, settings_file_payload
from tests.conftest import ROOT


def test_group_data_is_generated_from_the_registry():
    assert (ROOT / "group_data" / "all.py").read_text() == settings.group_data_text(), \
        "group_data/all.py is stale: run `make settings-docs`"


def test_settings_page_lists_exactly_the_registry():
    page = (ROOT / settings.SETTINGS_PAGE).read_text()
    assert page == settings.settings_page(), \
        f"{settings.SETTINGS_PAGE} is stale: run `make settings-docs`"
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    keys = [re.match(r"\| `([a-z0-9_]+)`", row)[1] for row in rows]
    assert keys == [setting.key for setting in registry.SETTINGS]
    for row, setting in zip(rows, registry.SETTINGS, strict=True):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert re.findall(r"`([A-Z0-9_]+)`", cells[1]) == list(setting.env_names)
        if setting.shown_default is None and not isinstance(setting.default, (bool, list)):
            assert cells[2] == str(setting.default)


def test_readme_links_to_the_settings_page():
    readme = (ROOT / "README.md").read_text()
    assert f"]({settings.SETTINGS_PAGE})" in readme, \
        f"the README does not link to {settings.SETTINGS_PAGE}"
    # One table, on its own page: no stale copy of its rows in the README.
    assert not [s.key for s in registry.SETTINGS if f"| `{s.key}` |" in readme]


def test_readme_shows_cis_test_command():
    # CI runs .ci/run's last command on a fresh clone: the README's test command, as is.
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    readme = (ROOT / "README.md").read_text()
    assert ci[-1] == "make test"
    assert f"```sh\n{ci[-1]}\n```" in readme, "the README's test command is not .ci/run's"


def test_group_data_values_equal_the_registry_defaults():
    namespace: dict = {}
    exec((ROOT / "group_data" / "all.py").read_text(), namespace)  # noqa: S102 - our own file
    loaded = {key: value for key, value in namespace.items() if not key.startswith("_")}
    assert loaded == {s.key: s.default for s in registry.SETTINGS if not s.secret}


def test_every_default_passes_its_own_parser():
    for setting in registry.SETTINGS:
        if setting.default is None or setting.combine_env:
            continue
        assert setting.parser(setting.default) == setting.default, setting.key


@pytest.mark.parametrize(("env", "problem"), [
    ({"JUPYTER_TOKEN": "abcdefgh\n"}, "has spaces, control or non-ASCII characters"),
    ({"VNC_RESOLUTION": "1280x720\n"}, None),  # stripped like every env text: still valid
    ({"VISOMASTER_REF": "v0.1.6\nx"}, "is not a tag, branch or commit name"),
])
def test_full_match_everywhere(env, problem):
    result = resolve(env)
    if problem is None:
        assert not result.decisions or all(
            next(iter(env)) not in line for line in result.decisions)
    else:
        assert any(problem in line for line in result.decisions), result.decisions


@pytest.mark.parametrize(("key", "raw"), [("python_version", "3.1O"), ("red_phase", "build")])
def test_strict_settings_stop_with_one_line_naming_the_setting(key, raw):
    with pytest.raises(StrictSettingError) as error:
        resolve(data={key: raw}.get, cli={key})
    assert f"--data {key}" in str(error.value) and "\n" not in str(error.value)


def test_build_settings_read_the_build_env_not_the_box_env():
    env = {"RED_PYTHON_VERSION": "3.12"}
    assert resolve(env)["python_version"] == "3.10"
    assert resolve({}, build_env=env)["python_version"] == "3.12"


def test_provisioning_settings_honour_data_from_the_command_line():
    result = resolve({"PROVISIONING_TIMEOUT": "60"},
                     data={"provisioning_script_timeout": 120}.get,
                     cli={"provisioning_script_timeout"})
    assert result["provisioning_script_timeout"] == 120


def test_box_tools_see_the_last_converge_under_their_environment(tmp_path):
    saved = resolve({"VNC_PORT": "5999"}, data={"jupyter_port": 9000}.get, cli={"jupyter_port"})
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings_file_payload(saved, {"jupyter_port"})))
    seen = box_settings({"JUPYTER_PORT": "7000", "NOVNC_PORT": "7080"}, path=str(path))
    assert seen["jupyter_port"] == 9000  # --data wins over the env
    assert seen["novnc_port"] == 7080  # env wins over the saved data
    # A value the converge took from its env is kept too: a tool whose env lacks it (a
    # session) sees what the converge resolved.
    assert seen["vnc_port"] == 5999
    assert box_settings({"PROVISIONING_SCRIPT": ""}, path=str(path))["provisioning_script"] == ""
    assert "vnc_password" not in json.loads(path.read_text())["values"]


def test_an_empty_env_value_hides_the_converges_copy_from_a_tool(tmp_path):
    # The converge took the URL from its env and kept it; `PROVISIONING_SCRIPT= red-onstart`
    # says "no URL" for that run, as it did before the file kept env values.
    saved = resolve({"PROVISIONING_SCRIPT": "https://example.test/p.sh", "VNC_PORT": "5999"})
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings_file_payload(saved, set())))
    assert box_settings({}, path=str(path))["provisioning_script"] == "https://example.test/p.sh"
    seen = box_settings({"PROVISIONING_SCRIPT": "", "VNC_PORT": ""}, path=str(path))
    assert seen["provisioning_script"] == "" and seen["vnc_port"] == 5901


def test_box_settings_without_a_file_are_the_defaults(tmp_path):
    assert box_settings({}, path=str(tmp_path / "missing.json")).values == \
        resolve({}).values


def test_a_per_run_data_value_is_not_the_boxs_setting():
    # red-provision's converge with a fallback logs dir: kept for that run only.
    saved = resolve({}, data={"base_logs_dir": "/var/log/red"}.get, cli={"base_logs_dir"})
    payload = settings_file_payload(saved, set())
    assert "base_logs_dir" not in payload["values"] and payload["cli"] == []
    kept = settings_file_payload(saved, {"base_logs_dir"})
    assert kept["values"]["base_logs_dir"] == "/var/log/red"


def test_the_boots_configure_run_and_the_full_run_write_the_same_settings_file():
    # The entrypoint's foreground step sets red_phase=configure for that run; the background
    # converge after it runs the whole deploy: one file for both, or every boot changes it.
    configure = resolve({}, data={"red_phase": "configure"}.get, cli={"red_phase"})
    full = resolve({})
    assert configure["red_phase"] == "configure" and full["red_phase"] == "all"
    assert settings_file_payload(configure, set(), per_run=RUN_ONLY_KEYS) == \
        settings_file_payload(full, set(), per_run=RUN_ONLY_KEYS)
    # A per-run key the box was given for good (inventory data) is still written.
    chosen = resolve({}, data={"base_logs_dir": "/data/logs"}.get)
    assert settings_file_payload(chosen, set(), per_run=RUN_ONLY_KEYS)["values"][
        "base_logs_dir"] == "/data/logs"


def test_a_port_given_the_default_of_a_later_service_falls_back():
    result = resolve({"JUPYTER_PORT": "8443"})
    assert result["jupyter_port"] == 8888 and result["portal_port"] == 8443
    assert any("JUPYTER_PORT=8443 is already used" in line for line in result.decisions)
