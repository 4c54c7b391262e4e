"""The GPU Vast's API says an instance has (its own field names); where nvidia-smi differs."""

import math

import pytest

from redbox.app import flavors
from redbox.app.gpu import Gpu, api_said, from_vast, unreadable_vast_fields


def record(**fields):
    base = {"gpu_name": "RTX 4090", "num_gpus": 1, "compute_cap": 890,
            "driver_version": "550.54.15", "cuda_max_good": 12.4}
    return {**base, **fields}


@pytest.mark.parametrize(("fields", "capability", "driver", "cuda"), [
    # As the API and `vastai search offers` give them: compute_cap times 100, CUDA a number.
    ({}, "8.9", "550.54.15", "12.4"),
    ({"compute_cap": 1200, "cuda_max_good": 12.9, "driver_version": "575.57.08"},
     "12.0", "575.57.08", "12.9"),
    ({"compute_cap": 750}, "7.5", "550.54.15", "12.4"),
    ({"compute_cap": 860}, "8.6", "550.54.15", "12.4"),
    ({"compute_cap": 1000}, "10.0", "550.54.15", "12.4"),
    ({"compute_cap": 1210}, "12.1", "550.54.15", "12.4"),
    ({"cuda_max_good": 13}, "8.9", "550.54.15", "13.0"),
    # The same as text (vast-cli's own tests hold "13.0"); the capability as nvidia-smi
    # writes it.
    ({"compute_cap": "890", "cuda_max_good": "13.0"}, "8.9", "550.54.15", "13.0"),
    ({"compute_cap": "8.9"}, "8.9", "550.54.15", "12.4"),
    ({"compute_cap": 8.9}, "8.9", "550.54.15", "12.4"),
    ({"compute_cap": "12.0"}, "12.0", "550.54.15", "12.4"),
    ({"compute_cap": " 890 ", "driver_version": " 580.95.05\n"}, "8.9", "580.95.05", "12.4"),
    # A search filter's encoding of the driver.
    ({"driver_version": 535129003}, "8.9", "535.129.03", "12.4"),
    # No CUDA from the API: the one the driver runs.
    ({"cuda_max_good": None}, "8.9", "550.54.15", "12.4"),
    ({"driver_version": "580.95.05", "cuda_max_good": "n/a"}, "8.9", "580.95.05", "13.0"),
    ({"driver_version": "575.57.08"}, "8.9", "575.57.08", "12.4"),
])
def test_the_api_fields_become_a_gpu(fields, capability, driver, cuda):
    gpu = from_vast(record(**fields))
    assert (gpu.compute_capability, gpu.driver_version, gpu.cuda_max) == (capability, driver, cuda)
    assert gpu.name == "RTX 4090"


@pytest.mark.parametrize("fields", [
    {"compute_cap": None}, {"driver_version": None}, {"compute_cap": ""},
    {"compute_cap": 895}, {"compute_cap": 89}, {"compute_cap": "sm_89"}, {"compute_cap": True},
    {"compute_cap": [8, 9]}, {"compute_cap": {"major": 8}}, {"compute_cap": -890},
    {"compute_cap": math.nan}, {"compute_cap": 1.5e308}, {"compute_cap": "8.9.1"},
    {"driver_version": "r575"}, {"driver_version": 575}, {"driver_version": ""},
    {"driver_version": 1.5e308}, {"driver_version": []},
])
def test_a_missing_or_odd_capability_or_driver_gives_none(fields):
    assert from_vast(record(**fields)) is None


def test_without_the_fields_or_a_mapping_there_is_no_gpu():
    assert from_vast({"gpu_name": "RTX 4090", "num_gpus": 1}) is None
    assert from_vast(None) is None
    assert from_vast("RTX 4090") is None


def test_name_and_count():
    gpu = from_vast(record(gpu_name="  RTX  5090 ", num_gpus=2))
    assert (gpu.name, gpu.count) == ("RTX 5090", 2)
    assert from_vast(record(gpu_name=None, num_gpus="x")) == Gpu("GPU", "8.9", "550.54.15",
                                                                  "12.4", 1)


def test_host_data_objects_answer_too():
    class HostData:  # pyinfra's: get(key, default=None) reads attributes
        compute_cap, driver_version, gpu_name = 1200, "580.95.05", "RTX 5090"

        def get(self, key, default=None):
            return getattr(self, key, default)

    assert from_vast(HostData()).describe() == (
        "RTX 5090 (compute capability 12.0) on driver 580.95.05 (CUDA 13.0)")


def test_unreadable_fields_are_named_and_missing_ones_are_not():
    assert unreadable_vast_fields(record()) == []
    assert unreadable_vast_fields({"gpu_name": "RTX 4090"}) == []
    assert unreadable_vast_fields(record(compute_cap="", cuda_max_good=None)) == []
    assert unreadable_vast_fields(record(compute_cap="sm_89", cuda_max_good=[1])) == [
        "compute_cap='sm_89'", "cuda_max_good=[1]"]


@pytest.mark.parametrize(("fields", "flavor"), [
    ({}, "upstream"),
    ({"gpu_name": "RTX 5090", "compute_cap": 1200, "driver_version": "575.57.08",
      "cuda_max_good": 12.9}, None),
    ({"gpu_name": "RTX 5090", "compute_cap": 1200, "driver_version": "580.95.05",
      "cuda_max_good": 13.0}, "fusion"),
])
def test_the_api_gpu_gets_the_flavor_nvidia_smi_would(fields, flavor):
    assert flavors.choose("auto", from_vast(record(**fields)), "upstream").chosen == flavor


SMI_4090 = Gpu("NVIDIA GeForce RTX 4090", "8.9", "550.54.15", "12.4")


def test_the_api_is_named_only_where_it_and_nvidia_smi_part():
    assert api_said(record(), SMI_4090) == ""
    assert api_said({"gpu_name": "RTX 4090"}, SMI_4090) == ""
    assert api_said(record(driver_version="580.95.05"), SMI_4090) == (
        " (the API said: RTX 4090 (compute capability 8.9) on driver 580.95.05 (CUDA 12.4))")
    assert api_said(record(compute_cap=1200), SMI_4090).startswith(
        " (the API said: RTX 4090 (compute capability 12.0)")
    assert api_said(record(), None).startswith(" (the API said: RTX 4090")
