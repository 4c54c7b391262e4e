"""
The status page (files/portal/.../www) in Chromium, below the image: the page's own files and a
status.json the real status writer made (with red-doctor's report made by the real doctor, on a
stand-in GPU and app venv probe), served from a loopback HTTP server. The GPU card, its banner
and the escaping of what nvidia-smi printed; screenshots in tests/artifacts/
(status-gpu-card.png: an RTX 5090 on driver 575, refused; status-gpu-card-4090.png: runs).
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
from types import SimpleNamespace

import pytest

from redbox.app import checks, doctor, gpu
from redbox.portal import status
from tests.conftest import ROOT
from tests.screens import CHROMIUM, CHROMIUM_ARGS

WWW = ROOT / "files/portal/opt/red/portal/www"
ARTIFACTS = ROOT / "tests" / "artifacts"
SERVICES = ("desktop", "jupyter", "portal", "sshd", "status")
SUPERVISORCTL = "".join(f"{name:<33}RUNNING   pid {100 + n}, uptime 0:12:0{n}\n"
                        for n, name in enumerate(SERVICES)) + \
    "visomaster                       STOPPED   Not started\n"
RTX5090_575 = gpu.Gpu("NVIDIA GeForce RTX 5090", "12.0", "575.57.08", "12.9")
RTX4090 = gpu.Gpu("NVIDIA GeForce RTX 4090", "8.9", "550.144.03", "12.4")
# What the app venv's probe (checks.PROBE) reports for upstream's build with Red's override.
UPSTREAM_PROBE = {
    "python": "3.10.13",
    "torch": {"version": "2.4.1+cu124", "cuda": "12.4", "matmul": 1.0,
              "archs": ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]},
    "onnxruntime": {"version": "1.22.0", "cuda": "12", "iobinding": "ok",
                    "available": ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                  "CPUExecutionProvider"],
                    "loaded": ["CUDAExecutionProvider", "CPUExecutionProvider"]},
}


def doctor_report(monkeypatch, tmp_path, card: gpu.Gpu | None, probe: dict | None) -> dict:
    """red-doctor's report for this GPU and app venv probe (None: no app venv)."""
    monkeypatch.delenv("VISOMASTER_FLAVOR", raising=False)
    monkeypatch.setattr(gpu, "probe", lambda timeout: (card, "" if card else
                                                       "nvidia-smi not found"))
    if probe is not None:
        monkeypatch.setattr(checks, "probe", lambda venv, card, timeout: (probe, ""))
    return doctor.report(venv=str(tmp_path / "venv"))


def status_json(tmp_path, report: dict | None, installed: bool = False) -> dict:
    """What red-status writes for a box whose services run, with this doctor's report (and the
    app checked out, installed and its models verified)."""
    conf = tmp_path / "conf.d"
    conf.mkdir(exist_ok=True)
    for name in (*SERVICES, "visomaster"):
        service = name != "visomaster"
        (conf / f"{name}.conf").write_text(
            f"[program:{name}]\ncommand=/bin/true\nautostart={str(service).lower()}\n"
            f"autorestart={'true' if service else 'unexpected'}\n")
    (tmp_path / "logs").mkdir(exist_ok=True)
    (tmp_path / "prov").mkdir(exist_ok=True)
    (tmp_path / "prov" / "completed").write_text(json.dumps(
        {"seconds": 41.2, "changes": 3, "finished": "2025-06-01 12:00:41"}))
    (tmp_path / "prov" / "onstart.json").write_text(json.dumps({"status": "no-script"}))
    if installed:
        (tmp_path / "app" / ".git").mkdir(parents=True)
        (tmp_path / "venv").mkdir()
        (tmp_path / "venv" / ".red-visomaster.stamp").write_text("x\n")
        (tmp_path / "models-state.json").write_text(json.dumps({"verified": True,
                                                                 "checked": 31}))
    if report is not None:
        (tmp_path / "doctor.json").write_text(json.dumps(report))
    args = SimpleNamespace(
        logs_dir=str(tmp_path / "logs"), conf_dir=str(conf),
        provisioning_dir=str(tmp_path / "prov"),
        models_state=str(tmp_path / "models-state.json"), app_dir=str(tmp_path / "app"),
        app_venv=str(tmp_path / "venv"), secrets_dir=str(tmp_path / "secrets"),
        jupyter_path="/jupyter/", interval=2, settings_file=str(tmp_path / "settings.json"),
        doctor_report=str(tmp_path / "doctor.json"))
    return status.snapshot(args, {"VAST_CONTAINERLABEL": "C.1234567"}, SUPERVISORCTL, [])


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The page's files and /red/status.json on a loopback HTTP server: (base URL, red dir)."""
    root = tmp_path_factory.mktemp("site")
    for page in WWW.iterdir():
        (root / page.name).symlink_to(page)
    (root / "red").mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", root / "red"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def show(browser, site, found: dict, width: int = 1280):
    """A page showing this status.json (once its GPU card is drawn)."""
    base, red = site
    (red / "status.json").write_text(json.dumps(found))
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(base)
    page.wait_for_selector('tr[data-program="sshd"]')
    return page


def test_a_gpu_no_flavor_runs_on_gets_a_banner_with_why_and_what_to_do(
        browser, site, tmp_path, monkeypatch):
    report = doctor_report(monkeypatch, tmp_path, RTX5090_575, None)
    assert report["flavor"]["chosen"] is None
    page = show(browser, site, status_json(tmp_path, report))
    try:
        banner = page.locator("#gpu-banner")
        assert banner.is_visible() and banner.get_attribute("class") == "banner bad"
        assert banner.text_content() == report["flavor"]["warning"]
        assert "Rent a host whose driver runs CUDA 13 (on Vast: cuda_max_good >= 13.0)" in \
            banner.text_content()
        facts = dict(zip(page.locator("#gpu dt").all_text_contents(),
                         page.locator("#gpu dd").all_text_contents(), strict=True))
        assert facts["GPU"] == "NVIDIA GeForce RTX 5090"
        assert facts["Compute capability"] == "12.0"
        assert facts["Driver"] == "575.57.08"
        assert facts["CUDA"].startswith("up to 12.9")
        assert facts["Flavor"].startswith("auto → none (nothing installed)no flavor runs on ")
        check = page.locator('#checks li[data-check="app venv"]')
        assert check.locator(".state").text_content() == "fail"
        assert "the app's install has not run" in check.text_content()
        # The page's first problem is the doctor's, named as its (the card says it in full).
        assert page.text_content("#banner") == (
            "red-doctor: VisoMaster cannot run on this box: the GPU card below says why and "
            "what to do (and 1 more below)")
        assert not page.is_visible("#doctor-hint")
        assert "no flavor runs on this GPU (red-doctor): nothing is installed" in \
            page.text_content('#steps li[data-step="VisoMaster packages"]')
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "status-gpu-card.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.screenshot(path=str(ARTIFACTS / "status-gpu-card-phone.png"), full_page=True)
    finally:
        page.close()


def test_a_gpu_the_app_runs_on_shows_each_check_ok_and_no_banner(
        browser, site, tmp_path, monkeypatch):
    report = doctor_report(monkeypatch, tmp_path, RTX4090, UPSTREAM_PROBE)
    assert report["ok"], report["problems"]
    page = show(browser, site, status_json(tmp_path, report, installed=True))
    try:
        assert not page.is_visible("#gpu-banner")
        assert page.text_content("#banner") == "Every service is running."
        assert "auto → upstream" in page.text_content("#gpu")
        verdicts = dict(zip(page.locator("#checks li strong").all_text_contents(),
                            page.locator("#checks li .state").all_text_contents(), strict=True))
        assert verdicts == {check["name"]: "ok" for check in report["app"]}
        assert set(verdicts) >= {"python", "torch", "torch arch", "driver CUDA", "torch on GPU",
                                 "onnxruntime", "ort IO binding"}
        page.screenshot(path=str(ARTIFACTS / "status-gpu-card-4090.png"), full_page=True)
    finally:
        page.close()


def test_no_gpu_gets_the_doctors_line_and_no_report_a_hint(browser, site, tmp_path, monkeypatch):
    report = doctor_report(monkeypatch, tmp_path, None, None)
    page = show(browser, site, status_json(tmp_path, report))
    try:
        assert page.get_attribute("#gpu-banner", "class") == "banner waiting"
        assert page.text_content("#gpu-banner") == report["flavor"]["warning"]
        assert "VisoMaster needs an NVIDIA GPU" in page.text_content("#gpu-banner")
        assert page.locator("#gpu dd").first.text_content() == "none: nvidia-smi not found"
    finally:
        page.close()
    (tmp_path / "doctor.json").unlink()
    page = show(browser, site, status_json(tmp_path, None))
    try:
        assert page.is_visible("#doctor-hint") and not page.is_visible("#gpu-banner")
        assert page.locator("#gpu dt").count() == 0
    finally:
        page.close()


def test_what_nvidia_smi_printed_is_shown_as_text(browser, site, tmp_path, monkeypatch):
    hostile = '<img src=x onerror="window.pwned=1">'
    card = gpu.Gpu(hostile, "12.0", "575.57.08</td><b>", "12.9")
    report = doctor_report(monkeypatch, tmp_path, card, None)
    report["app"].append({"name": "<i>x</i>", "verdict": "ok\" onmouseover=\"window.pwned=2",
                          "reason": "<script>window.pwned=3</script>"})
    page = show(browser, site, status_json(tmp_path, report))
    try:
        assert page.locator("#gpu-section img, #gpu-section b, #gpu-section i, "
                            "#gpu-section script").count() == 0
        assert hostile in page.text_content("#gpu") and hostile in page.text_content(
            "#gpu-banner")
        assert page.locator("#checks li .state").last.get_attribute("class") == "state unknown"
        assert "<script>window.pwned=3</script>" in page.text_content("#checks")
        assert page.evaluate("window.pwned") is None
    finally:
        page.close()
