"""The flavor for a GPU: the selection table (GPU x driver -> flavor or refusal), forced flavors."""

import re

import pytest

from redbox.app import flavors
from redbox.app.gpu import Gpu, cuda_of_driver, parse_gpus

DRIVER_DOWN = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
               "Make sure that the latest NVIDIA driver is installed and running.")


def gpu(name, capability, driver, cuda=""):
    return Gpu(name, capability, driver, cuda or cuda_of_driver(driver))


@pytest.mark.parametrize(("card", "expected", "words"), [
    (gpu("NVIDIA GeForce GTX 1080", "6.1", "535.183.01"), "upstream", "upstream runs on it"),
    (gpu("Tesla T4", "7.5", "535.183.01"), "upstream", "upstream runs on it"),
    (gpu("NVIDIA GeForce RTX 3090", "8.6", "550.127.05"), "upstream", "upstream runs on it"),
    # Both run on a 4090 with an R580 driver: the first in FLAVORS order (upstream) is taken.
    (gpu("NVIDIA GeForce RTX 4090", "8.9", "580.95.05"), "upstream", "so does fusion"),
    (gpu("NVIDIA GeForce RTX 4090", "8.9", "550.127.05"), "upstream", "upstream runs on it"),
    (gpu("NVIDIA A100-SXM4-80GB", "8.0", "535.183.01"), "upstream", "upstream runs on it"),
    (gpu("NVIDIA H100 80GB HBM3", "9.0", "570.133.20"), "upstream", "upstream runs on it"),
    (gpu("NVIDIA GeForce RTX 5090", "12.0", "575.57.08"), None, "cuda_max_good >= 13.0"),
    (gpu("NVIDIA GeForce RTX 5090", "12.0", "580.95.05"), "fusion", "fusion runs on it"),
    # A driver older than CUDA 12's floor runs neither; a Kepler card has no kernels anywhere.
    (gpu("Tesla P100", "6.0", "470.256.02"), None, "driver >= 525.60.13"),
    (gpu("Tesla K80", "3.7", "470.256.02"), None, "compute capability 5.0-9.0 only"),
    (gpu("NVIDIA B200", "10.0", "580.95.05"), "fusion", "fusion runs on it"),
])
def test_auto_picks_the_flavor_that_runs_on_the_gpu(card, expected, words):
    choice = flavors.choose("auto", card, fallback="upstream")
    assert choice.chosen == expected
    assert words in f"{choice.reason} {choice.warning}"
    if expected is None:
        assert "NOT installed" in choice.warning and card.name in choice.warning


@pytest.mark.parametrize("fallback", ["upstream", "fusion"])
def test_no_gpu_gets_the_fallback_and_one_line(fallback):
    choice = flavors.choose("auto", None, fallback=fallback, gpu_problem="nvidia-smi lists no GPU")
    assert choice.chosen == fallback
    assert choice.warning.startswith("nvidia-smi lists no GPU: VisoMaster needs an NVIDIA GPU")


def test_an_explicit_flavor_wins_with_a_warning_outside_its_range():
    blackwell = gpu("NVIDIA GeForce RTX 5090", "12.0", "580.95.05")
    choice = flavors.choose("upstream", blackwell, fallback="upstream")
    assert choice.chosen == "upstream"
    assert "compute capability 5.0-9.0 only" in choice.warning
    fits = flavors.choose("fusion", blackwell, fallback="upstream")
    assert (fits.chosen, fits.warning) == ("fusion", None)


@pytest.mark.parametrize(("code", "out", "header", "found", "problem"), [
    (0, "NVIDIA GeForce RTX 5090, 12.0, 575.57.08\n",
     "| NVIDIA-SMI 575.57.08  Driver Version: 575.57.08  CUDA Version: 12.9 |",
     Gpu("NVIDIA GeForce RTX 5090", "12.0", "575.57.08", "12.9"), ""),
    # No header: the CUDA the driver runs from its version.
    (0, "Tesla T4, 7.5, 535.183.01\nTesla T4, 7.5, 535.183.01\n", "",
     Gpu("Tesla T4", "7.5", "535.183.01", "12.2", count=2), ""),
    (9, DRIVER_DOWN, "", None, "couldn't communicate with the NVIDIA driver"),
    (6, "No devices were found\n", "", None, "exit 6): No devices were found"),
    (0, "\x1b[31m?? lorem, ipsum\n", "", None, "unreadable"),
    (0, "", "", None, "lists no GPU"),
    (None, "", "", None, "nvidia-smi is not installed"),
    (None, "nvidia-smi did not answer within 10 s (a hung driver?)", "", None, "hung driver"),
])
def test_nvidia_smi_answers_are_read_or_explained(code, out, header, found, problem):
    gpu_found, why = parse_gpus(code, out, header)
    assert gpu_found == found
    assert (problem in why) if problem else why == ""


def test_every_flavor_declares_a_pinned_ref_and_its_gpu_range():
    for flavor in flavors.FLAVORS.values():
        # A tag or a full commit, never a branch.
        assert flavor.ref.startswith("v") or len(flavor.ref) == 40, flavor.ref
        assert flavor.compute_min <= flavor.compute_max and flavor.driver_min
        # Each override says why (keyed by its project's name).
        named = {re.split(r"[\[=<>!~ ]", line, maxsplit=1)[0] for line in flavor.overrides}
        assert flavor.pythons and named == set(flavor.why)
