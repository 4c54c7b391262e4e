"""
Unit tests for the Vast.ai dynamic inventory (``inventories/vast.py``).

Offline and fast: instance lists come from JSON fixtures in ``tests/fixtures/vast``, the Vast
API is the loopback v1 stand-in (tests/vast_api.py) playing recorded pages and faults, the
oracle is Vast's own CLI (``vastai``, pinned in the test extras) run against that same
stand-in, the host key policy is checked through pyinfra's own SSH client against loopback
SSH servers, and HOME always points at a temporary directory. The listing's deadline and
HTTPS under the real pyinfra CLI (gevent) are in test_vast_inventory_deadline.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from unittest import mock

import pytest

from tests.vast_api import GOOD_KEY, VastAPI, pages_of, recorded, scenario

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventories" / "vast.py"
FIXTURES = REPO / "tests" / "fixtures" / "vast"
VASTAI = Path(sys.executable).with_name("vastai")

DIRECT_ID, PROXY_ID, JUPYTER_PROXY_ID, JUPYTER_DIRECT_ID = 24681357, 24681358, 24681359, 24681360
RUNNING = [f"vast-{i}" for i in (DIRECT_ID, PROXY_ID, JUPYTER_PROXY_ID, JUPYTER_DIRECT_ID)]
NOT_RUNNING = ["vast-24681361", "vast-24681362", "vast-24681363"]  # stopped, loading, null

PAGES_300 = recorded("instances_300")["pages"]
RECORDS_300 = [record for page in PAGES_300 for record in page["instances"]]
SHAPES = recorded("shapes")["instances"]
SHAPE = 40_000_000  # shape n has id SHAPE + n
# What the inventory makes of each shape in shapes.json: (host, port, via), or None for a
# box skipped with a warning.
SHAPE_ENDPOINTS = {
    1: ("203.0.113.17", 40022, "direct"),
    2: ("ssh7.vast.ai", 35859, "proxy"),
    3: ("ssh2.vast.ai", 20111, "proxy"),
    4: ("203.0.113.80", 43022, "direct"),
    5: ("203.0.113.5", 40500, "direct"),
    6: ("ssh6.vast.ai", 23000, "proxy"),
    7: ("ssh6.vast.ai", 23010, "proxy"),
    8: ("ssh6.vast.ai", 23020, "proxy"),
    9: ("ssh6.vast.ai", 23030, "proxy"),
    10: ("ssh6.vast.ai", 23040, "proxy"),
    11: ("ssh6.vast.ai", 23050, "proxy"),
    12: ("ssh6.vast.ai", 23060, "proxy"),
    13: ("ssh6.vast.ai", 23070, "proxy"),
    14: ("ssh6.vast.ai", 23080, "proxy"),
    15: ("ssh9.vast.ai", 5001, "proxy"),
    16: ("203.0.113.16", 40016, "direct"),
    17: ("ssh6.vast.ai", 23110, "proxy"),
    18: None,
    19: None,
    20: ("ssh6.vast.ai", 23130, "proxy"),
    21: None,
    22: ("ssh6.vast.ai", 23150, "proxy"),
    23: ("ssh6.vast.ai", 23160, "proxy"),
    24: ("ssh6.vast.ai", 23170, "proxy"),
    25: ("ssh6.vast.ai", 23180, "proxy"),
    26: ("203.0.113.26", 40026, "direct"),
    27: ("203.0.113.27", 40027, "direct"),
}
SHAPE_HOSTS = [f"vast-{SHAPE + n}" for n, endpoint in SHAPE_ENDPOINTS.items()
               if endpoint and n not in (23, 24, 25)]  # 23-25 are not running

# Where `vastai ssh-url` prints an address and we deliberately use another (or none).
DELIBERATE = {
    SHAPE + 12: "public_ipaddr null: the CLI prints `root@None:40012`; we take the proxy",
    SHAPE + 21: "an ssh_host that is no host name (starts with '-', has a space): the CLI "
                "prints it; we never hand it to SSH and skip the box",
}
# Where the CLI gives no usable answer (a traceback, `error: ssh port not found`, an empty
# host, a port outside 1..65535) and what we do instead.
CLI_UNUSABLE = {
    SHAPE + 6: "ports null: the CLI crashes (AttributeError); we take the proxy",
    SHAPE + 8: "ports [] : the CLI crashes (AttributeError); we take the proxy",
    SHAPE + 9: "22/tcp []: the CLI finds no port; we take the proxy",
    SHAPE + 11: "blank public_ipaddr: the CLI prints `root@:40011`; we take the proxy",
    SHAPE + 13: 'HostPort "0": the CLI finds no port; we take the proxy',
    SHAPE + 14: "HostPort 70000: the CLI prints port 70000; we take the proxy",
    SHAPE + 15: 'HostPort "": the CLI finds no port; we take the proxy (+1, jupyter)',
    SHAPE + 18: "jupyter at proxy port 65535: the CLI prints 65536; we skip the box",
    SHAPE + 19: "proxy port 0: both find nothing; we skip the box",
    SHAPE + 20: "image_runtype null: the CLI fails on `in None`; we take the plain proxy port",
    SHAPE + 24: "ports null (loading): the CLI crashes (AttributeError); we take the proxy",
}


def _exec_inventory(env: dict[str, str]) -> ModuleType:
    """
    Execute the inventory file as pyinfra does (module-level code included) under ``env`` only.
    """

    spec = importlib.util.spec_from_file_location("red_vast_inventory", INVENTORY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # clear=True: the developer's own VAST_* variables must not leak into the tests.
    with mock.patch.dict(os.environ, env, clear=True):
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def inv(tmp_path_factory) -> ModuleType:
    home = tmp_path_factory.mktemp("home")
    return _exec_inventory(
        {"HOME": str(home), "VAST_INSTANCES_JSON": str(FIXTURES / "instances.json")},
    )


@pytest.fixture
def instances(inv) -> list[dict]:
    return inv.load_instances({"VAST_INSTANCES_JSON": str(FIXTURES / "instances.json")})


def _hosts(inv, instances, tmp_path, label_glob=None, warn=None) -> dict[str, dict]:
    return dict(inv.hosts_from_instances(instances, label_glob, tmp_path / "kh", warn=warn))


@contextmanager
def _api(pages=PAGES_300, **kwargs) -> Iterator[VastAPI]:
    with VastAPI(pages, **kwargs) as api:
        yield api


def _api_env(api: VastAPI, **extra: str) -> dict[str, str]:
    return {"VAST_API_URL": api.url, "VAST_API_KEY": GOOD_KEY, **extra}


def _load_fails(env: dict[str, str], home: Path, capsys) -> str:
    """Load the inventory as pyinfra does; it must exit 2 with one line. Returns the line."""

    with pytest.raises(SystemExit) as exit_info:
        _exec_inventory({"HOME": str(home), **env})
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("red inventory: ")
    assert "Traceback" not in captured.err
    return captured.err[len("red inventory: "):].rstrip("\n")


# -- module shape as pyinfra sees it


def test_module_exposes_only_the_vast_group(inv):
    # pyinfra turns every public module-level list or tuple into a group: only `vast` may exist.
    groups = [
        name
        for name, value in vars(inv).items()
        if isinstance(value, (list, tuple)) and not name.startswith("_")
    ]
    assert groups == ["vast"]
    assert [name for name, _ in inv.vast] == RUNNING


# -- choosing hosts and SSH endpoints


def test_only_running_instances_become_hosts(inv, instances, tmp_path):
    hosts = _hosts(inv, instances, tmp_path)
    assert list(hosts) == RUNNING
    assert not set(NOT_RUNNING) & set(hosts)


def test_direct_ssh_uses_public_ip_and_mapped_port(inv, instances, tmp_path):
    data = _hosts(inv, instances, tmp_path)[f"vast-{DIRECT_ID}"]
    # The fixture's public_ipaddr ends in a newline, as Vast's API sometimes sends it.
    assert (data["ssh_hostname"], data["ssh_port"], data["vast_ssh_via"]) == (
        "203.0.113.17",
        40022,
        "direct",
    )


def test_jupyter_runtype_through_proxy_uses_ssh_port_plus_one(inv, instances, tmp_path):
    data = _hosts(inv, instances, tmp_path)[f"vast-{JUPYTER_PROXY_ID}"]
    assert data["vast_runtype"] == "jupyter"
    assert (data["ssh_hostname"], data["ssh_port"]) == ("ssh2.vast.ai", 20110 + 1)


def test_host_data_is_complete(inv, instances, tmp_path):
    data = _hosts(inv, instances, tmp_path)[f"vast-{PROXY_ID}"]
    assert data == {
        "ssh_hostname": "ssh7.vast.ai",
        "ssh_port": 35859,
        "ssh_user": "root",
        "ssh_known_hosts_file": str(tmp_path / "kh" / f"vast-{PROXY_ID}"),
        "ssh_strict_host_key_checking": "accept-new",
        "vast_id": PROXY_ID,
        "vast_label": "visomaster-prod",
        "gpu_name": "RTX 3090",
        "compute_cap": 860,
        "driver_version": "535.183.01",
        "cuda_max_good": 12.2,
        "num_gpus": 2,
        "vast_runtype": "ssh",
        "vast_ssh_via": "proxy",
    }


@pytest.mark.parametrize("number", sorted(SHAPE_ENDPOINTS))
def test_every_record_shape_gets_its_endpoint(inv, number):
    record = next(r for r in SHAPES if r["id"] == SHAPE + number)  # the first listing
    expected = SHAPE_ENDPOINTS[number]
    if expected is None:
        with pytest.raises(inv.VastInventoryError, match=r"no usable SSH endpoint"):
            inv.ssh_endpoint(inv.vast_client._strip(record))
    else:
        assert inv.ssh_endpoint(inv.vast_client._strip(record)) == expected, record["_shape"]


def test_shapes_become_hosts_with_one_warning_per_skip_and_duplicate(inv, tmp_path):
    warnings: list[str] = []
    hosts = _hosts(inv, [inv.vast_client._strip(r) for r in SHAPES], tmp_path, warn=warnings.append)
    assert list(hosts) == SHAPE_HOSTS
    assert hosts[f"vast-{SHAPE + 5}"]["vast_label"] == "padded"
    # The duplicated id: the first listing (ssh6), as `vastai ssh-url` takes its first match.
    assert hosts[f"vast-{SHAPE + 22}"]["ssh_hostname"] == "ssh6.vast.ai"
    assert warnings == [
        f"instance id {SHAPE + 22} is listed 2 times; using its first listing",
        *(f"skipping instance {SHAPE + n}: no usable SSH endpoint (no usable 22/tcp mapping "
          "with a public_ipaddr, no ssh_host/ssh_port in 1..65535)" for n in (18, 19, 21)),
    ]


@pytest.mark.parametrize(
    ("label_glob", "expected"),
    [
        ("visomaster-*", [f"vast-{DIRECT_ID}", f"vast-{PROXY_ID}", f"vast-{JUPYTER_DIRECT_ID}"]),
        ("visomaster-prod", [f"vast-{PROXY_ID}"]),
        ("note?ook", [f"vast-{JUPYTER_PROXY_ID}"]),
        ("*", RUNNING),
    ],
)
def test_label_glob_filters_running_instances(inv, instances, tmp_path, label_glob, expected):
    assert list(_hosts(inv, instances, tmp_path, label_glob)) == expected


def test_label_glob_is_case_sensitive_and_zero_matches_is_an_error(inv, instances, tmp_path):
    with pytest.raises(inv.VastInventoryError) as error:
        _hosts(inv, instances, tmp_path, "VISOMASTER-*")
    assert str(error.value) == (
        "no usable running Vast instances with label matching 'VISOMASTER-*' "
        "(7 instances, 4 running, 0 matching)"
    )


def test_no_running_instance_is_an_error(inv, tmp_path):
    stopped = inv.load_instances({"VAST_INSTANCES_JSON": str(FIXTURES / "none_running.json")})
    with pytest.raises(inv.VastInventoryError, match=r"\(2 instances, 0 running, 0 matching\)"):
        _hosts(inv, stopped, tmp_path)


_ODD_VALUES = [None, 0, -1, 70000, "", " ", "0", "x y", "\x00", [], {}, [None], True, 1.5e308,
               "ünïcode", {"22/tcp": "x"}, {"22/tcp": [None]}, {"22/tcp": [{"HostPort": []}]}]


def test_no_field_value_ends_in_anything_but_a_host_or_a_one_line_reason(inv, tmp_path):
    # Every field of every shape replaced by each odd value: a host, a warning, or the
    # inventory's own error; never another exception.
    outcomes = {"hosts": 0, "errors": 0}
    for record in SHAPES[:5]:
        for field in record:
            for value in _ODD_VALUES:
                odd = dict(record, **{field: value})
                try:
                    _hosts(inv, [odd], tmp_path, warn=lambda m: None)
                    outcomes["hosts"] += 1
                except inv.VastInventoryError as e:
                    assert "\n" not in str(e)
                    outcomes["errors"] += 1
    assert outcomes["hosts"] and outcomes["errors"]


# -- offline source (VAST_INSTANCES_JSON)


@pytest.mark.parametrize(
    ("fixture", "message"),
    [
        ("malformed.json", r"^malformed JSON from .*malformed\.json: Unterminated string"),
        ("wrong_shape.json", r"^unexpected response shape from .*wrong_shape\.json: expected a"),
        ("absent.json", r"^cannot read VAST_INSTANCES_JSON file .*absent\.json: No such file"),
        ("instances_null.json", r'^no instances in .*instances_null\.json: it says "instances"'),
    ],
)
def test_offline_source_errors(inv, fixture, message):
    with pytest.raises(inv.VastInventoryError, match=message):
        inv.load_instances({"VAST_INSTANCES_JSON": str(FIXTURES / fixture)})


def test_offline_cli_flat_list_gives_the_hosts_the_api_gives(inv, tmp_path):
    # cli_flat_list.json is what the real `vastai show instances --raw` printed for shapes.json
    # served by the stand-in (see test_cli_flat_list_fixture_is_what_the_cli_prints).
    flat = inv.load_instances({"VAST_INSTANCES_JSON": str(FIXTURES / "cli_flat_list.json")})
    with _api(pages_of(SHAPES)) as api:
        listed = inv.load_instances(_api_env(api), home=tmp_path)
    from_file = _hosts(inv, flat, tmp_path / "a", warn=lambda m: None)
    from_api = _hosts(inv, listed, tmp_path / "a", warn=lambda m: None)
    assert list(from_file) == SHAPE_HOSTS
    assert from_file == from_api


def test_offline_source_never_needs_a_key(inv, tmp_path):
    # No key anywhere under this HOME and a URL that cannot be reached: only the file is read.
    env = {
        "VAST_INSTANCES_JSON": str(FIXTURES / "instances.json"),
        "VAST_API_URL": "http://127.0.0.1:9",
    }
    assert len(inv.load_instances(env, home=tmp_path)) == 7


# -- the v1 API over loopback HTTP


def test_300_instances_over_12_pages_all_listed(inv, tmp_path):
    with _api() as api:
        listed = inv.load_instances(_api_env(api), home=tmp_path)
    assert [r["id"] for r in listed] == [r["id"] for r in RECORDS_300]
    assert len(listed) == 300 and len(api.seen) == 12
    tokens = [None] + [page["next_token"] for page in PAGES_300[:-1]]
    for request, token in zip(api.seen, tokens, strict=True):
        assert request["path"] == "/api/v1/instances/"
        assert request["authorization"] == f"Bearer {GOOD_KEY}"
        query = request["query"]
        assert int(query["limit"][0]) <= 25
        assert json.loads(query["select_filters"][0]) == {}
        assert json.loads(query["order_by"][0]) == [{"col": "id", "dir": "asc"}]
        assert query.get("after_token") == ([token] if token else None)
    hosts = _hosts(inv, listed, tmp_path)
    assert len(hosts) == sum(r["actual_status"] == "running" for r in RECORDS_300) == 180


def test_a_failing_middle_page_fails_the_whole_listing(tmp_path, capsys):
    with _api(**scenario("failing_middle_page")) as api:
        line = _load_fails(_api_env(api), tmp_path, capsys)
    assert re.fullmatch(
        r"Vast API answered HTTP 500 Internal Server Error on page 6 at "
        r"http://127\.0\.0\.1:\d+/api/v1/instances/", line), line
    assert api.attempts[6] == 1 and 7 not in api.attempts  # 500 is not retried; no page 7
    assert not (tmp_path / ".ssh").exists()  # not a single host of pages 1-5 was used


@pytest.mark.parametrize(("name", "page", "least_wait"),
                         [("rate_limited_then_ok", 1, 0.2), ("unavailable_then_ok", 2, 0.5)])
def test_a_retryable_answer_is_retried_after_a_pause(inv, tmp_path, name, page, least_wait):
    started = time.monotonic()
    with _api(**scenario(name)) as api:
        listed = inv.load_instances(_api_env(api), home=tmp_path)
    assert len(listed) == 300
    assert api.attempts[page] == 2
    assert len(api.seen) == 13
    # 429 carries Retry-After: 0.2; the 503 none, so the first backoff (0.5 s).
    assert time.monotonic() - started >= least_wait


def test_retries_are_bounded_to_three_attempts(tmp_path, capsys):
    with _api(**scenario("unavailable_always")) as api:
        line = _load_fails(_api_env(api), tmp_path, capsys)
    assert api.attempts[1] == 3
    assert line.startswith("Vast API failed on page 1 after 3 attempts at http://127.0.0.1:")
    assert line.endswith(": HTTP 502 Bad Gateway")


def test_connection_errors_are_retried_then_fail(inv, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port is closed again: every connection is refused.
    env = {"VAST_API_URL": f"http://127.0.0.1:{port}", "VAST_API_KEY": GOOD_KEY}
    started = time.monotonic()
    with pytest.raises(inv.VastInventoryError) as error:
        inv.load_instances(env, home=tmp_path)
    assert re.fullmatch(
        r"Vast API failed on page 1 after 3 attempts at http://127\.0\.0\.1:\d+/api/v1/"
        r"instances/: cannot reach http://127\.0\.0\.1:\d+: Connection refused", str(error.value))
    assert time.monotonic() - started >= 0.5 + 1.0  # backed off twice


def test_a_cross_origin_redirect_never_carries_the_key(tmp_path, capsys):
    with _api(pages_of([])) as other, _api(other=other.url, **scenario("cross_origin_redirect")) \
            as api:
        line = _load_fails(_api_env(api), tmp_path, capsys)
    assert line == (
        f"Vast API at {api.url}/api/v1/instances/ redirected to another origin "
        f"(http://127.0.0.1:{other.server_address[1]}); the API key is not sent there. Set "
        "VAST_API_URL to the server that answers itself"
    )
    assert other.seen == []
    assert len(api.seen) == 2


def test_same_origin_redirect_is_followed_with_the_key(inv, tmp_path):
    faults = [{"page": 1, "times": 1, "status": 307,
               "redirect": "/api/v1/instances/?limit=25&select_filters=%7B%7D"}]
    with _api(pages_of(SHAPES), faults=faults) as api:
        listed = inv.load_instances(_api_env(api), home=tmp_path)
    assert len(listed) == len(SHAPES)
    assert [r["authorization"] for r in api.seen[:2]] == [f"Bearer {GOOD_KEY}"] * 2


@pytest.mark.parametrize(
    ("location", "message"),
    [("http://127.0.0.1:port/x", r"redirected to another origin \(http://127\.0\.0\.1:-1\)"),
     ("https://{host}/api/v1/instances/", r"redirected to another origin \(https://"),
     ("/api/v1/instances/?limit=25", r"more than 5 redirects$")],
)
def test_odd_redirects_end_in_one_line(inv, tmp_path, location, message):
    faults = [{"page": 1, "times": 99, "status": 302, "redirect": location}]
    with _api(faults=faults) as api, pytest.raises(inv.VastInventoryError, match=message):
        api.faults[0]["redirect"] = location.replace("{host}", api.url[len("http://"):])
        inv.load_instances(_api_env(api), home=tmp_path)


def test_a_dripping_body_cannot_hold_the_listing_past_its_deadline(tmp_path, capsys):
    started = time.monotonic()
    with _api(**scenario("dripping_body")) as api:
        line = _load_fails(_api_env(api, VAST_API_TIMEOUT="3"), tmp_path, capsys)
    elapsed = time.monotonic() - started
    assert 3 <= elapsed < 4.5, elapsed
    assert re.fullmatch(r"Vast API listing did not finish within 3 s at http://127\.0\.0\.1:\d+"
                        r"/api/v1/instances/ \(page 3: answer still incomplete\); raise "
                        r"VAST_API_TIMEOUT to wait longer", line), line


def test_a_server_that_never_answers_times_out_at_the_deadline(inv, tmp_path):
    started = time.monotonic()
    with _api(faults=[{"page": 2, "times": 9, "hang": 30}]) as api, \
            pytest.raises(inv.VastInventoryError) as error:
        inv.load_instances(_api_env(api, VAST_API_TIMEOUT="1.5"), home=tmp_path)
    assert 1.5 <= time.monotonic() - started < 3
    assert str(error.value).startswith("Vast API listing did not finish within 1.5 s at http://")
    assert "(page 2: no answer)" in str(error.value)


def test_the_deadline_covers_retry_pauses(inv, tmp_path):
    # A Retry-After longer than the time left ends the listing now, not after the pause.
    faults = [{"page": 1, "times": 9, "status": 429, "headers": {"Retry-After": "30"}}]
    started = time.monotonic()
    with _api(faults=faults) as api, pytest.raises(inv.VastInventoryError, match=r"within 2 s"):
        inv.load_instances(_api_env(api, VAST_API_TIMEOUT="2"), home=tmp_path)
    assert time.monotonic() - started < 2


def test_v0_url_gets_its_410_and_says_what_to_change(tmp_path, capsys):
    with _api() as api:
        line = _load_fails(_api_env(api, VAST_API_URL=api.url + "/api/v0"), tmp_path, capsys)
    assert line == (
        f"{api.url}/api/v0/instances/ is retired (HTTP 410: deprecated_endpoint - This endpoint "
        "was deprecated on 2026-06-09. Use /api/v1/instances/ instead.): set VAST_API_URL to "
        "the server alone, e.g. https://console.vast.ai, or unset it; the inventory uses "
        "/api/v1/instances/"
    )


@pytest.mark.parametrize(
    ("name", "status", "msg"),
    [(None, 401, "invalid_user_key - Invalid user key"),
     ("auth_error_404", 404, "auth_error - Invalid or expired API key"),
     ("forbidden_403", 403, "forbidden - key lacks instance_read")],
)
def test_a_rejected_key_says_so_with_the_servers_msg(tmp_path, capsys, name, status, msg):
    with _api(**(scenario(name) if name else {})) as api:
        line = _load_fails(_api_env(api, VAST_API_KEY="wrong-secret-key"), tmp_path, capsys)
    assert line == (f"the API key was rejected (HTTP {status}: {msg}); key from VAST_API_KEY: "
                    "check it, or run `vastai set api-key`")
    assert api.seen[0]["authorization"] == "Bearer wrong-secret-key"


def test_a_plain_404_is_not_called_a_rejected_key(inv, tmp_path):
    with _api() as api, pytest.raises(inv.VastInventoryError) as error:
        inv.load_instances(_api_env(api, VAST_API_URL=api.url + "/elsewhere"), home=tmp_path)
    assert "rejected" not in str(error.value)
    assert str(error.value).startswith("Vast API answered HTTP 404 Not Found on page 1 at ")


@pytest.mark.parametrize(
    ("page", "message"),
    [
        ('{"instances": [{"id": 1, "actual_st', r"^malformed JSON from http://.* \(page 1\)"),
        ('[{"id": 1}]', r"^unexpected response from http://.* \(page 1\)$"),
        ('{"success": false, "msg": "boom"}', r"^unexpected response from .*\(page 1\): boom$"),
        ('{"instances": {"id": 1}}', r"^unexpected response shape from .*\(page 1\)"),
        ('{"instances": [], "next_token": 7}', r"repeated or garbled next_token$"),
        ('{"instances": [], "next_token": "tok-0001"}', r"repeated or garbled next_token$"),
    ],
)
def test_bad_pages_are_one_line_errors(inv, tmp_path, page, message):
    faults = [{"page": 1, "times": 1, "status": 200, "body": page},
              {"page": 2, "times": 9, "status": 200, "body": page}]
    with _api(faults=faults) as api, pytest.raises(inv.VastInventoryError, match=message):
        inv.load_instances(_api_env(api), home=tmp_path)


def test_instances_null_on_the_api_is_an_empty_page(inv, tmp_path):
    faults = [{"page": 1, "times": 1, "status": 200,
               "body": {"success": True, "instances": None, "next_token": None}}]
    with _api(faults=faults) as api:
        assert inv.load_instances(_api_env(api), home=tmp_path) == []
    with pytest.raises(inv.VastInventoryError, match=r"\(0 instances, 0 running, 0 matching\)"):
        _hosts(inv, [], tmp_path)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VAST_API_TIMEOUT": "soon"}, r"^VAST_API_TIMEOUT must be a positive number.*'soon'"),
        ({"VAST_API_TIMEOUT": "0"}, r"^VAST_API_TIMEOUT must be a positive number.*'0'"),
        ({"VAST_API_TIMEOUT": "nan"}, r"^VAST_API_TIMEOUT must be a positive number.*'nan'"),
        ({"VAST_API_URL": "file:///etc"}, r"^VAST_API_URL must be an http\(s\) URL"),
        ({"VAST_API_URL": "http://127.0.0.1:99999"}, r"^VAST_API_URL must be an http\(s\) URL"),
        ({"VAST_API_URL": "http://203.0.113.9"}, r"^VAST_API_URL must use https:// \(plain"),
        ({"VAST_API_URL": "http://console.vast.ai"}, r"^VAST_API_URL must use https://"),
        ({"VAST_API_URL": "https://u:p@h.example"}, r"^VAST_API_URL must be the server alone"),
    ],
)
def test_bad_settings_are_errors_before_any_traffic(inv, tmp_path, env, message):
    with pytest.raises(inv.VastInventoryError, match=message):
        inv.load_instances({"VAST_API_KEY": GOOD_KEY, **env}, home=tmp_path)


def test_https_goes_through_the_https_proxy_in_a_tunnel_with_the_key_inside(inv, tmp_path):
    # A loopback "proxy" that refuses every CONNECT: what it saw is all a proxy can see.
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def refuse():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                seen.append(conn.recv(4096))
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=refuse, daemon=True).start()
    env = {"VAST_API_URL": "https://console.example.invalid", "VAST_API_KEY": GOOD_KEY,
           "https_proxy": f"http://me:s%40cret@127.0.0.1:{listener.getsockname()[1]}",
           "no_proxy": "localhost,.vast.ai"}
    try:
        with pytest.raises(inv.VastInventoryError, match=r"after 3 attempts.*Tunnel connection "
                                                         r"failed: 403 Forbidden"):
            inv.load_instances(env, home=tmp_path)
    finally:
        listener.close()
    assert len(seen) == 3
    assert seen[0].startswith(b"CONNECT console.example.invalid:443 HTTP/1.")
    assert b"Proxy-Authorization: Basic bWU6c0BjcmV0" in seen[0]  # me:s@cret
    assert GOOD_KEY.encode() not in b"".join(seen)


def test_no_proxy_keeps_matching_hosts_direct(inv):
    env = {"https_proxy": "proxy.internal:3128", "no_proxy": "localhost, .vast.ai"}
    assert inv.vast_client._https_proxy(env, "console.vast.ai") is None
    assert inv.vast_client._https_proxy(env, "vast.ai") is None
    assert inv.vast_client._https_proxy(env, "notvast.ai").hostname == "proxy.internal"
    with pytest.raises(inv.VastInventoryError, match="https_proxy must be http://host:port"):
        inv.vast_client._https_proxy({"https_proxy": "socks5://127.0.0.1:1080"}, "console.vast.ai")


@pytest.mark.parametrize("url", ["http://localhost:1", "http://127.3.4.5:1", "http://[::1]:1"])
def test_plain_http_is_allowed_for_loopback_hosts(inv, url):
    parts = inv.vast_client._instances_url({"VAST_API_URL": url})
    assert (parts.scheme, parts.path) == ("http", "/api/v1/instances/")


def test_default_server_is_vasts_console(inv):
    parts = inv.vast_client._instances_url({})
    assert urllib.parse.urlunsplit(parts) == "https://console.vast.ai/api/v1/instances/"


def test_error_messages_are_one_line(inv):
    assert str(inv.VastInventoryError("server said:\n  <html>\n\tboom</html>\n")) == (
        "server said: <html> boom</html>"
    )


# -- the API key


def _key_home(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    home = tmp_path / "home"
    for relative, content in files.items():
        path = home / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return home


CONFIG_KEY, TFA_KEY, LEGACY_KEY = (".config/vastai/vast_api_key", ".config/vastai/vast_tfa_key",
                                   ".vast_api_key")


@pytest.mark.parametrize(
    ("files", "env_key", "source"),
    [
        ({CONFIG_KEY: "decoy-config\n", TFA_KEY: "decoy-tfa"}, f" {GOOD_KEY}\n", "env"),
        ({TFA_KEY: f"{GOOD_KEY}\n", CONFIG_KEY: "decoy-config", LEGACY_KEY: "decoy"}, "", "tfa"),
        ({CONFIG_KEY: f"\t{GOOD_KEY}\r\n", LEGACY_KEY: "decoy-legacy"}, None, "config"),
        ({TFA_KEY: " \n", CONFIG_KEY: "", LEGACY_KEY: GOOD_KEY}, "  ", "legacy (others empty)"),
    ],
)
def test_api_key_sources_in_cli_order(inv, tmp_path, files, env_key, source):
    home = _key_home(tmp_path, files)
    with _api(pages_of(SHAPES)) as api:
        env = {"VAST_API_URL": api.url}
        if env_key is not None:
            env["VAST_API_KEY"] = env_key
        assert len(inv.load_instances(env, home=home)) == len(SHAPES), source
    assert api.seen[0]["authorization"] == f"Bearer {GOOD_KEY}"


def test_xdg_config_home_moves_the_key_files(inv, tmp_path):
    home = _key_home(tmp_path, {CONFIG_KEY: "decoy-config", "xdg/vastai/vast_api_key": GOOD_KEY})
    with _api(pages_of(SHAPES)) as api:
        env = {"VAST_API_URL": api.url, "XDG_CONFIG_HOME": str(home / "xdg")}
        inv.load_instances(env, home=home)
    assert api.seen[0]["authorization"] == f"Bearer {GOOD_KEY}"


@pytest.mark.parametrize(
    ("fixture", "problem"),
    [("two_line_key", "2 lines"),
     ("non_ascii_key", "spaces or characters that are not printable ASCII")],
)
def test_a_key_file_that_is_not_one_printable_line_is_refused_unsent(
        tmp_path, capsys, fixture, problem):
    content = (FIXTURES / "keys" / fixture).read_bytes()
    home = _key_home(tmp_path, {CONFIG_KEY: content})
    with _api() as api:
        line = _load_fails({"VAST_API_URL": api.url}, home, capsys)
    assert line == (f"the Vast API key from {home / CONFIG_KEY} is not one line of printable "
                    f"ASCII ({problem}): paste it again from the console's Keys page (it is not "
                    "shown here)")
    assert api.seen == []
    for part in content.decode().split():
        assert part not in line


@pytest.mark.parametrize("key", ["good\nkey", "göod-key", "good key", "key\x07"])
def test_a_bad_env_key_is_refused_without_echoing_it(tmp_path, capsys, key):
    with _api() as api:
        line = _load_fails({"VAST_API_URL": api.url, "VAST_API_KEY": key}, tmp_path, capsys)
    assert line.startswith("the Vast API key from VAST_API_KEY is not one line of printable")
    assert "good" not in line and "key\x07" not in line
    assert api.seen == []


def test_no_key_is_an_error_naming_where_it_looked(inv, tmp_path):
    with _api() as api, pytest.raises(inv.VastInventoryError) as error:
        inv.load_instances({"VAST_API_URL": api.url}, home=tmp_path)
    message = str(error.value)
    assert message.startswith("no Vast API key: set VAST_API_KEY")
    for relative in (TFA_KEY, CONFIG_KEY, LEGACY_KEY):
        assert str(tmp_path / relative) in message
    assert api.seen == []  # nothing was sent without a key


def test_a_server_msg_echoing_the_key_is_redacted(tmp_path, capsys):
    rejected = {"status": 401, "body": {"error": "auth_error", "msg": "bad key wrong-secret-key"}}
    with _api(rejected=rejected) as api:
        line = _load_fails(_api_env(api, VAST_API_KEY="wrong-secret-key"), tmp_path, capsys)
    assert "wrong-secret-key" not in line
    assert "(HTTP 401: auth_error - bad key <your key>)" in line


# -- the oracle: Vast's own CLI against the same stand-in

_CLI_DRIVER = r"""
# `vastai ssh-url ID` for many ids: the CLI takes seconds to import, so import its entry point
# once and run each command in a forked child, a fresh CLI process as far as it can tell
# (main() builds its parser once per process). Prints the JSON of id -> what it printed.
import json, os, sys
import vastai.cli.main as cli
# What main() imports first thing: once, here, not in every child.
from vastai.cli.commands import (  # noqa: F401
    instances, offers, machines, teams, keys, endpoints, billing, storage, auth, misc,
    deployments, metrics, benchmarks, price_increase, repl, update, uninstall,
)
url, ids = sys.argv[1], sys.argv[2:]
answers = {}
for ident in ids:
    sys.stdout.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.dup2(write_end, 1)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        sys.argv = ["vastai", "--url", url, "ssh-url", ident]
        try:
            cli.main()
        except SystemExit:
            pass
        except Exception as e:
            print(f"crash: {type(e).__name__}")
        sys.stdout.flush()
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as child_out:
        answers[ident] = child_out.read().strip()
    os.waitpid(pid, 0)
print(json.dumps(answers))
"""


def _cli_env(tmp_path: Path) -> dict[str, str]:
    # Its own HOME and XDG dirs: the CLI caches ssh-url answers and creates config dirs.
    home = tmp_path / "cli-home"
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache"),
            "VAST_API_KEY": GOOD_KEY, "VASTAI_NO_UPDATE_CHECK": "1", "LANG": "C.UTF-8"}


def _cli(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    assert VASTAI.exists(), "vastai is missing from the venv: make deps"
    return subprocess.run([str(VASTAI), *args], env=_cli_env(tmp_path), capture_output=True,
                          text=True, timeout=timeout, check=False)


def _cli_ssh_urls(tmp_path: Path, url: str, ids: list[int]) -> dict[int, str]:
    result = subprocess.run([sys.executable, "-c", _CLI_DRIVER, url, *map(str, ids)],
                            env=_cli_env(tmp_path), capture_output=True, text=True,
                            timeout=300, check=True)
    return {int(k): v for k, v in json.loads(result.stdout).items()}


def _usable(answer: str) -> tuple[str, int] | None:
    """The (host, port) of a `vastai ssh-url` answer, or None when it is no usable address."""

    match = re.fullmatch(r"ssh://root@(.+):(\d+)", answer)
    if not match or not 1 <= int(match[2]) <= 65535:
        return None
    return match[1], int(match[2])


def _ours(inv, record) -> tuple[str, int] | None:
    try:
        host, port, _ = inv.ssh_endpoint(record)
    except inv.VastInventoryError:
        return None
    return host, port


def _same_records(cli: list[dict], ours: list[dict]) -> None:
    # The CLI adds `duration` and turns extra_env into a dict; every other field must match
    # (strings stripped on both sides).
    assert [r["id"] for r in cli] == [r["id"] for r in ours]
    for cli_record, our_record in zip(cli, ours, strict=True):
        theirs = {k: v for k, v in cli_record.items() if k not in ("duration", "extra_env")}
        mine = {k: v for k, v in our_record.items() if k != "extra_env"}
        assert theirs == mine


def test_oracle_shapes_the_cli_and_the_inventory_agree_except_where_listed(inv, tmp_path):
    with _api(pages_of(SHAPES, 10)) as api:
        shown = _cli(tmp_path, "--url", api.url, "show", "instances", "--raw")
        assert shown.returncode == 0, shown.stderr
        listed = inv.load_instances(_api_env(api), home=tmp_path)
        _same_records(json.loads(shown.stdout), listed)
        answers = _cli_ssh_urls(tmp_path, api.url, sorted({r["id"] for r in SHAPES}))
        # The driver is the console script's entry point: one real `vastai ssh-url` agrees.
        direct = _cli(tmp_path / "direct", "--url", api.url, "ssh-url", str(SHAPE + 1))
        assert direct.stdout.strip() == answers[SHAPE + 1] == "ssh://root@203.0.113.17:40022"
    first = {}
    for record in listed:
        first.setdefault(record["id"], record)
    agreed, deliberate, unusable = [], [], []
    for ident, record in first.items():
        cli, ours = _usable(answers[ident]), _ours(inv, record)
        expected = SHAPE_ENDPOINTS[ident - SHAPE]
        assert ours == (expected[:2] if expected else None), record["_shape"]
        if ident in DELIBERATE:
            assert cli is not None and cli != ours, (answers[ident], DELIBERATE[ident])
            deliberate.append(ident)
        elif cli is None:
            assert ident in CLI_UNUSABLE, (ident, answers[ident])
            unusable.append(ident)
        else:
            assert ours == cli, (record["_shape"], answers[ident])
            agreed.append(ident)
    assert (len(first), len(agreed), len(deliberate), len(unusable)) == (27, 14, 2, 11)
    assert set(unusable) == set(CLI_UNUSABLE)


def _sample_300(listed: list[dict]) -> list[dict]:
    """
    Every record when RED_ORACLE_FULL=1 (a CLI run per record costs ~0.35 s: about two
    minutes); else the first record of each shape and the first and last of each page.
    """

    if os.environ.get("RED_ORACLE_FULL") == "1":
        return listed
    seen, sample = set(), []
    for index, record in enumerate(listed):
        ports = record.get("ports", "missing")
        shape = (record["actual_status"], record["image_runtype"], str(ports)[:8])
        if shape not in seen or index % 25 in (0, 24):
            seen.add(shape)
            sample.append(record)
    return sample


def test_oracle_300_instances_over_12_pages(inv, tmp_path):
    with _api() as api:
        shown = _cli(tmp_path, "--url", api.url, "show", "instances", "--raw")
        assert shown.returncode == 0, shown.stderr
        listed = inv.load_instances(_api_env(api), home=tmp_path)
        _same_records(json.loads(shown.stdout), listed)
        sample = _sample_300(listed)
        answers = _cli_ssh_urls(tmp_path, api.url, [r["id"] for r in sample])
    agreed = 0
    for record in sample:
        cli, ours = _usable(answers[record["id"]]), _ours(inv, record)
        if cli is None:
            # The one CLI failure in this listing: ports null (stopped boxes), its traceback.
            assert record["ports"] is None, (record, answers[record["id"]])
            assert answers[record["id"]] == "crash: AttributeError"
            assert ours == (record["ssh_host"], record["ssh_port"] + (
                "jupyter" in record["image_runtype"]))
        else:
            assert ours == cli, record
            agreed += 1
    assert agreed == sum(1 for r in sample if r.get("ports", {}) is not None)
    assert agreed >= 24


def test_cli_flat_list_fixture_is_what_the_cli_prints(tmp_path):
    with _api(pages_of(SHAPES)) as api:
        shown = _cli(tmp_path, "--url", api.url, "show", "instances", "--raw")
    printed = json.loads(shown.stdout)
    saved = json.loads((FIXTURES / "cli_flat_list.json").read_text())
    assert isinstance(saved, list)
    # duration is "now - start_date": the only field that moves between runs.
    assert [dict(r, duration=0) for r in printed] == [dict(r, duration=0) for r in saved]


# -- module-level behaviour: what pyinfra sees when it loads the file


def test_loading_with_an_error_exits_2_with_one_line_on_stderr(tmp_path, capsys):
    env = {"VAST_INSTANCES_JSON": str(FIXTURES / "malformed.json")}
    assert _load_fails(env, tmp_path, capsys).startswith("malformed JSON from ")


def test_loading_honours_vast_label(tmp_path):
    env = {
        "HOME": str(tmp_path),
        "VAST_INSTANCES_JSON": str(FIXTURES / "instances.json"),
        "VAST_LABEL": "visomaster-prod",
    }
    assert [name for name, _ in _exec_inventory(env).vast] == [f"vast-{PROXY_ID}"]


def test_an_unexpected_error_is_still_one_line(tmp_path, capsys):
    with mock.patch("json.loads", side_effect=RecursionError("deep")):
        line = _load_fails({"VAST_INSTANCES_JSON": str(FIXTURES / "instances.json")},
                           tmp_path, capsys)
    assert line == "unexpected RecursionError: deep"


# -- host keys: one known_hosts file per instance id, whatever its route


def test_known_hosts_files_are_private_and_kept(inv, instances, tmp_path):
    kh = tmp_path / "home" / ".ssh" / "red_known_hosts"
    kh.mkdir(parents=True, mode=0o755)
    kh.chmod(0o755)  # as if made by hand, readable by all
    hosts = inv.hosts_from_instances(instances, None, kh)
    pinned = kh / f"vast-{DIRECT_ID}"
    pinned.write_text("[203.0.113.17]:40022 ssh-ed25519 AAAAC3Nza\n")

    inv.prepare_known_hosts(hosts)

    assert stat.S_IMODE(kh.stat().st_mode) == 0o700
    assert sorted(p.name for p in kh.iterdir()) == RUNNING
    assert stat.S_IMODE((kh / f"vast-{PROXY_ID}").stat().st_mode) == 0o600
    # An existing pin survives a reload: that is what refuses a changed key later.
    assert pinned.read_text() == "[203.0.113.17]:40022 ssh-ed25519 AAAAC3Nza\n"
    data = dict(hosts)
    assert data[f"vast-{DIRECT_ID}"]["ssh_strict_host_key_checking"] == "yes"
    assert data[f"vast-{PROXY_ID}"]["ssh_strict_host_key_checking"] == "accept-new"


def test_a_pin_follows_the_instance_to_its_current_route(inv, tmp_path):
    kh = tmp_path / "kh"
    kh.mkdir()
    (kh / "vast-7").write_text(
        "# pinned by hand\n[203.0.113.5]:40022 ssh-ed25519 AAAAkeyone\n\n"
        "ssh9.vast.ai ssh-ed25519 AAAAkeyone\n[ssh9.vast.ai]:5001 ecdsa-sha2-nistp256 AAAAtwo x\n"
        "@revoked * ssh-rsa AAAAold\nbroken-line\n",
    )
    proxy = {"id": 7, "actual_status": "running", "ssh_host": "ssh9.vast.ai", "ssh_port": 5000,
             "image_runtype": "jupyter_proxy ssh_proxy", "ports": {}}
    inv.prepare_known_hosts(inv.hosts_from_instances([proxy], None, kh))
    assert (kh / "vast-7").read_text() == (
        "[ssh9.vast.ai]:5001 ssh-ed25519 AAAAkeyone\n"
        "[ssh9.vast.ai]:5001 ecdsa-sha2-nistp256 AAAAtwo\n"
        "@revoked [ssh9.vast.ai]:5001 ssh-rsa AAAAold\n"
    )
    assert stat.S_IMODE((kh / "vast-7").stat().st_mode) == 0o600
    on_22 = dict(proxy, ssh_port=22, image_runtype="ssh_proxy")
    inv.prepare_known_hosts(inv.hosts_from_instances([on_22], None, kh))
    assert (kh / "vast-7").read_text().splitlines()[0] == "ssh9.vast.ai ssh-ed25519 AAAAkeyone"


def test_inventory_load_creates_ssh_dirs_0700(tmp_path):
    _exec_inventory(
        {"HOME": str(tmp_path), "VAST_INSTANCES_JSON": str(FIXTURES / "instances.json")}
    )
    for directory in (tmp_path / ".ssh", tmp_path / ".ssh" / "red_known_hosts"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def _paramiko_kwargs(hosts: list[tuple[str, dict]], name: str) -> dict:
    """
    The kwargs pyinfra 3.10's SSH connector hands to its paramiko client for this host.
    """

    api = pytest.importorskip("pyinfra.api")
    inventory = api.Inventory((hosts, {}))
    api.State(inventory, api.Config())
    return inventory.get_host(name).connector.make_paramiko_kwargs()


def test_pyinfra_ssh_connector_reads_our_host_key_data(inv, instances, tmp_path):
    # pyinfra ignores unknown data keys silently, so check the names reach the connector.
    hosts = inv.hosts_from_instances(instances, None, tmp_path)
    kwargs = _paramiko_kwargs(hosts, f"vast-{JUPYTER_PROXY_ID}")
    assert kwargs["_pyinfra_ssh_known_hosts_file"] == str(tmp_path / f"vast-{JUPYTER_PROXY_ID}")
    assert kwargs["_pyinfra_ssh_strict_host_key_checking"] == "accept-new"
    assert (kwargs["hostname"], kwargs["port"], kwargs["username"]) == (
        "ssh2.vast.ai",
        20111,
        "root",
    )


@contextmanager
def _ssh_servers(count: int) -> Iterator[list[tuple[int, dict]]]:
    """
    Loopback SSH servers (paramiko) that accept any password; ``state["key"]`` is a server's
    host key and can be swapped between connections: a re-rented box on the same ip:port.
    """

    paramiko = pytest.importorskip("paramiko")

    class AcceptAll(paramiko.ServerInterface):
        def get_allowed_auths(self, username):
            return "password"

        def check_auth_password(self, username, password):
            return paramiko.AUTH_SUCCESSFUL

    stop = threading.Event()
    transports, threads, servers, listeners = [], [], [], []

    def serve(listener, state):
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(state["key"])
            transports.append(transport)
            try:
                transport.start_server(server=AcceptAll())
            except (paramiko.SSHException, EOFError, OSError):
                pass  # the client walked away (or reset): the test judges the client side

    for _ in range(count):
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.1)
        state: dict = {"key": None}
        listeners.append(listener)
        servers.append((listener.getsockname()[1], state))
        threads.append(threading.Thread(target=serve, args=(listener, state), daemon=True))
        threads[-1].start()
    try:
        yield servers
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
        for transport in transports:
            transport.close()
        for listener in listeners:
            listener.close()


def _connect_through_inventory(inv, kh: Path, tmp_path: Path, instance: dict) -> None:
    """Load ``instance`` as the inventory does, then connect with pyinfra's SSH client."""

    client_module = pytest.importorskip("pyinfra.connectors.sshuserclient.client")
    hosts = inv.hosts_from_instances([instance], None, kh)
    inv.prepare_known_hosts(hosts)
    kwargs = _paramiko_kwargs(hosts, f"vast-{instance['id']}")
    # Keep the developer's ~/.ssh/config out of it; a pyinfra run is one process, so
    # forget the host keys pyinfra memoizes per file.
    kwargs["_pyinfra_ssh_config_file"] = str(tmp_path / "no-ssh-config")
    # The loopback server takes a password; no agent or key files of the developer.
    kwargs.update(password="any", allow_agent=False, look_for_keys=False)
    client_module.get_host_keys.cache.clear()
    client = client_module.SSHClient()
    try:
        client.connect(**kwargs)
    finally:
        client.close()


def _direct(instance_id: int, port: int) -> dict:
    return {"id": instance_id, "actual_status": "running", "public_ipaddr": "127.0.0.1",
            "image_runtype": "ssh_direc ssh_proxy",
            "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}}


def _proxied(instance_id: int, port: int) -> dict:
    # Vast's proxy route to the same box: no 22/tcp mapping; "localhost" is another name.
    return {"id": instance_id, "actual_status": "running", "public_ipaddr": "127.0.0.1",
            "image_runtype": "ssh_proxy", "ssh_host": "localhost", "ssh_port": port,
            "ports": {}}


def test_host_keys_are_pinned_per_instance_on_every_route(inv, tmp_path):
    paramiko = pytest.importorskip("paramiko")
    kh = tmp_path / "red_known_hosts"

    def connect(instance):
        _connect_through_inventory(inv, kh, tmp_path, instance)

    first_key, second_key = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    other_type = paramiko.RSAKey.generate(2048)
    with _ssh_servers(2) as [(port_a, box_a), (port_b, box_b)]:
        box_a["key"] = box_b["key"] = first_key
        connect(_direct(1, port_a))  # first contact: trusted and pinned for instance 1
        connect(_direct(1, port_a))  # same key again: accepted from the pin
        pin = (kh / "vast-1").read_text()
        assert pin.count("\n") == 1 and first_key.get_base64() in pin

        # Same instance, another route (another port, then the proxy): the pin goes along.
        connect(_direct(1, port_b))
        connect(_proxied(1, port_b))
        assert (kh / "vast-1").read_text() == (
            f"[localhost]:{port_b} ecdsa-sha2-nistp256 {first_key.get_base64()}\n")

        # A changed key under the same id is refused on every route, old or new, whatever
        # its type (an unpinned type would otherwise pass as "new").
        box_a["key"] = box_b["key"] = second_key
        for instance in (_direct(1, port_a), _direct(1, port_b), _proxied(1, port_a)):
            with pytest.raises(paramiko.BadHostKeyException):
                connect(instance)
        box_b["key"] = other_type
        with pytest.raises(paramiko.SSHException):
            connect(_direct(1, port_b))

        # A new instance id on a reused ip:port: trusted on first use, in its own file.
        box_a["key"] = second_key
        connect(_direct(2, port_a))
        connect(_direct(2, port_a))

    assert first_key.get_base64() in (kh / "vast-1").read_text()
    assert second_key.get_base64() not in (kh / "vast-1").read_text()
    assert second_key.get_base64() in (kh / "vast-2").read_text()


# -- the real pyinfra CLI


def _run_pyinfra(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    pytest.importorskip("pyinfra")
    # A minimal environment: no developer VAST_* settings, no real ~/.ssh.
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    return subprocess.run(
        [sys.executable, "-m", "pyinfra", "inventories/vast.py", *args],
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_pyinfra_cli_lists_hosts_from_the_v1_api_without_connecting(tmp_path):
    with _api() as api:
        env = {"HOME": str(tmp_path), **_api_env(api)}
        result = _run_pyinfra(env, "debug-inventory", "--json")
    assert result.returncode == 0, result.stderr
    hosts = {host["name"]: host for host in json.loads(result.stdout)}
    assert len(hosts) == 180
    first = hosts[f"vast-{RECORDS_300[0]['id']}"]
    assert "vast" in first["groups"]
    # Host data wins over group_data/all.py, so these are the Vast endpoint's values.
    assert (first["data"]["ssh_hostname"], first["data"]["ssh_port"]) == ("198.51.100.1", 40000)
    assert first["data"]["ssh_known_hosts_file"] == str(
        tmp_path / ".ssh" / "red_known_hosts" / first["name"],
    )
    assert "Connecting" not in result.stderr


def test_pyinfra_cli_error_is_one_line_without_traceback(tmp_path):
    with _api(**scenario("auth_error_404")) as api:
        env = {"HOME": str(tmp_path), **_api_env(api, VAST_API_KEY="wrong-secret-key")}
        result = _run_pyinfra(env, "debug-inventory")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    ours = [line for line in result.stderr.splitlines() if line.startswith("red inventory:")]
    assert len(ours) == 1
    assert ours[0].startswith("red inventory: the API key was rejected (HTTP 404: auth_error")
    assert "wrong-secret-key" not in result.stderr
