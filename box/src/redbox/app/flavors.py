"""
The flavors of VisoMaster, each a complete app environment declared once, and the rule that
picks one for the GPU a box has.

A flavor names its repository at a pinned ref, the Python it runs on, its requirements file,
the indexes uv resolves it from (and how: uv's index strategy, pre-releases), Red's overrides
for known breakages of that upstream, and the GPUs it runs on (compute capabilities and the
oldest driver). Adding a flavor is one more ``Flavor(...)`` in ``FLAVORS`` (and a fixture).

The rule (``choose``), for ``visomaster_flavor=auto``:

- a GPU that several flavors run on gets the first of them in ``FLAVORS`` order: upstream, the
  original app (Python 3.10, CUDA 12 wheels on any R525+ driver), where it runs; Fusion where
  only Fusion runs (RTX 50 / sm_120 on an R580+ driver);
- a GPU no flavor runs on (an RTX 50 card on a driver older than R580, a GPU older than
  Maxwell) gets nothing: no install is tried, one line says why and what to rent instead;
- no GPU (or a driver that does not answer) gets the fallback flavor, with one line saying
  the app needs an NVIDIA GPU.

An explicit flavor always wins, with a warning when the GPU is outside its range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redbox.app.gpu import Gpu, shown, version_tuple

AUTO = "auto"
# Vast's filter for hosts whose driver runs CUDA 13 (its offers' cuda_max_good).
CUDA13_HOSTS = "cuda_max_good >= 13.0"

PYTORCH_INDEX = "https://download.pytorch.org/whl"
NVIDIA_INDEX = "https://pypi.nvidia.com"
ORT_CUDA13_INDEX = ("https://aiinfra.pkgs.visualstudio.com/PublicPackages/_packaging/"
                    "ort-cuda-13-nightly/pypi/simple/")


@dataclass(frozen=True)
class Flavor:
    name: str
    summary: str
    repo_url: str
    # A tag or a full commit: never a moving branch by default.
    ref: str
    # The Pythons it runs on, preferred first: the box's own when it has one of them, else a
    # uv-managed copy of the first.
    pythons: tuple[str, ...]
    requirements: str
    extra_index_urls: tuple[str, ...]
    # uv's --index-strategy: unsafe-best-match lets a pin be found on any index (the app's
    # own choice where its pyproject says so).
    index_strategy: str
    # Red's fixes of that upstream's known breakages: uv overrides, one requirement a line.
    overrides: tuple[str, ...]
    # Compute capabilities it has kernels for (inclusive) and the oldest driver its CUDA runs on.
    compute_min: tuple[int, int]
    compute_max: tuple[int, int]
    driver_min: tuple[int, ...]
    cuda: str
    # Whether its recording encodes with NVENC (hevc_nvenc).
    records_with_nvenc: bool = False
    prerelease: bool = False
    why: dict[str, str] = field(default_factory=dict)

    def gpu_range(self) -> str:
        return (f"compute capability {shown(self.compute_min)}-{shown(self.compute_max)}, "
                f"driver >= {shown(self.driver_min)} (CUDA {self.cuda})")

    def misfit(self, gpu: Gpu) -> str | None:
        """Why this flavor cannot run on the GPU, or None when it can."""
        capability = version_tuple(gpu.compute_capability)
        driver = version_tuple(gpu.driver_version)
        if not capability or not self.compute_min <= capability <= self.compute_max:
            return (f"{self.name} has kernels for compute capability {shown(self.compute_min)}"
                    f"-{shown(self.compute_max)} only")
        if not driver or driver < self.driver_min:
            return (f"{self.name} needs a driver >= {shown(self.driver_min)} "
                    f"(CUDA {self.cuda})")
        return None


UPSTREAM = Flavor(
    name="upstream",
    summary="visomaster/VisoMaster v0.1.6: torch 2.4.1+cu124, GPUs up to RTX 40 / H100",
    repo_url="https://github.com/visomaster/VisoMaster.git",
    # Its latest release (= 537cff8); upstream is dormant, its head differs in the title only.
    ref="v0.1.6",
    # README: python=3.10.13; 3.11 works too; 3.12 does not (pillow 9.5, scikit-image 0.21).
    pythons=("3.10", "3.11"),
    requirements="requirements_cu124.txt",
    # The file names the PyTorch index itself; TensorRT's sdists build from NVIDIA's.
    extra_index_urls=(NVIDIA_INDEX,),
    # What pip does with the file's indexes: the best match across all of them.
    index_strategy="unsafe-best-match",
    overrides=("onnxruntime-gpu==1.22.0",),
    compute_min=(5, 0),
    compute_max=(9, 0),
    # CUDA 12 wheels run on any R525+ driver (CUDA's minor-version compatibility).
    driver_min=(525, 60, 13),
    cuda="12.4",
    why={"onnxruntime-gpu": "1.20.0 breaks face detection in Linux venvs ('no data "
         "transfer registered', upstream #64/#104); open PR #89 raises the pin to 1.22.0"},
)

FUSION = Flavor(
    name="fusion",
    summary="VisoMasterFusion/VisoMaster-Fusion, CUDA 13 line: torch 2.11.0+cu130, RTX 50",
    repo_url="https://github.com/VisoMasterFusion/VisoMaster-Fusion.git",
    # The CUDA-13 commit whose requirements_cu13.txt Red's fixtures hold byte for byte (the
    # reference's): main after it (2d5f0ad, v3.6.1) adds keras and tensorflow, the v3.8+ tags
    # and the peer image's pin 4af2184 could not be read. VISOMASTER_REF=main follows main.
    ref="058383a2713448a5e750f5f2bc9969ded6d4e796",
    # numpy 2.4 and scipy 1.17 need >= 3.11, tifffile 2026.5.2 >= 3.12 (uv's resolution says
    # so); Fusion's README makes its venv with 3.12.
    pythons=("3.12",),
    requirements="requirements_cu13.txt",
    # Its pyproject's [tool.uv.pip] (which pip ignores), with the PyTorch index at cu130.
    extra_index_urls=(f"{PYTORCH_INDEX}/cu130", NVIDIA_INDEX, ORT_CUDA13_INDEX),
    index_strategy="unsafe-best-match",
    # torch 2.11.0+cu130's own pins; an override replaces the extras too (uv #11247), so the
    # toolkit keeps every component torch asks for.
    overrides=("cuda-toolkit[cublas,cudart,cufft,cufile,cupti,curand,cusolver,cusparse,"
               "nvjitlink,nvrtc,nvtx]==13.0.2", "nvidia-cublas==13.1.0.3",
               "nvidia-cuda-nvrtc==13.0.88", "nvidia-cudnn-cu13==9.19.0.56"),
    compute_min=(7, 5),
    compute_max=(12, 0),
    # The CUDA 13 family's floor; CUDA 13 also drops GPUs below sm_75 (Fusion #256).
    driver_min=(580,),
    cuda="13.0",
    records_with_nvenc=True,
    prerelease=True,
    why={"cuda-toolkit": "the file pins 13.2.1, torch 2.11.0+cu130 requires "
         "cuda-toolkit[cublas]==13.0.2: as written it does not resolve (Fusion #261)",
         "nvidia-cublas": "torch 2.11.0+cu130's pin (the file's is newer)",
         "nvidia-cuda-nvrtc": "torch 2.11.0+cu130's pin (the file's is newer)",
         "nvidia-cudnn-cu13": "torch 2.11.0+cu130's pin (the file pins 9.21.1.3)"},
)

FLAVORS: dict[str, Flavor] = {flavor.name: flavor for flavor in (UPSTREAM, FUSION)}


@dataclass(frozen=True)
class Choice:
    configured: str
    chosen: str | None  # None: no flavor runs on this GPU, nothing is installed
    reason: str
    # A line for the log when something is off (no GPU, a refusal, a forced misfit).
    warning: str | None = None

    def as_json(self) -> dict:
        return {"configured": self.configured, "chosen": self.chosen, "reason": self.reason,
                "warning": self.warning}


def choose(configured: str, gpu: Gpu | None, fallback: str, gpu_problem: str = "") -> Choice:
    """
    The flavor for this box: ``configured`` (a flavor name or ``auto``), the GPU nvidia-smi
    reported (None: none usable, ``gpu_problem`` says why when known), the flavor a box with
    no GPU gets.
    """
    if configured != AUTO:
        flavor = FLAVORS[configured]
        if gpu is None:
            return Choice(configured, configured, f"set to {configured}",
                          _no_gpu_line(gpu_problem, configured))
        misfit = flavor.misfit(gpu)
        if misfit is None:
            return Choice(configured, configured,
                          f"set to {configured}; it runs on {gpu.describe()}")
        return Choice(configured, configured, f"set to {configured}", (
            f"visomaster_flavor={configured} is forced on {gpu.describe()}, but {misfit}: "
            "the app may not start; auto picks a flavor that runs here"))
    if gpu is None:
        return Choice(configured, fallback, f"no usable GPU: the fallback flavor {fallback}",
                      _no_gpu_line(gpu_problem, fallback))
    misfits = {}
    for flavor in FLAVORS.values():
        misfit = flavor.misfit(gpu)
        if misfit is None:
            others = [name for name in FLAVORS if name != flavor.name
                      and FLAVORS[name].misfit(gpu) is None]
            also = f" (so does {', '.join(others)}; the first one that runs is taken)" \
                if others else ""
            return Choice(configured, flavor.name,
                          f"{gpu.describe()}: {flavor.name} runs on it{also}")
        misfits[flavor.name] = misfit
    why = "; ".join(misfits.values())
    return Choice(configured, None, f"no flavor runs on {gpu.describe()}: {why}", (
        f"VisoMaster is NOT installed: no flavor runs on {gpu.describe()} ({why}). "
        f"Rent a host whose driver runs CUDA 13 (on Vast: {CUDA13_HOSTS}) for RTX 50 cards, "
        "or set VISOMASTER_FLAVOR to force one"))


def _no_gpu_line(problem: str, flavor: str) -> str:
    cause = problem or "no NVIDIA GPU is visible in this container"
    return (f"{cause}: VisoMaster needs an NVIDIA GPU to open its window; the {flavor} flavor "
            "is installed anyway (start the container with --gpus all, or rent a GPU box)")
