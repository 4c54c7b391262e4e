"""visomaster_flavor: a selector whose value stands in for other settings' defaults."""

import pytest

from redbox.settings import registry
from redbox.settings.resolve import box_settings, resolve

KEYS = ("visomaster_repo_url", "visomaster_ref", "visomaster_requirements",
        "visomaster_extra_index_urls")
LOOP = "http://127.0.0.1:9/simple"


def _app(result):
    return {key: result[key] for key in KEYS}


@pytest.mark.parametrize(("env", "cli", "expected", "line"), [
    # upstream is the default flavor: the registry's own defaults
    ({}, {}, registry.UPSTREAM, None),
    ({"VISOMASTER_FLAVOR": "upstream"}, {}, registry.UPSTREAM, None),
    # fusion: all four parts change together, and one line says what the flavor set
    ({"VISOMASTER_FLAVOR": "fusion"}, {}, registry.FUSION,
     "VISOMASTER_FLAVOR=fusion: defaults visomaster_repo_url=https://github.com/"
     "VisoMasterFusion/VisoMaster-Fusion.git, visomaster_ref=main"),
    ({}, {"visomaster_flavor": "fusion"}, registry.FUSION, "--data visomaster_flavor=fusion"),
    # each part still wins when given, by env or --data
    ({"VISOMASTER_FLAVOR": "fusion", "VISOMASTER_REF": "dev"}, {},
     {**registry.FUSION, "visomaster_ref": "dev"}, None),
    ({"VISOMASTER_FLAVOR": "fusion", "VISOMASTER_EXTRA_INDEX_URLS": f"{LOOP}, {LOOP}2"}, {},
     {**registry.FUSION, "visomaster_extra_index_urls": [LOOP, f"{LOOP}2"]}, None),
    ({"VISOMASTER_FLAVOR": "fusion"}, {"visomaster_requirements": "req.txt"},
     {**registry.FUSION, "visomaster_requirements": "req.txt"}, None),
    # the extra indexes have an env name now, on upstream too; empty means none
    ({"VISOMASTER_EXTRA_INDEX_URLS": LOOP}, {},
     {**registry.UPSTREAM, "visomaster_extra_index_urls": [LOOP]}, None),
    ({}, {"visomaster_extra_index_urls": []},
     {**registry.UPSTREAM, "visomaster_extra_index_urls": []}, None),
    # a bad part falls back to the flavor's value, not upstream's, and says so
    ({"VISOMASTER_FLAVOR": "fusion", "VISOMASTER_REF": "a..b"}, {}, registry.FUSION,
     "VISOMASTER_REF='a..b' is not a tag, branch or commit name: using main "
     "(the default of visomaster_flavor=fusion)"),
    # a bad flavor falls back to upstream with one line
    ({"VISOMASTER_FLAVOR": "Fusion!"}, {}, registry.UPSTREAM,
     "VISOMASTER_FLAVOR='Fusion!' is not one of upstream, fusion: using upstream"),
])
def test_a_flavor_sets_the_defaults_of_its_parts(env, cli, expected, line):
    result = resolve(env, data=lambda key: cli.get(key, registry.DEFAULTS.get(key)), cli=cli)
    assert _app(result) == expected
    if line:
        assert any(line in decision for decision in result.decisions), result.decisions
    else:
        assert not [d for d in result.decisions if "visomaster" in d.lower()
                    and "FLAVOR=fusion: defaults" not in d], result.decisions


def test_group_data_repeating_the_default_does_not_pin_upstream():
    # The deploy's data holds every default (group_data/all.py): those are not a user's choice.
    result = resolve({"VISOMASTER_FLAVOR": "fusion"}, data=registry.DEFAULTS.get)
    assert result.presets["visomaster_ref"] == "visomaster_flavor=fusion"
    assert _app(result) == registry.FUSION


def test_inventory_data_that_differs_from_the_default_wins_over_the_flavor():
    data = {**registry.DEFAULTS, "visomaster_ref": "v0.1.5"}
    result = resolve({"VISOMASTER_FLAVOR": "fusion"}, data=data.get)
    assert result["visomaster_ref"] == "v0.1.5"
    assert "visomaster_ref" not in result.presets


def test_box_tools_see_the_same_flavor(tmp_path):
    assert _app(box_settings({"VISOMASTER_FLAVOR": "fusion"}, str(tmp_path / "none"))) == \
        registry.FUSION


def test_every_preset_value_passes_its_parser_and_follows_its_selector():
    order = [setting.key for setting in registry.SETTINGS]
    for selector in registry.SETTINGS:
        for values in (selector.presets or {}).values():
            for key, value in values.items():
                assert order.index(key) > order.index(selector.key)
                assert registry.BY_KEY[key].parser(value) == value
    assert registry.UPSTREAM == {key: registry.DEFAULTS[key] for key in KEYS}
