"""The status writer (redbox/status.py) on fixture files: programs, steps, problems, log tails."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from redbox.app import flavors
from redbox.app.gpu import Gpu
from redbox.portal import status

SUPERVISORCTL = """\
desktop                          RUNNING   pid 120, uptime 0:10:01
jupyter                          FATAL     Exited too quickly (process log may have details)
sshd                             RUNNING   pid 100, uptime 0:10:02
visomaster                       STOPPED   Not started
"""
CONF = """\
[program:{name}]
command=/bin/true
autostart={autostart}
autorestart={autorestart}
"""


def box(tmp_path, env=None, **markers):
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    conf = tmp_path / "conf.d"
    conf.mkdir(exist_ok=True)
    for name, autostart, autorestart in (("desktop", "true", "true"), ("jupyter", "true", "true"),
                                         ("sshd", "true", "true"),
                                         ("visomaster", "false", "unexpected")):
        (conf / f"{name}.conf").write_text(CONF.format(name=name, autostart=autostart,
                                                       autorestart=autorestart))
    prov = tmp_path / "prov"
    prov.mkdir(exist_ok=True)
    for name, data in markers.items():
        (prov / name.replace("_", "-").replace("-json", ".json")).write_text(json.dumps(data))
    (logs / "jupyter.log").write_text("starting\nOSError: [Errno 98] Address already in use\n")
    args = SimpleNamespace(
        logs_dir=str(logs), conf_dir=str(conf), provisioning_dir=str(prov),
        models_state=str(tmp_path / "models-state.json"), app_dir=str(tmp_path / "app"),
        app_venv=str(tmp_path / "venv"), secrets_dir=str(tmp_path / "secrets"),
        jupyter_path="/jupyter/", interval=2, output=str(tmp_path / "out"),
        settings_file=str(tmp_path / "settings.json"),
        doctor_report=str(tmp_path / "doctor.json"))
    return args, env or {}


RTX5090_575 = Gpu("NVIDIA GeForce RTX 5090", "12.0", "575.57.08", "12.9")
RTX4090 = Gpu("NVIDIA GeForce RTX 4090", "8.9", "550.144.03", "12.4")


def doctor_report(card: Gpu | None, app: list[tuple[str, str, str]]) -> dict:
    """A report as red-doctor writes it (redbox.app.doctor.report), for this GPU and checks."""
    choice = flavors.choose("auto", card, "upstream", "" if card else "nvidia-smi not found")
    checks = [{"name": name, "verdict": verdict, "reason": reason}
              for name, verdict, reason in app]
    found = [choice.warning] if choice.chosen is None or card is None else []
    found += [f"{check['name']}: {check['reason']}" for check in checks
              if check["verdict"] == "fail"]
    return {"gpu": card.as_json() if card else None, "gpu_problem": "",
            "flavor": choice.as_json(), "venv": "/opt/red/venv", "facts": None, "app": checks,
            "problems": found, "ok": not found}


REFUSED = doctor_report(RTX5090_575, [
    ("app venv", "fail", "no app venv at /opt/red/venv (the app's install has not run)")])
RUNS = doctor_report(RTX4090, [("torch", "ok", "torch 2.4.1+cu124 (CUDA 12.4)"),
                               ("torch on GPU", "ok", "a matmul on the GPU ran")])


def test_programs_and_a_failed_service_make_one_clear_message(tmp_path):
    args, env = box(tmp_path, completed={"seconds": 12.5, "changes": 3, "finished": "t"})
    result = status.snapshot(args, env, SUPERVISORCTL, [])
    states = {program["name"]: (program["state"], program["service"])
              for program in result["programs"]}
    assert states == {"desktop": ("RUNNING", True), "jupyter": ("FATAL", True),
                      "sshd": ("RUNNING", True), "visomaster": ("STOPPED", False)}
    assert not result["ready"]
    assert result["problems"][0].startswith("jupyter is FATAL: see ")
    assert "Address already in use" in result["problems"][0]
    assert result["provisioning"][0]["state"] == "done"


def test_the_doctors_report_is_in_the_status_and_its_problems_follow_the_others(tmp_path):
    args, env = box(tmp_path, completed={"seconds": 1})
    (tmp_path / "doctor.json").write_text(json.dumps(REFUSED))
    result = status.snapshot(args, env, SUPERVISORCTL, [])
    assert result["doctor"] == REFUSED
    assert result["doctor"]["flavor"]["chosen"] is None
    # The service first, then what red-doctor found, each line of it named as its.
    assert result["problems"][0].startswith("jupyter is FATAL: ")
    assert result["problems"][1:] == [f"red-doctor: {line}" for line in REFUSED["problems"]]
    assert result["problems"][1].startswith(
        "red-doctor: VisoMaster is NOT installed: no flavor runs on NVIDIA GeForce RTX 5090 ")
    assert result["problems"][2] == ("red-doctor: app venv: no app venv at /opt/red/venv (the "
                                     "app's install has not run)")
    # Nothing comes on this GPU: the app's steps say so instead of waiting for ever.
    steps = {step["name"]: (step["state"], step["detail"]) for step in result["provisioning"]}
    for name in ("VisoMaster checkout", "VisoMaster packages", "VisoMaster models"):
        assert steps[name] == ("skipped", "no flavor runs on this GPU (red-doctor): nothing is "
                                          "installed"), name
    # A report that says the app runs adds nothing.
    (tmp_path / "doctor.json").write_text(json.dumps(RUNS))
    result = status.snapshot(args, env, SUPERVISORCTL, [])
    assert result["doctor"]["gpu"]["name"] == "NVIDIA GeForce RTX 4090"
    assert not [line for line in result["problems"] if line.startswith("red-doctor")]
    assert {step["state"] for step in result["provisioning"][1:4]} == {"waiting"}


def test_no_report_or_one_that_does_not_read_is_null(tmp_path):
    args, env = box(tmp_path)
    report = tmp_path / "doctor.json"
    assert status.snapshot(args, env, SUPERVISORCTL, [])["doctor"] is None
    for text in ('{"gpu": null, "fla', json.dumps({"ok": False, "problems": ["x"]}),
                 json.dumps({**REFUSED, "problems": "one line"}),
                 json.dumps({**REFUSED, "problems": []}), "[]"):
        report.write_text(text)
        result = status.snapshot(args, env, SUPERVISORCTL, [])
        assert result["doctor"] is None, text
        assert not [line for line in result["problems"] if line.startswith("red-doctor")]


def test_doctor_problems_tell_the_launcher_what_to_say(tmp_path, capsys):
    report = tmp_path / "doctor.json"
    # No report: nothing to say (the launcher starts the app as before).
    assert status.main(["--doctor-problems", str(report)]) == 0
    assert capsys.readouterr().out == ""
    report.write_text(json.dumps(REFUSED))
    assert status.main(["--doctor-problems", str(report)]) == status.NOTHING_INSTALLED
    assert capsys.readouterr().out.splitlines() == REFUSED["problems"]
    broken = doctor_report(RTX4090, [("ort IO binding", "fail", "no data transfer registered")])
    report.write_text(json.dumps(broken))
    # Without FILE: --doctor-report's.
    assert status.main(["--doctor-report", str(report), "--doctor-problems"]) == 1
    assert capsys.readouterr().out == "ort IO binding: no data transfer registered\n"
    report.write_text(json.dumps(RUNS))
    assert status.main(["--doctor-problems", str(report)]) == 0
    assert capsys.readouterr().out == ""
    with pytest.raises(SystemExit):
        status.main(["--once"])
    assert "the following arguments are required: --output" in capsys.readouterr().err


def test_steps_follow_the_markers(tmp_path):
    args, env = box(tmp_path, env={"VISOMASTER_CHECKOUT": "false"},
                    failed={"reason": "pyinfra exited 1", "seconds": 3},
                    onstart_json={"status": "script-failed", "exit_code": 3,
                                  "source": "https://example.com/p.sh?<query hidden>",
                                  "pid": 1})
    (tmp_path / "models-state.json").write_text(json.dumps(
        {"verified": False, "checked": 4, "failed": [{"file": "a"}], "error": None}))
    steps = {step["name"]: step for step in status.provisioning_steps(
        args, env, status.converge_state(args.provisioning_dir))}
    assert steps["Converge (red-provision)"]["state"] == "failed"
    assert "pyinfra exited 1" in steps["Converge (red-provision)"]["detail"]
    assert steps["VisoMaster checkout"]["state"] == "skipped"
    assert steps["VisoMaster checkout"]["detail"] == "VISOMASTER_CHECKOUT=false"
    assert steps["VisoMaster packages"]["state"] == "skipped"
    assert steps["VisoMaster packages"]["detail"].startswith("no checkout in ")
    assert steps["VisoMaster models"]["state"] == "failed"
    assert steps["VisoMaster models"]["detail"] == "1 of 4 model files failed verification"
    script = steps["Provisioning script"]
    assert script["state"] == "failed" and "script-failed: exit 3" in script["detail"]
    found = status.problems([], list(steps.values()))
    assert found[0].startswith("Converge (red-provision) failed: FAILED: pyinfra exited 1")


def test_the_apps_switches_follow_the_registrys_rule(tmp_path):
    # --data on the last converge (the settings file) wins over the env; a bad env value
    # falls back to the default (on), as the converge itself does.
    args, env = box(tmp_path, env={"VISOMASTER_DOWNLOAD_MODELS": "true",
                                   "VISOMASTER_INSTALL_REQUIREMENTS": "nope"})
    (tmp_path / "settings.json").write_text(json.dumps({
        "values": {"visomaster_download_models": False}, "cli": ["visomaster_download_models"]}))
    os.makedirs(tmp_path / "app" / ".git")
    steps = {step["name"]: step for step in status.provisioning_steps(
        args, env, status.converge_state(args.provisioning_dir))}
    assert steps["VisoMaster models"]["state"] == "skipped"
    assert steps["VisoMaster models"]["detail"] == "--data visomaster_download_models=false"
    assert steps["VisoMaster packages"]["state"] == "waiting"


def test_without_a_checkout_app_steps_are_skipped_even_while_a_converge_runs(tmp_path):
    args, env = box(tmp_path, env={"VISOMASTER_CHECKOUT": "false"})
    running = {"state": "running", "marker": {"started": "s", "by": "red-onstart (app)"}}
    steps = {step["name"]: step["state"] for step in
             status.provisioning_steps(args, env, running)}
    assert steps["VisoMaster packages"] == steps["VisoMaster models"] == "skipped"


def test_a_converge_whose_lock_nobody_holds_is_interrupted(tmp_path):
    args, _ = box(tmp_path, in_progress={"pid": 999999, "started": "s", "by": "x"})
    assert status.converge_state(args.provisioning_dir)["state"] == "interrupted"


def test_done_steps_and_vast_jupyter_mode(tmp_path):
    args, env = box(tmp_path, completed={"seconds": 1}, onstart_json={"status": "ok",
                                                                       "seconds": 2})
    os.makedirs(tmp_path / "app" / ".git")
    os.makedirs(tmp_path / "venv")
    (tmp_path / "venv" / ".red-visomaster.stamp").write_text("x\n")
    (tmp_path / "models-state.json").write_text(json.dumps({"verified": True, "checked": 9}))
    steps = status.provisioning_steps(args, env, status.converge_state(args.provisioning_dir))
    assert [step["state"] for step in steps] == ["done"] * 5
    launch = tmp_path / ".launch"
    launch.write_text("jupyter\n")
    link = status.jupyter_link(args, {"VAST_TCP_PORT_8080": "41234"}, str(launch))
    assert link == {"vast": True, "port": 41234, "path": "/"}
    assert status.jupyter_link(args, {}, str(tmp_path / "none"))["path"] == "/jupyter/"


def test_generated_secrets_are_named_from_the_startup_log(tmp_path):
    args, _ = box(tmp_path)
    secrets = tmp_path / "secrets"
    (secrets).mkdir()
    (secrets / "portal_token").write_text("x")
    (tmp_path / "logs" / "startup.log").write_text(
        f"t portal: OPEN_BUTTON_TOKEN unset: the front door uses the generated token kept in "
        f"{secrets}/portal_token (root-only; read it there)\n")
    found = {item["name"]: item for item in status.generated_secrets(args.logs_dir, str(secrets))}
    assert found["portal_token"]["generated"] and found["portal_token"]["exists"]
    assert not found["vnc_password"]["generated"] and not found["vnc_password"]["exists"]


def test_log_tails_are_rewritten_only_when_the_log_changed(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "sshd.log").write_text("".join(f"line {n}\n" for n in range(500)))
    (logs / "bad name.log").write_text("x")
    out = tmp_path / "out"
    seen: dict = {}
    assert status.write_log_tails(str(logs), str(out), seen) == ["sshd"]
    tail = (out / "logs" / "sshd.txt").read_text().splitlines()
    assert len(tail) == status.LOG_TAIL_LINES and tail[-1] == "line 499"
    (out / "logs" / "sshd.txt").write_text("kept")
    status.write_log_tails(str(logs), str(out), seen)
    assert (out / "logs" / "sshd.txt").read_text() == "kept"


def test_main_once_writes_status_json(tmp_path, monkeypatch):
    args, _ = box(tmp_path)
    monkeypatch.setattr(status, "supervisor_status", lambda socket: SUPERVISORCTL)
    assert status.main(["--output", args.output, "--logs-dir", args.logs_dir, "--conf-dir",
                        args.conf_dir, "--provisioning-dir", args.provisioning_dir,
                        "--once"]) == 0
    written = json.loads((tmp_path / "out" / "status.json").read_text())
    assert {program["name"] for program in written["programs"]} >= {"sshd", "jupyter"}
    assert oct((tmp_path / "out" / "status.json").stat().st_mode & 0o777) == "0o644"


def test_supervisor_states_are_supervisorctls(tmp_path):
    # The oracle: a real supervisord, asked by supervisorctl and by the writer's own XML-RPC.
    sock = tmp_path / "supervisor.sock"
    (tmp_path / "supervisord.conf").write_text(f"""\
[unix_http_server]
file={sock}
[supervisord]
logfile={tmp_path}/supervisord.log
pidfile={tmp_path}/supervisord.pid
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{sock}
[program:sleeper]
command=sleep 600
startsecs=0
[program:quitter]
command=false
startsecs=1
startretries=0
[program:idle]
command=sleep 600
autostart=false
""")
    bin_dir = Path(sys.executable).parent
    subprocess.run([bin_dir / "supervisord", "-c", tmp_path / "supervisord.conf"], check=True)
    try:
        deadline = time.monotonic() + 20
        ours = {}
        while time.monotonic() < deadline:
            ours = status.parse_supervisorctl(status.supervisor_status(str(sock)))
            if ours.get("quitter", {}).get("state") == "FATAL" and \
                    ours.get("sleeper", {}).get("state") == "RUNNING":
                break
            time.sleep(0.2)
        theirs = status.parse_supervisorctl(subprocess.run(
            [bin_dir / "supervisorctl", "-c", tmp_path / "supervisord.conf", "status"],
            capture_output=True, text=True, check=False).stdout)
        assert {name: state["state"] for name, state in ours.items()} == \
            {name: state["state"] for name, state in theirs.items()} == \
            {"sleeper": "RUNNING", "quitter": "FATAL", "idle": "STOPPED"}
        for name in ("quitter", "idle"):
            assert ours[name]["info"] == theirs[name]["info"]
        assert ours["sleeper"]["info"].startswith("pid ")
        assert ours["sleeper"]["info"].split(",")[0] == theirs["sleeper"]["info"].split(",")[0]
    finally:
        pid = int((tmp_path / "supervisord.pid").read_text())
        os.kill(pid, signal.SIGTERM)
    # No supervisord: one line saying so, no program (the page shows them as unknown).
    time.sleep(0.5)
    answer = status.supervisor_status(str(sock), timeout=2)
    assert "supervisord does not answer" in answer and status.parse_supervisorctl(answer) == {}


def test_without_a_gpu_the_doctors_problems_stay_in_its_card(tmp_path):
    args, env = box(tmp_path, completed={"seconds": 1})
    no_gpu = {**RUNS, "gpu": None, "ok": False,
              "problems": ["nvidia-smi is not installed: no NVIDIA driver here: VisoMaster "
                           "needs an NVIDIA GPU to open its window"]}
    (tmp_path / "doctor.json").write_text(json.dumps(no_gpu))
    result = status.snapshot(args, env, SUPERVISORCTL, [])
    assert result["doctor"]["problems"] == no_gpu["problems"]
    assert not [line for line in result["problems"] if line.startswith("red-doctor")]
