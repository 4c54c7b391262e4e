"""
Loopback stand-ins for the package indexes the two VisoMaster flavors install from (stdlib only).

The requirement files in ``tests/fixtures/flavors/`` are verbatim copies of the real ones (see
``SOURCES.md`` there). ``stand-ins.json`` lists, for every distribution those files reach, its
real name, version, Requires-Python and Requires-Dist (extras only where the graph asks for them)
and the indexes it really lives on. :func:`build` writes each as a tiny ``py3-none-any`` wheel
(one module, nothing of the real code) into one flat directory per index; :func:`serve` puts each
directory behind its own threaded PEP 503 server on 127.0.0.1 (with ``data-requires-python`` and
PEP 658 metadata, as PyPI has), so a real resolver (uv, pip) sees the real conflicts:

    with serve(build(tmp_path)) as urls:
        text = localize(FUSION_REQUIREMENTS.read_text(), urls)   # real index URLs -> stand-ins
        ... uv pip compile --index-url urls["pypi"] --extra-index-url urls["pytorch-cu130"] ...

Index names follow the real indexes (``REAL_INDEX_URLS``).
"""

from __future__ import annotations

import base64
import hashlib
import html
import http.server
import json
import re
import threading
import urllib.parse
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

FLAVORS = Path(__file__).resolve().parent / "fixtures" / "flavors"
UPSTREAM_REQUIREMENTS = FLAVORS / "upstream" / "requirements_cu124.txt"
FUSION_REQUIREMENTS = FLAVORS / "fusion" / "requirements_cu13.txt"
FUSION_PYPROJECT = FLAVORS / "fusion" / "pyproject.toml"
STAND_INS = FLAVORS / "stand-ins.json"

PYPI = "pypi"
PYTORCH_CU124 = "pytorch-cu124"
PYTORCH_CU130 = "pytorch-cu130"
NVIDIA = "nvidia"
ORT_CUDA13_NIGHTLY = "ort-cuda-13-nightly"
INDEX_NAMES = (PYPI, PYTORCH_CU124, PYTORCH_CU130, NVIDIA, ORT_CUDA13_NIGHTLY)

REAL_INDEX_URLS = {
    PYPI: "https://pypi.org/simple",
    PYTORCH_CU124: "https://download.pytorch.org/whl/cu124",
    PYTORCH_CU130: "https://download.pytorch.org/whl/cu130",
    NVIDIA: "https://pypi.nvidia.com",
    ORT_CUDA13_NIGHTLY: "https://aiinfra.pkgs.visualstudio.com/PublicPackages/_packaging/"
                        "ort-cuda-13-nightly/pypi/simple/",
}

_EPOCH = (2020, 1, 1, 0, 0, 0)  # fixed zip timestamps: the same wheel bytes on every build


def normalize(name: str) -> str:
    """PEP 503 project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Dist:
    name: str
    version: str
    requires_python: str | None
    requires_dist: tuple[str, ...]
    provides_extra: tuple[str, ...]
    indexes: tuple[str, ...]
    source: str

    @property
    def project(self) -> str:
        return normalize(self.name)

    @property
    def stem(self) -> str:
        """The wheel file name's ``{name}-{version}`` part (name escaped as the spec says)."""
        return f"{re.sub(r'[-_.]+', '_', self.name).lower()}-{self.version}"

    @property
    def filename(self) -> str:
        return f"{self.stem}-py3-none-any.whl"

    def metadata(self) -> str:
        lines = ["Metadata-Version: 2.1", f"Name: {self.name}", f"Version: {self.version}",
                 "Summary: stand-in for the tests (the real name, version and requirements; "
                 "none of the real code)"]
        if self.requires_python:
            lines.append(f"Requires-Python: {self.requires_python}")
        lines += [f"Provides-Extra: {extra}" for extra in self.provides_extra]
        lines += [f"Requires-Dist: {requirement}" for requirement in self.requires_dist]
        return "\n".join(lines) + "\n"


def distributions(path: Path = STAND_INS) -> list[Dist]:
    """The stand-ins listed in ``stand-ins.json``."""
    return [Dist(name=row["name"], version=row["version"],
                 requires_python=row["requires_python"],
                 requires_dist=tuple(row["requires_dist"]),
                 provides_extra=tuple(row["provides_extra"]),
                 indexes=tuple(row["indexes"]), source=row["source"])
            for row in json.loads(path.read_text(encoding="utf-8"))["distributions"]]


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def write_wheel(directory: Path, dist: Dist) -> Path:
    """Write ``dist`` as a pure-Python wheel with one module; returns its path."""
    module = dist.stem.split("-")[0]
    info = f"{dist.stem}.dist-info"
    files = {
        f"{module}/__init__.py": f"STAND_IN = {dist.name!r}\nVERSION = {dist.version!r}\n",
        f"{info}/METADATA": dist.metadata(),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: red-tests\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    encoded = {member: text.encode() for member, text in files.items()}
    record = [_record_line(member, data) for member, data in encoded.items()]
    record.append(f"{info}/RECORD,,")
    encoded[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / dist.filename
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in encoded.items():
            archive.writestr(zipfile.ZipInfo(member, date_time=_EPOCH), data)
    # PEP 658: the index serves the METADATA file beside the wheel.
    Path(f"{path}.metadata").write_bytes(encoded[f"{info}/METADATA"])
    return path


def build(root: Path, dists: Iterable[Dist] | None = None) -> dict[str, Path]:
    """One flat wheel directory per index under ``root``; returns index name -> directory."""
    root = Path(root)
    indexes = {name: root / name for name in INDEX_NAMES}
    for directory in indexes.values():
        directory.mkdir(parents=True, exist_ok=True)
    for dist in distributions() if dists is None else dists:
        for index in dist.indexes:
            write_wheel(indexes[index], dist)
    return indexes


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_requires_python(wheel: Path) -> str | None:
    text = Path(f"{wheel}.metadata").read_text(encoding="utf-8")
    match = re.search(r"^Requires-Python: (.+)$", text, re.MULTILINE)
    return match.group(1) if match else None


class _Index:
    """The PEP 503 pages of one wheel directory, computed once."""

    def __init__(self, name: str, directory: Path):
        self.name = name
        self.directory = directory
        self.projects: dict[str, list[str]] = {}
        for wheel in sorted(directory.glob("*.whl")):
            project = normalize(wheel.name.split("-")[0])
            self.projects.setdefault(project, []).append(self._anchor(wheel))

    @staticmethod
    def _anchor(wheel: Path) -> str:
        href = f"/files/{urllib.parse.quote(wheel.name)}#sha256={_sha256(wheel)}"
        metadata = f"sha256={_sha256(Path(f'{wheel}.metadata'))}"
        attributes = [f'href="{html.escape(href)}"',
                      f'data-dist-info-metadata="{metadata}"', f'data-core-metadata="{metadata}"']
        requires_python = _read_requires_python(wheel)
        if requires_python:
            attributes.append(f'data-requires-python="{html.escape(requires_python)}"')
        return f"<a {' '.join(attributes)}>{html.escape(wheel.name)}</a>"

    def page(self, project: str | None) -> bytes | None:
        if project is None:
            links = [f'<a href="/simple/{name}/">{name}</a>' for name in sorted(self.projects)]
        elif project in self.projects:
            links = self.projects[project]
        else:
            return None
        return ("<!DOCTYPE html>\n<html><body>\n" + "<br/>\n".join(links)
                + "\n</body></html>\n").encode()


def _handler(index: _Index, requests: list[tuple[str, str]], lock: threading.Lock):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args):
            pass

        def _send(self, code: int, body: bytes, content_type: str, head: bool = False) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _answer(self, head: bool) -> None:
            path = urllib.parse.unquote(self.path.split("?")[0].split("#")[0])
            with lock:
                requests.append((index.name, path))
            parts = [part for part in path.split("/") if part]
            if parts and parts[0] == "simple" and len(parts) <= 2:
                body = index.page(normalize(parts[1]) if len(parts) == 2 else None)
                if body is not None:
                    self._send(200, body, "text/html", head)
                    return
            elif len(parts) == 2 and parts[0] == "files" and "/" not in parts[1]:
                target = index.directory / parts[1]
                if target.is_file():
                    self._send(200, target.read_bytes(), "application/octet-stream", head)
                    return
            self._send(404, b"not found", "text/plain", head)

        def do_GET(self):
            self._answer(head=False)

        def do_HEAD(self):
            self._answer(head=True)

    return Handler


class Served(dict):
    """Index name -> simple URL of the running stand-ins; ``stop()`` (or leaving ``with``) ends
    them. ``requests`` lists ``(index name, path)`` for every request they answered."""

    def __init__(self):
        super().__init__()
        self.requests: list[tuple[str, str]] = []
        self._servers: list[http.server.ThreadingHTTPServer] = []

    def stop(self) -> None:
        while self._servers:
            server = self._servers.pop()
            server.shutdown()
            server.server_close()

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def queried(self, index: str) -> list[str]:
        """The paths asked of one index."""
        return [path for name, path in list(self.requests) if name == index]


def serve(indexes: Mapping[str, Path]) -> Served:
    """Start one threaded loopback server (ephemeral port) per wheel directory."""
    served = Served()
    lock = threading.Lock()
    try:
        for name, directory in indexes.items():
            server = http.server.ThreadingHTTPServer(
                ("127.0.0.1", 0), _handler(_Index(name, Path(directory)), served.requests, lock))
            server.daemon_threads = True
            served._servers.append(server)
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                             name=f"index-{name}", daemon=True).start()
            served[name] = f"http://127.0.0.1:{server.server_address[1]}/simple"
    except BaseException:
        served.stop()
        raise
    return served


def localize(text: str, urls: Mapping[str, str]) -> str:
    """``text`` with each real index URL (``REAL_INDEX_URLS``) replaced by its stand-in's URL;
    a trailing slash in the text is kept."""
    for name, real in sorted(REAL_INDEX_URLS.items(), key=lambda item: -len(item[1])):
        if name in urls:
            text = text.replace(real.rstrip("/"), urls[name].rstrip("/"))
    return text


def fusion_extra_index_names(pyproject: Path = FUSION_PYPROJECT) -> list[str]:
    """The stand-in names of the ``extra-index-url`` list in Fusion's ``[tool.uv.pip]``, in
    order (read with a pattern: Python 3.10 has no tomllib)."""
    text = pyproject.read_text(encoding="utf-8")
    section = re.search(r"^\[tool\.uv\.pip\]\s*$(.*?)(?=^\[)", text, re.MULTILINE | re.DOTALL)
    if section is None:
        raise ValueError(f"{pyproject} has no [tool.uv.pip] section")
    listing = re.search(r"extra-index-url\s*=\s*\[(.*?)\]", section.group(1), re.DOTALL)
    if listing is None:
        raise ValueError(f"{pyproject}'s [tool.uv.pip] has no extra-index-url list")
    by_url = {url.rstrip("/"): name for name, url in REAL_INDEX_URLS.items()}
    names = []
    for url in re.findall(r'"([^"]+)"', listing.group(1)):
        if url.rstrip("/") not in by_url:
            raise ValueError(f"no stand-in for the index {url}")
        names.append(by_url[url.rstrip("/")])
    return names


def fusion_index_strategy(pyproject: Path = FUSION_PYPROJECT) -> str:
    """The ``index-strategy`` Fusion's ``[tool.uv.pip]`` sets."""
    match = re.search(r'^index-strategy\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"),
                      re.MULTILINE)
    if match is None:
        raise ValueError(f"{pyproject} sets no index-strategy")
    return match.group(1)
