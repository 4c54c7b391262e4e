"""
red-app-models (redbox.app.models), issue 10: a downloader double like upstream's (0-byte files,
exit 0), a failed app install named as the cause instead of "sha256 mismatch", per-file
progress in the status JSON, and the fork's ``Path(__file__)`` style of models_data.py. The
app's downloader is no longer the default (Red's fetcher is): the tests about it name it
(``--downloader app``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.fixtures.models_repo import TOOL, Assets, blob, make_repo, run_tool, sha


@pytest.fixture
def assets():
    server = Assets()
    yield server
    server.close()


# Upstream's downloader after an integrity failure: it truncates the file, fails on the
# consumed stream, and still exits 0.
ZERO_BYTE_DOWNLOADER = '''\
import hashlib, os, urllib.request
from app.processors import models_data

for m in models_data.models_list:
    os.makedirs(os.path.dirname(m["local_path"]), exist_ok=True)
    with urllib.request.urlopen(m["url"], timeout=5) as resp:
        data = resp.read()
    if hashlib.sha256(data).hexdigest() != m["hash"]:
        open(m["local_path"], "wb").close()
        print("Integrity check failed for", m["model_name"])
        continue
    with open(m["local_path"], "wb") as out:
        out.write(data)
'''


def test_a_downloader_leaving_zero_byte_files_and_exiting_0_is_not_trusted(assets, tmp_path):
    repo = make_repo(tmp_path, assets, {"good": "good", "bad": "corrupt"})
    assets.plan["/assets/v1.0.0/bad.onnx"] = ["corrupt"]
    (repo / "download_models.py").write_text(ZERO_BYTE_DOWNLOADER)
    rc, state, _ = run_tool(repo, tmp_path / "s.json", "--attempts", "2", "--downloader", "app")
    assert rc == 3 and state["downloads_run"] == 2
    assert [run["exit_code"] for run in state["download_runs"]] == [0, 0]
    assert {f["model"]: f["reason"] for f in state["failed"]} == {"bad": "empty (0 bytes)"}
    assert (repo / "model_assets" / "bad.onnx").stat().st_size == 0


def test_after_a_failed_install_the_models_step_names_it(assets, tmp_path):
    # The app's downloader imports the app's packages; Red's fetcher needs none (below).
    repo = make_repo(tmp_path, assets, {"good": "good"})
    pip_state = tmp_path / "pip.json"
    requirements = str(repo / "requirements_cu124.txt")
    app = ("--downloader", "app", "--pip-state", str(pip_state))
    # A failure of another checkout's install says nothing about this one.
    pip_state.write_text(json.dumps({"result": "failed", "requirements": "/w/req.txt"}))
    rc, state, _ = run_tool(repo, tmp_path / "other.json", *app)
    assert rc == 0 and state["downloads_run"] == 1
    for model in repo.glob("model_assets/*.onnx"):
        model.unlink()
    assets.hits.clear()
    pip_state.write_text(json.dumps({"result": "failed", "requirements": requirements,
                                     "cause": "index pypi.nvidia.com: read timed out x3"}))
    rc, state, err = run_tool(repo, tmp_path / "s.json", *app)
    assert rc == 3 and state["downloads_run"] == 0 and not assets.hits
    assert state["reason"] == (
        "not downloaded: the app's packages are not installed (the last install of "
        f"{requirements} failed: index pypi.nvidia.com: read timed out x3; `red-app-pip "
        "--retry-now` tries it now); the models are fetched by the first converge after the "
        "install")
    assert "sha256" not in err
    # Red's fetcher does not need the app's packages: it fetches anyway.
    rc, state, _ = run_tool(repo, tmp_path / "red.json", "--pip-state", str(pip_state))
    assert rc == 0 and state["verified"] is True and state["downloads_run"] == 1
    for model in repo.glob("model_assets/*.onnx"):
        model.unlink()
    # Once the install succeeded, the download runs.
    pip_state.write_text(json.dumps({"result": "installed"}))
    rc, state, _ = run_tool(repo, tmp_path / "s.json", *app)
    assert rc == 0 and state["verified"] is True


def test_per_file_progress_goes_to_the_status_json_and_the_log(assets, tmp_path):
    repo = make_repo(tmp_path, assets, {"a": "good", "b": "good", "lp_c": "good"})
    status = tmp_path / "status.json"
    rc, _, err = run_tool(repo, tmp_path / "s.json", "--status", str(status),
                          "--downloader", "app")
    assert rc == 0
    assert "red-app-models: 3 of 3 model files present; writing " in err
    assert "bytes (100%)" in err
    record = json.loads(status.read_text())
    assert (record["step"], record["state"], record["percent"]) == ("models", "done", 100)
    assert record["detail"] == "3 of 3 model files verified"


def test_red_fetchers_progress_goes_to_the_status_json_and_the_log(assets, tmp_path):
    repo = make_repo(tmp_path, assets, {"a": "good", "b": "good", "lp_c": "good"},
                     size=400_000)
    assets.rate = 400_000  # a second a file: the progress has something to show
    status = tmp_path / "status.json"
    rc, _, err = run_tool(repo, tmp_path / "s.json", "--status", str(status), "--streams", "2")
    assert rc == 0
    assert "red-app-models: 3 of 3 model files missing or wrong; fetching 3 with 2 stream(s) " \
        "(round 1/3)" in err
    assert re.search(r"red-app-models: 0 of 3 model files verified; [0-9.]+ (bytes|KB|MB) "
                     r"fetched; fetching a\.onnx \d+%, b\.onnx \d+% \(\d+%\)", err), err
    assert "red-app-models: model_assets/a.onnx: fetched and verified (400.0 KB)" in err
    assert "red-app-models: 3 of 3 model files verified; 1.2 MB fetched (100%)" in err
    record = json.loads(status.read_text())
    assert (record["step"], record["state"], record["percent"]) == ("models", "done", 100)
    assert record["detail"] == "3 of 3 model files verified"


def test_the_forks_path_file_style_models_data(assets, tmp_path):
    repo = make_repo(tmp_path, assets, {"a": "good"})
    data = blob("a")
    (repo / "app" / "processors" / "models_data.py").write_text(textwrap.dedent(f'''\
        from pathlib import Path

        # VisoMaster-Fusion: paths from the module's own location.
        BASE_DIR = Path(__file__).resolve().parent.parent.parent
        models_dir = str(BASE_DIR / "model_assets")
        assets_repo = "{assets.base}/assets"

        models_list = [
            {{
                "model_name": "a",
                "local_path": f"{{models_dir}}/a.onnx",
                "hash": "{sha(data)}",
                "url": f"{{assets_repo}}/v1.0.0/a.onnx",
            }},
        ]
        '''))
    rc, state, _ = run_tool(repo, tmp_path / "s.json")
    assert rc == 0 and state["checked"] == 1
    assert Path(repo / "model_assets" / "a.onnx").read_bytes() == data


HANGING_DOWNLOADER = "import time\ntime.sleep(120)\n"


@pytest.mark.parametrize("downloader", ["app", "red"])
def test_the_deadline_bounds_all_the_runs_together(assets, tmp_path, downloader):
    # A blackholed mirror: each run hangs; three runs of 60 s would be three minutes. Red's
    # fetcher: the request is taken and never answered; each read waits for the time left,
    # not its whole read timeout.
    repo = make_repo(tmp_path, assets, {"a": "good"})
    (repo / "download_models.py").write_text(HANGING_DOWNLOADER)
    assets.plan["/assets/v1.0.0/a.onnx"] = ["hang"]
    assets.hang_seconds = 10
    started = time.monotonic()
    rc, state, _ = run_tool(repo, tmp_path / "s.json", "--attempts", "3", "--timeout", "60",
                            "--deadline", "3", "--downloader", downloader,
                            "--read-timeout", "60")
    assert time.monotonic() - started < (20 if downloader == "app" else 8)
    assert rc == 3 and state["downloads_run"] == 1 and state["deadline_reached"] is True
    assert state["reason"] == ("1 of 1 model files not verified: the deadline ran out after "
                               "1 download run(s)")
    if downloader == "app":
        assert "killed after 3 s" in state["download_runs"][0]["output_tail"][-1]
    else:
        assert not list((repo / "model_assets").iterdir())  # no empty partial left about


def test_a_failed_download_backs_off_until_retried_or_the_list_changes(assets, tmp_path):
    repo = make_repo(tmp_path, assets, {"a": "good", "b": "good"})
    assets.plan["/assets/v1.0.0/b.onnx"] = ["404"]
    status = tmp_path / "s.json"
    rc, state, _ = run_tool(repo, status, "--backoff", "600")
    assert rc == 3 and state["failures"] == 1 and state["in_backoff"] is True
    assert state["cause"].startswith("1 of 2 model files failed verification")
    # The next boot, the mirror fixed or not: no download inside the backoff, one line why.
    assets.plan["/assets/v1.0.0/b.onnx"] = ["good"]
    assets.hits.clear()
    rc, state, _ = run_tool(repo, status, "--backoff", "600")
    assert rc == 3 and state["downloads_run"] == 0 and not assets.hits
    assert state["reason"] == (
        f"not downloaded: the download failed 1 time(s) ({state['cause']}); next try after "
        f"{state['next_try_after']}; `red-app-models --retry-now` tries now")
    assert state["in_backoff"] is True and state["failures"] == 1
    # A check (the converge's fact: no download allowed) keeps the record.
    rc, state, _ = run_tool(repo, status, "--attempts", "0")
    assert state["in_backoff"] is True and state["failures"] == 1
    # The documented command: the same download, now.
    rc, state, _ = run_tool_retry(status)
    assert rc == 0 and state["verified"] is True and state["failures"] == 0
    assert state["in_backoff"] is False


def test_a_changed_model_list_is_not_held_by_an_old_failure(assets, tmp_path):
    repo = make_repo(tmp_path, assets, {"a": "good"})
    assets.plan["/assets/v1.0.0/a.onnx"] = ["404"]
    status = tmp_path / "s.json"
    rc, state, _ = run_tool(repo, status, "--backoff", "600")
    assert rc == 3 and state["in_backoff"] is True
    assets.plan["/assets/v1.0.0/a.onnx"] = ["good"]
    models_data = repo / "app" / "processors" / "models_data.py"
    models_data.write_text(models_data.read_text() + "\n# the next release\n")
    rc, state, _ = run_tool(repo, status, "--backoff", "600")
    assert rc == 0 and state["downloads_run"] == 1 and state["verified"] is True


def run_tool_retry(state: Path) -> tuple[int, dict, str]:
    proc = subprocess.run([sys.executable, str(TOOL), "--retry-now", "--state", str(state)],
                          capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, json.loads(state.read_text()), proc.stderr
