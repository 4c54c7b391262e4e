"""visomaster_flavor: a selector whose value stands in for other settings' defaults."""

import pytest

from redbox.settings import registry
from redbox.settings.resolve import box_settings, resolve

KEYS = ("visomaster_repo_url", "visomaster_ref", "visomaster_requirements",
        "visomaster_extra_index_urls")
LOOP = "http://127.0.0.1:9/simple"
FUSION_REF = registry.FUSION["visomaster_ref"]


def _app(result):
    return {key: result[key] for key in KEYS}


@pytest.mark.parametrize(("env", "cli", "expected", "line"), [
    # auto is the default: without a GPU probe (an image build) it takes the fallback, upstream
    ({}, {}, registry.UPSTREAM, None),
    ({"VISOMASTER_FLAVOR": "upstream"}, {}, registry.UPSTREAM,
     "VISOMASTER_FLAVOR=upstream: defaults visomaster_repo_url=https://github.com/"
     "visomaster/VisoMaster.git, visomaster_ref=v0.1.6"),
    ({"VISOMASTER_FALLBACK_FLAVOR": "fusion"}, {}, registry.FUSION, None),
    # fusion: all four parts change together, and one line says what the flavor set
    ({"VISOMASTER_FLAVOR": "fusion"}, {}, registry.FUSION,
     "VISOMASTER_FLAVOR=fusion: defaults visomaster_repo_url=https://github.com/"
     f"VisoMasterFusion/VisoMaster-Fusion.git, visomaster_ref={FUSION_REF}"),
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
     f"VISOMASTER_REF='a..b' is not a tag, branch or commit name: using {FUSION_REF} "
     "(the default of visomaster_flavor=fusion)"),
    # a bad flavor falls back to auto with one line
    ({"VISOMASTER_FLAVOR": "Fusion!"}, {}, registry.UPSTREAM,
     "VISOMASTER_FLAVOR='Fusion!' is not one of auto, upstream, fusion: using auto"),
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


def _probe(key):
    from redbox.app.gpu import Gpu
    from tests.fixtures.fake_gpus import GPUS
    name, capability, driver, cuda = GPUS[key]
    return lambda: (Gpu(name, capability, driver, cuda), "")


@pytest.mark.parametrize(("key", "chosen", "values"), [
    ("rtx4090", "upstream", registry.UPSTREAM),
    ("rtx5090-580", "fusion", registry.FUSION),
    # Nothing runs there: nothing is chosen, the settings keep the fallback's values.
    ("rtx5090-575", None, registry.UPSTREAM),
])
def test_auto_follows_the_gpu_and_says_so(key, chosen, values):
    result = resolve({}, data=registry.DEFAULTS.get, gpu=_probe(key))
    assert result.flavor.chosen == chosen and _app(result) == values
    assert any(line.startswith(f"visomaster_flavor=auto: {chosen or 'nothing'} (")
               for line in result.decisions), result.decisions


def test_no_gpu_probe_answer_takes_the_fallback_with_one_line():
    result = resolve({"VISOMASTER_FALLBACK_FLAVOR": "fusion"}, data=registry.DEFAULTS.get,
                     gpu=lambda: (None, "nvidia-smi is not installed: no NVIDIA driver here"))
    assert result.flavor.chosen == "fusion" and _app(result) == registry.FUSION
    assert any("VisoMaster needs an NVIDIA GPU" in line for line in result.decisions)
