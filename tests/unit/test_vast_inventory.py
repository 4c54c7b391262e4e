"""
Unit tests for the Vast.ai dynamic inventory (``inventories/vast.py``).

Offline and fast: instance lists come from JSON fixtures in ``tests/fixtures/vast``, the Vast
API is a loopback ``http.server`` thread, the host key policy is checked against a loopback
paramiko SSH server, and HOME always points at a temporary directory.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventories" / "vast.py"
FIXTURES = REPO / "tests" / "fixtures" / "vast"
GOOD_KEY = "good-key-0123"

DIRECT_ID, PROXY_ID, JUPYTER_PROXY_ID, JUPYTER_DIRECT_ID = 24681357, 24681358, 24681359, 24681360
RUNNING = [f"vast-{i}" for i in (DIRECT_ID, PROXY_ID, JUPYTER_PROXY_ID, JUPYTER_DIRECT_ID)]
NOT_RUNNING = ["vast-24681361", "vast-24681362", "vast-24681363"]  # stopped, loading, null


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


# -- loopback stand-in for the Vast API


class _FakeVastHandler(BaseHTTPRequestHandler):
    """
    ``/api/v0/instances/?owner=me`` answers the fixture to the right Bearer key, 401 otherwise;
    ``/malformed/...`` answers broken JSON, ``/error/...`` HTTP 500, ``/hang/...`` nothing.
    """

    server: _FakeVastServer

    def do_GET(self):
        url = urlsplit(self.path)
        self.server.seen.append(
            {"path": url.path, "query": parse_qs(url.query), **dict(self.headers.items())},
        )
        if url.path.startswith("/hang/"):
            # Hold the connection without a byte of answer until the test is over.
            self.server.release.wait(30)
            return
        if self.headers.get("Authorization") != f"Bearer {GOOD_KEY}":
            self._reply(401, b'{"success": false, "error": "invalid_user_key"}')
        elif url.path == "/malformed/instances/":
            self._reply(200, b'{"instances": [{"id": 1, "actual_status": ')
        elif url.path == "/error/instances/":
            self._reply(500, b"<html>Internal Server Error</html>")
        elif url.path == "/api/v0/instances/" and parse_qs(url.query) == {"owner": ["me"]}:
            self._reply(200, (FIXTURES / "instances.json").read_bytes())
        else:
            self._reply(404, b'{"error": "not found"}')

    def _reply(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass  # keep pytest's captured output for real failures


class _FakeVastServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _FakeVastHandler)
        self.seen: list[dict] = []
        self.release = threading.Event()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def fake_vast() -> Iterator[_FakeVastServer]:
    server = _FakeVastServer()
    # A short poll keeps teardown (shutdown) quick.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def _api_env(server: _FakeVastServer, path: str = "/api/v0", **extra: str) -> dict[str, str]:
    return {"VAST_API_URL": server.base + path, "VAST_API_KEY": GOOD_KEY, **extra}


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


def test_proxy_ssh_when_no_port_22_mapping(inv, instances, tmp_path):
    data = _hosts(inv, instances, tmp_path)[f"vast-{PROXY_ID}"]
    assert (data["ssh_hostname"], data["ssh_port"], data["vast_ssh_via"]) == (
        "ssh7.vast.ai",
        35859,
        "proxy",
    )


def test_jupyter_runtype_through_proxy_uses_ssh_port_plus_one(inv, instances, tmp_path):
    data = _hosts(inv, instances, tmp_path)[f"vast-{JUPYTER_PROXY_ID}"]
    assert data["vast_runtype"] == "jupyter"
    assert (data["ssh_hostname"], data["ssh_port"]) == ("ssh2.vast.ai", 20110 + 1)


def test_jupyter_direct_uses_the_mapping_without_offset(inv, instances, tmp_path):
    data = _hosts(inv, instances, tmp_path)[f"vast-{JUPYTER_DIRECT_ID}"]
    assert (data["ssh_hostname"], data["ssh_port"], data["vast_ssh_via"]) == (
        "203.0.113.80",
        43022,
        "direct",
    )


def test_unusable_port_mapping_falls_back_to_proxy(inv):
    instance = {
        "id": 7,
        "actual_status": "running",
        "image_runtype": "jupyter_proxy ssh_proxy",
        "public_ipaddr": "203.0.113.5",
        "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": ""}]},
        "ssh_host": "ssh9.vast.ai",
        "ssh_port": 5000,
    }
    assert inv.ssh_endpoint(instance) == ("ssh9.vast.ai", 5001, "proxy")


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
        "num_gpus": 2,
        "vast_runtype": "ssh",
        "vast_ssh_via": "proxy",
    }


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


def test_running_instance_without_ssh_endpoint_is_skipped_with_a_warning(inv, tmp_path):
    good = {"id": 1, "actual_status": "running", "ssh_host": "ssh1.vast.ai", "ssh_port": 100}
    broken = {"id": 2, "actual_status": "running", "ports": {}, "ssh_host": None}
    warnings: list[str] = []
    hosts = _hosts(inv, [broken, good], tmp_path, warn=warnings.append)
    assert list(hosts) == ["vast-1"]
    assert warnings == [
        "skipping instance 2: no SSH endpoint (no 22/tcp port mapping and no ssh_host/ssh_port)",
    ]
    with pytest.raises(inv.VastInventoryError, match=r"1 running, 1 matching\)$"):
        _hosts(inv, [broken], tmp_path, warn=warnings.append)


# -- offline source and its errors


@pytest.mark.parametrize(
    ("fixture", "message"),
    [
        ("malformed.json", r"^malformed JSON from .*malformed\.json: Unterminated string"),
        ("wrong_shape.json", r'^unexpected response shape from .*wrong_shape\.json: expected \{"'),
        ("absent.json", r"^cannot read VAST_INSTANCES_JSON file .*absent\.json: No such file"),
    ],
)
def test_offline_source_errors(inv, fixture, message):
    with pytest.raises(inv.VastInventoryError, match=message):
        inv.load_instances({"VAST_INSTANCES_JSON": str(FIXTURES / fixture)})


def test_offline_source_never_needs_a_key(inv, tmp_path):
    # No key anywhere under this HOME and a URL that cannot be reached: only the file is read.
    env = {
        "VAST_INSTANCES_JSON": str(FIXTURES / "instances.json"),
        "VAST_API_URL": "http://127.0.0.1:9",
    }
    assert len(inv.load_instances(env, home=tmp_path)) == 7


# -- the API over loopback HTTP


def test_api_request_carries_bearer_key_and_owner_me(inv, fake_vast, tmp_path):
    result = inv.load_instances(_api_env(fake_vast), home=tmp_path)
    assert [i["id"] for i in result][:2] == [DIRECT_ID, PROXY_ID]
    (request,) = fake_vast.seen
    assert request["path"] == "/api/v0/instances/"
    assert request["query"] == {"owner": ["me"]}
    assert request["Authorization"] == f"Bearer {GOOD_KEY}"


@pytest.mark.parametrize("source", ["env", "config_file", "xdg_config_file", "legacy_file"])
def test_api_key_sources_in_cli_order(inv, fake_vast, tmp_path, source):
    home = tmp_path / "home"
    env = _api_env(fake_vast)
    del env["VAST_API_KEY"]
    # A decoy in each lower-priority place proves the order, not just the presence.
    (home / ".config" / "vastai").mkdir(parents=True)
    (home / ".vast_api_key").write_text("decoy-legacy\n")
    if source == "env":
        env["VAST_API_KEY"] = GOOD_KEY
        (home / ".config" / "vastai" / "vast_api_key").write_text("decoy-config\n")
    elif source == "config_file":
        (home / ".config" / "vastai" / "vast_api_key").write_text(f"{GOOD_KEY}\n")
    elif source == "xdg_config_file":
        (tmp_path / "xdg" / "vastai").mkdir(parents=True)
        (tmp_path / "xdg" / "vastai" / "vast_api_key").write_text(f"  {GOOD_KEY}\n")
        (home / ".config" / "vastai" / "vast_api_key").write_text("decoy-config\n")
        env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    else:
        (home / ".config" / "vastai" / "vast_api_key").write_text("")  # empty: ignored
        (home / ".vast_api_key").write_text(GOOD_KEY)

    assert len(inv.load_instances(env, home=home)) == 7
    assert fake_vast.seen[0]["Authorization"] == f"Bearer {GOOD_KEY}"


def test_no_key_is_an_error_naming_where_it_looked(inv, fake_vast, tmp_path):
    env = _api_env(fake_vast)
    del env["VAST_API_KEY"]
    with pytest.raises(inv.VastInventoryError) as error:
        inv.load_instances(env, home=tmp_path)
    message = str(error.value)
    assert message.startswith("no Vast API key: set VAST_API_KEY")
    assert str(tmp_path / ".config" / "vastai" / "vast_api_key") in message
    assert str(tmp_path / ".vast_api_key") in message
    assert fake_vast.seen == []  # nothing was sent without a key


def test_wrong_key_is_a_401_error_that_does_not_echo_the_key(inv, fake_vast, tmp_path):
    env = _api_env(fake_vast, VAST_API_KEY="wrong-secret-key")
    with pytest.raises(inv.VastInventoryError) as error:
        inv.load_instances(env, home=tmp_path)
    assert str(error.value).startswith("Vast API rejected the API key (HTTP 401) at http://")
    assert "wrong-secret-key" not in str(error.value)
    assert fake_vast.seen[0]["Authorization"] == "Bearer wrong-secret-key"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/malformed", r"^malformed JSON from http://127\.0\.0\.1:\d+/malformed/instances/\?owner"),
        ("/error", r"^Vast API answered HTTP 500 Internal Server Error at http://"),
        ("/nowhere", r"^Vast API answered HTTP 404 Not Found at http://"),
    ],
)
def test_bad_api_answers_are_errors(inv, fake_vast, tmp_path, path, message):
    with pytest.raises(inv.VastInventoryError, match=message):
        inv.load_instances(_api_env(fake_vast, path), home=tmp_path)


def test_api_that_never_answers_times_out(inv, fake_vast, tmp_path):
    env = _api_env(fake_vast, "/hang", VAST_API_TIMEOUT="0.5")
    started = time.monotonic()
    with pytest.raises(inv.VastInventoryError, match=r"did not answer within 0\.5 s at http://"):
        inv.load_instances(env, home=tmp_path)
    assert time.monotonic() - started < 5
    assert fake_vast.seen[0]["path"] == "/hang/instances/"  # it got as far as the request


def test_unreachable_api_is_an_error(inv, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port is closed again: the connection is refused.
    env = {"VAST_API_URL": f"http://127.0.0.1:{port}", "VAST_API_KEY": GOOD_KEY}
    with pytest.raises(inv.VastInventoryError, match=r"^cannot reach Vast API at http://.*refused"):
        inv.load_instances(env, home=tmp_path)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VAST_API_TIMEOUT": "soon"}, r"^VAST_API_TIMEOUT must be a positive number.*'soon'"),
        ({"VAST_API_TIMEOUT": "0"}, r"^VAST_API_TIMEOUT must be a positive number.*'0'"),
        ({"VAST_API_URL": "file:///etc"}, r"^VAST_API_URL must be an http\(s\) URL"),
    ],
)
def test_bad_settings_are_errors(inv, tmp_path, env, message):
    with pytest.raises(inv.VastInventoryError, match=message):
        inv.load_instances({"VAST_API_KEY": GOOD_KEY, **env}, home=tmp_path)


def test_error_messages_are_one_line(inv):
    assert str(inv.VastInventoryError("server said:\n  <html>\n\tboom</html>\n")) == (
        "server said: <html> boom</html>"
    )


# -- module-level behaviour: what pyinfra sees when it loads the file


def test_loading_with_an_error_exits_2_with_one_line_on_stderr(tmp_path, capsys):
    env = {"HOME": str(tmp_path), "VAST_INSTANCES_JSON": str(FIXTURES / "malformed.json")}
    with pytest.raises(SystemExit) as exit_info:
        _exec_inventory(env)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("red inventory: malformed JSON from ")


def test_loading_honours_vast_label(tmp_path):
    env = {
        "HOME": str(tmp_path),
        "VAST_INSTANCES_JSON": str(FIXTURES / "instances.json"),
        "VAST_LABEL": "visomaster-prod",
    }
    assert [name for name, _ in _exec_inventory(env).vast] == [f"vast-{PROXY_ID}"]


# -- host keys: one known_hosts file per instance id


def test_known_hosts_files_are_private_and_kept(inv, instances, tmp_path):
    kh = tmp_path / "home" / ".ssh" / "red_known_hosts"
    kh.mkdir(parents=True, mode=0o755)
    kh.chmod(0o755)  # as if made by hand, readable by all
    hosts = inv.hosts_from_instances(instances, None, kh)
    pinned = kh / f"vast-{DIRECT_ID}"
    pinned.write_text("[203.0.113.17]:40022 ssh-ed25519 AAAAC3Nza...\n")

    inv.prepare_known_hosts(hosts)

    assert stat.S_IMODE(kh.stat().st_mode) == 0o700
    assert sorted(p.name for p in kh.iterdir()) == RUNNING
    assert stat.S_IMODE((kh / f"vast-{PROXY_ID}").stat().st_mode) == 0o600
    # An existing pin survives a reload: that is what refuses a changed key later.
    assert pinned.read_text().startswith("[203.0.113.17]:40022 ssh-ed25519")


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
def _ssh_server() -> Iterator[tuple[int, dict]]:
    """
    A loopback SSH server that accepts any password; ``state["key"]`` is its host key and can be
    swapped between connections, which is what a re-rented box on the same ip:port looks like.
    """

    paramiko = pytest.importorskip("paramiko")

    class AcceptAll(paramiko.ServerInterface):
        def get_allowed_auths(self, username):
            return "password"

        def check_auth_password(self, username, password):
            return paramiko.AUTH_SUCCESSFUL

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    state: dict = {"key": None}
    stop = threading.Event()
    transports = []

    def serve():
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
            except (paramiko.SSHException, EOFError):
                pass  # the client walked away; the test judges the client side

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], state
    finally:
        stop.set()
        thread.join(5)
        for transport in transports:
            transport.close()
        listener.close()


def test_host_key_policy_trusts_new_instance_and_refuses_changed_key(inv, tmp_path):
    paramiko = pytest.importorskip("paramiko")
    client_module = pytest.importorskip("pyinfra.connectors.sshuserclient.client")
    kh = tmp_path / "red_known_hosts"

    def connect(instance_id: int, port: int) -> None:
        instance = {
            "id": instance_id,
            "actual_status": "running",
            "public_ipaddr": "127.0.0.1",
            "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]},
        }
        hosts = inv.hosts_from_instances([instance], None, kh)
        inv.prepare_known_hosts(hosts)
        kwargs = _paramiko_kwargs(hosts, f"vast-{instance_id}")
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

    first_key, second_key = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    with _ssh_server() as (port, server):
        server["key"] = first_key
        connect(1, port)  # first contact: trusted and pinned for instance 1
        connect(1, port)  # same key again: accepted from the pin
        pin_1 = (kh / "vast-1").read_text()
        assert pin_1.count("\n") == 1
        assert first_key.get_base64() in pin_1

        # The box is re-rented: same ip:port, new host key.
        server["key"] = second_key
        with pytest.raises(paramiko.BadHostKeyException):
            connect(1, port)  # same instance id, changed key: refused
        connect(2, port)  # new instance id: trusted on first use

    assert (kh / "vast-1").read_text() == pin_1
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


def test_pyinfra_cli_lists_hosts_and_data_without_connecting(tmp_path):
    env = {"HOME": str(tmp_path), "VAST_INSTANCES_JSON": str(FIXTURES / "instances.json")}
    result = _run_pyinfra(env, "debug-inventory", "--json")
    assert result.returncode == 0, result.stderr
    hosts = {host["name"]: host for host in json.loads(result.stdout)}
    assert list(hosts) == RUNNING
    jupyter = hosts[f"vast-{JUPYTER_PROXY_ID}"]
    assert "vast" in jupyter["groups"]
    # Host data wins over group_data/all.py, so these are the Vast endpoint's values.
    assert (jupyter["data"]["ssh_hostname"], jupyter["data"]["ssh_port"]) == ("ssh2.vast.ai", 20111)
    assert jupyter["data"]["ssh_known_hosts_file"] == str(
        tmp_path / ".ssh" / "red_known_hosts" / f"vast-{JUPYTER_PROXY_ID}",
    )
    assert "Connecting" not in result.stderr


def test_pyinfra_cli_error_is_one_line_without_traceback(fake_vast, tmp_path):
    env = {"HOME": str(tmp_path), **_api_env(fake_vast, VAST_API_KEY="wrong-secret-key")}
    result = _run_pyinfra(env, "debug-inventory")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    ours = [line for line in result.stderr.splitlines() if line.startswith("red inventory:")]
    assert len(ours) == 1
    assert ours[0].startswith("red inventory: Vast API rejected the API key (HTTP 401)")
    assert "wrong-secret-key" not in result.stderr
