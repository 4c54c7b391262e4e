"""
The GPU Vast's API lists for each box (inventories/vast_gpu.py): its four fields in host data
under the API's own names, and the VisoMaster flavor each box will get, told when the inventory
loads, before anything connects; checked through the real pyinfra CLI against the loopback API
stand-in (tests/fixtures/vast/api/gpus.json). Once connected, the box's nvidia-smi decides: the
deploy's flavor line names the API's GPU where the two differ (operations/settings.py).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from unittest import mock

import pytest

from operations import settings
from redbox.app.gpu import Gpu
from redbox.settings import registry
from redbox.settings.resolve import resolve
from tests.vast_api import GOOD_KEY, VastAPI, pages_of, recorded

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventories" / "vast.py"
FIELDS = ("gpu_name", "compute_cap", "driver_version", "cuda_max_good")
GPUS = recorded("gpus")["instances"]
RTX4090_550, RTX5090_575, RTX5090_580, NO_FIELDS, ODD_CAP, NO_DRIVER = (
    f"vast-{record['id']}" for record in GPUS)

SAID_4090 = "the API says RTX 4090 (compute capability 8.9) on driver 550.54.15 (CUDA 12.4)"
SAID_5090_575 = "the API says RTX 5090 (compute capability 12.0) on driver 575.57.08 (CUDA 12.9)"
SAID_5090_580 = "the API says RTX 5090 (compute capability 12.0) on driver 580.95.05 (CUDA 13.0)"
REFUSED = ("no VisoMaster flavor runs there (upstream has kernels for compute capability 5.0-9.0 "
           "only; fusion needs a driver >= 580 (CUDA 13.0)); nothing of the app will be "
           "installed; rent cuda_max_good >= 13.0 (an R580+ driver) for RTX 50 cards, or set "
           "VISOMASTER_FLAVOR to force one")
# What loading the inventory prints for gpus.json (visomaster_flavor=auto): one line a box with
# the fields, the refusal a warning, and one warning for both boxes whose fields cannot be read.
AUTO_LINES = [
    f"red inventory: {RTX4090_550}: {SAID_4090}: visomaster_flavor=auto gets upstream",
    f"red inventory: warning: {RTX5090_575}: {SAID_5090_575}: {REFUSED}",
    f"red inventory: {RTX5090_580}: {SAID_5090_580}: visomaster_flavor=auto gets fusion",
    f"red inventory: warning: the API's GPU fields of {ODD_CAP} (compute_cap='sm_120'), "
    f"{NO_DRIVER} (no compute_cap or driver_version) cannot be read: their VisoMaster flavor is "
    "told once connected, by nvidia-smi",
]


def _ours(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("red inventory:")]


def _run_pyinfra(env: dict[str, str], *args: str, merged: bool = False
                 ) -> subprocess.CompletedProcess:
    """``pyinfra inventories/vast.py ARGS``; ``merged``: stderr into stdout, in order."""
    # A minimal environment: no developer VAST_* or VISOMASTER_* settings, no real ~/.ssh.
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "pyinfra", "inventories/vast.py", *args],
                          cwd=REPO, env={**base, **env}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT if merged else subprocess.PIPE, text=True,
                          timeout=120, check=False)


def _exec_inventory(env: dict[str, str]) -> ModuleType:
    """Execute the inventory file as pyinfra does, under ``env`` only."""
    spec = importlib.util.spec_from_file_location("red_vast_inventory_gpu", INVENTORY)
    module = importlib.util.module_from_spec(spec)
    with mock.patch.dict(os.environ, env, clear=True):
        spec.loader.exec_module(module)
    return module


def _saved(tmp_path: Path, records: list[dict]) -> str:
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"instances": records}))
    return str(path)


@pytest.fixture(scope="module")
def inv(tmp_path_factory) -> ModuleType:
    home = tmp_path_factory.mktemp("home")
    return _exec_inventory({"HOME": str(home),
                            "VAST_INSTANCES_JSON": _saved(home, GPUS)})


def test_pyinfra_lists_the_api_gpu_fields_and_each_boxs_flavor(tmp_path):
    with VastAPI(pages_of(GPUS)) as api:
        env = {"HOME": str(tmp_path), "VAST_API_URL": api.url, "VAST_API_KEY": GOOD_KEY}
        result = _run_pyinfra(env, "debug-inventory", "--json")
    assert result.returncode == 0, result.stderr
    hosts = {host["name"]: host["data"] for host in json.loads(result.stdout)}
    assert len(hosts) == len(GPUS)
    for record in GPUS:
        data = hosts[f"vast-{record['id']}"]
        # As the API gave them (strings stripped), None where it gave none.
        assert {key: data[key] for key in FIELDS} == {key: record.get(key) for key in FIELDS}
    assert {key: hosts[RTX5090_575][key] for key in FIELDS} == {
        "gpu_name": "RTX 5090", "compute_cap": 1200, "driver_version": "575.57.08",
        "cuda_max_good": 12.9}
    assert _ours(result.stderr) == AUTO_LINES
    assert "Connecting" not in result.stderr + result.stdout


def _refused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again: connecting is refused at once


def test_a_dry_deploy_tells_the_flavors_before_it_connects(tmp_path):
    port = _refused_port()
    boxes = [dict(record, public_ipaddr="127.0.0.1",
                  ports={"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]})
             for record in GPUS[:3]]
    with VastAPI(pages_of(boxes)) as api:
        env = {"HOME": str(tmp_path), "VAST_API_URL": api.url, "VAST_API_KEY": GOOD_KEY}
        result = _run_pyinfra(env, "deploy.py", "--dry", "-y", merged=True)
    output = result.stdout.splitlines()
    assert _ours(result.stdout) == AUTO_LINES[:3], result.stdout
    connecting = next(i for i, line in enumerate(output) if "Connecting to hosts" in line)
    assert output.index(AUTO_LINES[2]) < connecting
    assert result.returncode != 0  # no box answered: nothing was changed anywhere


@pytest.mark.parametrize(("flavor", "expected"), [
    ("fusion", {
        RTX4090_550: (True, f"{SAID_4090}: visomaster_flavor=fusion gets fusion, but fusion "
                            "needs a driver >= 580 (CUDA 13.0): the app may not start"),
        RTX5090_575: (True, f"{SAID_5090_575}: visomaster_flavor=fusion gets fusion, but fusion "
                            "needs a driver >= 580 (CUDA 13.0): the app may not start"),
        RTX5090_580: (False, f"{SAID_5090_580}: visomaster_flavor=fusion gets fusion")}),
    ("upstream", {
        RTX4090_550: (False, f"{SAID_4090}: visomaster_flavor=upstream gets upstream"),
        RTX5090_575: (True, f"{SAID_5090_575}: visomaster_flavor=upstream gets upstream, but "
                            "upstream has kernels for compute capability 5.0-9.0 only: the app "
                            "may not start"),
        RTX5090_580: (True, f"{SAID_5090_580}: visomaster_flavor=upstream gets upstream, but "
                            "upstream has kernels for compute capability 5.0-9.0 only: the app "
                            "may not start")}),
    # Not a flavor: auto, as the deploy takes it.
    (" Fusion! ", {
        RTX4090_550: (False, f"{SAID_4090}: visomaster_flavor=auto gets upstream"),
        RTX5090_575: (True, f"{SAID_5090_575}: {REFUSED}"),
        RTX5090_580: (False, f"{SAID_5090_580}: visomaster_flavor=auto gets fusion")}),
])
def test_visomaster_flavor_from_the_environment_is_the_one_told(inv, tmp_path, flavor, expected):
    hosts = inv.hosts_from_instances(GPUS[:3], None, tmp_path / "kh")
    lines, warning = inv.vast_gpu.flavor_lines(hosts, {"VISOMASTER_FLAVOR": flavor})
    assert warning is None
    assert lines == [(warned, f"{name}: {line}") for name, (warned, line) in expected.items()]


def test_boxes_without_the_fields_get_no_line_and_no_warning(inv, tmp_path):
    plain = [{key: value for key, value in record.items() if key not in FIELDS[1:]}
             for record in GPUS]
    hosts = inv.hosts_from_instances(plain, None, tmp_path / "kh")
    assert all(data[key] is None for _, data in hosts for key in FIELDS[1:])
    assert inv.vast_gpu.flavor_lines(hosts, {}) == ([], None)


def test_loading_prints_the_lines_on_stderr_only(tmp_path, capsys):
    module = _exec_inventory({"HOME": str(tmp_path),
                              "VAST_INSTANCES_JSON": _saved(tmp_path, GPUS)})
    captured = capsys.readouterr()
    assert captured.out == ""
    assert _ours(captured.err) == AUTO_LINES
    assert [name for name, _ in module.vast] == [f"vast-{r['id']}" for r in GPUS]


_ODD = [None, "", " ", 0, -1, True, 1.5e308, float("nan"), "x", "8.9.1", "ünïcode", "\x00",
        [], {}, [890], {"major": 8}, 89, 895, 10**30]


def test_no_gpu_field_value_breaks_the_listing_and_odd_ones_are_one_warning(inv, tmp_path):
    base = GPUS[0]
    records = [dict(base, id=70_000_000 + index, **{field: value})
               for index, (field, value) in enumerate(
                   (field, value) for field in FIELDS for value in _ODD)]
    hosts = inv.hosts_from_instances(records, None, tmp_path / "kh")
    assert len(hosts) == len(records)  # a GPU field never costs a box its place
    said, warned = [], []
    inv.vast_gpu.report(hosts, {}, said.append, warned.append)
    odd = [line for line in warned if "cannot be read" in line]
    assert len(odd) == 1 and odd[0].endswith("by nvidia-smi")
    assert " and " in odd[0] and " more cannot be read" in odd[0]
    assert all("\n" not in line for line in said + warned)
    assert len(said) + len(warned) - 1 <= len(records)


def test_without_the_box_library_it_is_one_warning(inv, tmp_path, monkeypatch):
    hosts = inv.hosts_from_instances(GPUS, None, tmp_path / "kh")
    monkeypatch.setitem(sys.modules, "redbox.app", None)
    lines, warning = inv.vast_gpu.flavor_lines(hosts, {})
    assert lines == []
    assert warning.startswith("cannot tell the VisoMaster flavors before connecting (")
    assert warning.endswith("each box's nvidia-smi decides them")


def test_an_unexpected_error_is_one_warning_and_the_listing_stands(inv, tmp_path, monkeypatch):
    hosts = inv.hosts_from_instances(GPUS, None, tmp_path / "kh")

    def broken(*args):
        raise RecursionError("deep")

    monkeypatch.setattr(inv.vast_gpu, "flavor_lines", broken)
    said, warned = [], []
    inv.vast_gpu.report(hosts, {}, said.append, warned.append)
    assert (said, warned) == ([], ["cannot tell the VisoMaster flavors before connecting "
                                   "(unexpected RecursionError: deep)"])


# -- once connected: nvidia-smi decides, the flavor line names the API's GPU where they differ

SMI_4090 = Gpu("NVIDIA GeForce RTX 4090", "8.9", "550.54.15", "12.4")
SMI_5090_580 = Gpu("NVIDIA GeForce RTX 5090", "12.0", "580.95.05", "13.0")
API_4090 = {key: GPUS[0][key] for key in FIELDS}
API_5090_575 = {key: GPUS[1][key] for key in FIELDS}


@pytest.mark.parametrize(("data", "smi", "env", "said"), [
    (API_4090, SMI_4090, {}, ""),
    ({"gpu_name": "RTX 4090"}, SMI_4090, {}, ""),
    # The host's driver was updated since the listing: nvidia-smi's answer decides.
    (API_5090_575, SMI_5090_580, {},
     " (the API said: RTX 5090 (compute capability 12.0) on driver 575.57.08 (CUDA 12.9))"),
    (API_5090_575, SMI_5090_580, {"VISOMASTER_FLAVOR": "fusion"},
     " (the API said: RTX 5090 (compute capability 12.0) on driver 575.57.08 (CUDA 12.9))"),
    (API_4090, None, {},
     " (the API said: RTX 4090 (compute capability 8.9) on driver 550.54.15 (CUDA 12.4))"),
])
def test_the_flavor_line_names_the_api_gpu_where_nvidia_smi_differs(
        monkeypatch, data, smi, env, said):
    problem = "" if smi else "nvidia-smi lists no GPU"
    resolved = resolve(env, data=registry.DEFAULTS.get, gpu=lambda: (smi, problem))
    before = list(resolved.decisions)
    monkeypatch.setattr(settings, "host", mock.Mock(data=data))
    monkeypatch.setattr(settings, "box_gpu", lambda: (smi, problem))
    settings._note_api_gpu(resolved)
    flavor_line = next(i for i, line in enumerate(before)
                       if line.startswith(f"{resolved.sources['visomaster_flavor']}="))
    expected = list(before)
    expected[flavor_line] += said
    assert resolved.decisions == expected
    chosen = "fusion" if smi is SMI_5090_580 else "upstream"
    assert resolved.decisions[flavor_line].split(": ")[1].startswith(chosen)
