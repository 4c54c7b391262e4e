"""
The bench's stand-ins, written once per bench run into its work directory, sizes times
``scale`` (bench/app/data.py has the full sizes):

- wheels: every distribution of tests/fixtures/flavors/stand-ins.json that lives on an index
  the upstream flavor installs from (PyPI, PyTorch's cu124, NVIDIA's), with its real name,
  version, Requires-Python and Requires-Dist, ``__version__`` in its module, and padding files
  (random bytes, stored) up to its size and file count; one PEP 503 directory per index, each
  wheel with its PEP 658 metadata beside it (tests/flavor_indexes.py serves the same layout);
- the 57 model files of upstream's list (random bytes) under the assets' release tags;
- the CLIP weights;
- the app's repository, bare, with a ``main`` branch and the ``v0.1.6`` tag: a models_data.py
  shaped like upstream's (the TensorRT list in a try block, the model list with f-strings on
  ``models_dir`` and ``assets_repo``) pointing at the assets server, the app's own downloader
  (tests/fixtures/app_downloader.py), the flavor's requirements file with the stand-in
  indexes' URLs, and padding files up to the repository's size and file count.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import shutil
import subprocess
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from tests import flavor_indexes as fi
from tests.fixtures.app_downloader import DOWNLOADER

from . import data

# The indexes the upstream flavor installs from (its requirements file names PyTorch's, the
# flavor NVIDIA's, uv's default is PyPI).
INDEXES = (fi.PYPI, fi.PYTORCH_CU124, fi.NVIDIA)
_EPOCH = (2020, 1, 1, 0, 0, 0)
# A stored zip member's local and central headers, and the archive's end record (bytes).
ZIP_ENTRY, ZIP_END = 76, 22
REPO_PATH = "visomaster/VisoMaster.git"
ASSETS_PATH = "visomaster/visomaster-assets/releases/download"


@dataclass
class Urls:
    """Where each stand-in answers (inside the namespace)."""

    git: str
    indexes: dict[str, str]  # index name -> simple URL
    assets_repo: str  # the GitHub-style release URL prefix the model list names
    cdn: str  # where the release URLs redirect to
    clip: str  # the CLIP server's root

    @classmethod
    def at(cls, host: str, ports: dict[str, int]) -> Urls:
        def base(name: str) -> str:
            return f"http://{host}:{ports[name]}"
        return cls(git=f"{base('git')}/{REPO_PATH}",
                   indexes={name: f"{base(name)}/simple" for name in INDEXES},
                   assets_repo=f"{base('github')}/{ASSETS_PATH}", cdn=base("cdn"),
                   clip=base("clip"))


@dataclass
class Built:
    """What build() wrote: paths, sizes and hashes the servers and the report need."""

    root: Path
    scale: float
    index_dirs: dict[str, Path] = field(default_factory=dict)
    wheels: dict[str, int] = field(default_factory=dict)  # file name -> bytes
    wheel_files: dict[str, int] = field(default_factory=dict)  # file name -> files inside
    models: list[dict] = field(default_factory=list)  # name, path, tag, file, size, sha256
    clip_file: Path | None = None
    clip_sha256: str = ""
    clip_url: str = ""
    repo_dir: Path | None = None  # holds REPO_PATH
    pack_bytes: int = 0

    @property
    def assets_dir(self) -> Path:
        return self.root / "assets"

    def model_bytes(self) -> int:
        return sum(model["size"] for model in self.models)

    def clip_bytes(self) -> int:
        return self.clip_file.stat().st_size if self.clip_file else 0


def _random(seed: str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def scaled(megabytes: float, scale: float) -> int:
    return max(1, round(megabytes * data.MB * scale))


def _record_line(path: str, content: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(content)}"


def wheel_filename(dist: fi.Dist) -> str:
    return dist.filename


def wheel_members(dist: fi.Dist, size: int, files: int) -> dict[str, bytes]:
    """
    A wheel's members: the module (with __version__), padding files, the dist-info; the
    padding is what is left of ``size`` after the other members and the zip's own headers
    (a package of many small files may end up larger than asked at a small scale).
    """
    module = dist.stem.split("-")[0]
    info = f"{dist.stem}.dist-info"
    members = {f"{module}/__init__.py": (f"STAND_IN = {dist.name!r}\n__version__ = VERSION = "
                                         f"{dist.version!r}\n").encode()}
    metadata = dist.metadata().encode()
    wheel = (b"Wheel-Version: 1.0\nGenerator: red-bench-app\nRoot-Is-Purelib: true\n"
             b"Tag: py3-none-any\n")
    pads = max(1, files - 4)
    names = [f"{module}/_s/{number:x}" for number in range(pads)]
    record_guess = sum(len(name) + 60 for name in [*names, *members]) + 200
    fixed = (sum(ZIP_ENTRY + 2 * len(name.encode()) for name in [*names, *members])
             + 3 * (ZIP_ENTRY + 2 * len(info) + 20) + ZIP_END + 2 * len(metadata) + len(wheel)
             + sum(len(content) for content in members.values()) + record_guess)
    budget = max(0, size - fixed)
    # One big file (a wheel's shared library) and many small ones.
    big = budget * 7 // 10 if pads > 1 else budget
    small, extra = divmod(budget - big, max(1, pads - 1))
    for number, name in enumerate(names):
        length = big if number == 0 else small + (1 if number <= extra else 0)
        members[name] = _random(f"{dist.filename}/{number}", length)
    members[f"{info}/METADATA"] = metadata
    members[f"{info}/WHEEL"] = wheel
    record = [_record_line(name, content) for name, content in members.items()]
    record.append(f"{info}/RECORD,,")
    members[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    return members


def write_wheel(directory: Path, dist: fi.Dist, scale: float) -> tuple[Path, int]:
    """The padded wheel and its PEP 658 metadata; (path, files inside)."""
    megabytes, files = data.wheel_size(fi.normalize(dist.name))
    members = wheel_members(dist, scaled(megabytes, scale), files)
    path = directory / dist.filename
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, content in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=_EPOCH), content)
    Path(f"{path}.metadata").write_bytes(dist.metadata().encode())
    return path, len(members)


def build_wheels(built: Built) -> None:
    store = built.root / "wheels"
    store.mkdir(parents=True, exist_ok=True)
    for name in INDEXES:
        built.index_dirs[name] = built.root / "indexes" / name
        built.index_dirs[name].mkdir(parents=True, exist_ok=True)
    for dist in fi.distributions():
        on = [index for index in dist.indexes if index in INDEXES]
        if not on:
            continue
        path, members = write_wheel(store, dist, built.scale)
        built.wheels[path.name] = path.stat().st_size
        built.wheel_files[path.name] = members
        for index in on:
            for source in (path, Path(f"{path}.metadata")):
                os.link(source, built.index_dirs[index] / source.name)


def build_models(built: Built, urls: Urls) -> None:
    for (name, path, tag, _), megabytes in zip(data.MODELS, data.model_sizes(), strict=True):
        size = scaled(megabytes, built.scale)
        content = _random(path, size)
        target = built.assets_dir / tag / os.path.basename(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        built.models.append({"name": name, "path": path, "tag": tag, "file": str(target),
                             "size": size, "sha256": hashlib.sha256(content).hexdigest(),
                             "url": f"{urls.assets_repo}/{tag}/{os.path.basename(path)}"})


def build_clip(built: Built, urls: Urls) -> None:
    content = _random(data.CLIP_NAME, scaled(data.CLIP_MB, built.scale))
    built.clip_sha256 = hashlib.sha256(content).hexdigest()
    built.clip_file = built.root / "clip" / built.clip_sha256 / data.CLIP_NAME
    built.clip_file.parent.mkdir(parents=True)
    built.clip_file.write_bytes(content)
    built.clip_url = f"{urls.clip}/clip/models/{built.clip_sha256}/{data.CLIP_NAME}"


def models_data_py(models: list[dict], assets_repo: str) -> str:
    """A models_data.py shaped like upstream's, listing the stand-in files."""
    lines = ["models_dir = './model_assets'", f'assets_repo = "{assets_repo}"', "", "try:",
             "    import tensorrt as trt", "    models_trt_list = ["]
    for stem in ("motion_extractor", "appearance_feature_extractor", "stitching_eye",
                 "stitching_lip", "stitching", "warping_spade-fix"):
        lines += ["        {", f"            'model_name': 'LivePortrait {stem}',",
                  f"            'local_path': f'{{models_dir}}/liveportrait_onnx/{stem}.' + "
                  "trt.__version__ + '.trt',", f"            'hash': '{'0' * 64}'", "        },"]
    lines += ["    ]", "except ModuleNotFoundError:", "    models_trt_list = []", "",
              "arcface_mapping_model_dict = {", "    'Inswapper128': 'Inswapper128ArcFace',",
              "}", "", "models_list = ["]
    for model in models:
        rest = model["path"].removeprefix("model_assets/")
        lines += ["    {", f'        "model_name": "{model["name"]}",',
                  f'        "local_path": f"{{models_dir}}/{rest}",',
                  f'        "hash": "{model["sha256"]}",',
                  f'        "url": f"{{assets_repo}}/{model["tag"]}/{os.path.basename(rest)}"',
                  "    },"]
    lines += ["]", ""]
    return "\n".join(lines)


def git(*args: str, cwd: Path) -> str:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd),
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid",
           "GIT_AUTHOR_DATE": "2025-03-09T00:00:00Z", "GIT_COMMITTER_DATE": "2025-03-09T00:00:00Z"}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def build_repo(built: Built, urls: Urls) -> None:
    """The app's repository: the real-shaped files, padding up to its size, a few commits."""
    work = built.root / "repo-work"
    work.mkdir()
    requirements = fi.localize(fi.UPSTREAM_REQUIREMENTS.read_text(encoding="utf-8"),
                               urls.indexes)
    files = {
        "app/__init__.py": b"",
        "app/processors/__init__.py": b"",
        "app/processors/models_data.py": models_data_py(built.models,
                                                        urls.assets_repo).encode(),
        "download_models.py": DOWNLOADER.encode(),
        "requirements_cu124.txt": requirements.encode(),
        "main.py": b"print('VisoMaster stand-in')\n",
        "README.md": b"# VisoMaster (the bench's stand-in)\n",
    }
    pads = data.REPO_FILES - len(files)
    total = scaled(data.REPO_MB, built.scale)
    git("init", "-q", "-b", "main", ".", cwd=work)
    # The padding arrives over REPO_COMMITS commits, as a history would.
    per_commit = [range(n, pads, data.REPO_COMMITS) for n in range(data.REPO_COMMITS)]
    for number, indices in enumerate(per_commit):
        for index in indices:
            path = work / "app" / "ui" / "media" / f"asset_{index:03d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_random(f"repo/{index}", max(1, total // pads)))
        if number == len(per_commit) - 1:
            for name, content in files.items():
                (work / name).parent.mkdir(parents=True, exist_ok=True)
                (work / name).write_bytes(content)
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", f"commit {number + 1}", cwd=work)
    git("tag", data.REF, cwd=work)
    built.repo_dir = built.root / "git"
    bare = built.repo_dir / REPO_PATH
    bare.parent.mkdir(parents=True)
    git("clone", "-q", "--bare", str(work), str(bare), cwd=built.root)
    git("repack", "-a", "-d", "-q", cwd=bare)
    built.pack_bytes = sum(path.stat().st_size
                           for path in (bare / "objects" / "pack").glob("*.pack"))
    shutil.rmtree(work)


def build(root: Path, scale: float, urls: Urls) -> Built:
    built = Built(root=root, scale=scale)
    build_wheels(built)
    build_models(built, urls)
    build_clip(built, urls)
    build_repo(built, urls)
    return built
