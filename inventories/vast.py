"""
Dynamic inventory of the running Vast.ai instances on your account.

Every instance whose ``actual_status`` is ``running`` becomes a host named ``vast-<id>``
in the group ``vast``:

.. code:: shell

    pyinfra inventories/vast.py debug-inventory
    VAST_LABEL='visomaster-*' pyinfra inventories/vast.py deploy.py

Environment:

+ ``VAST_API_KEY``: API key; else the vast CLI's key files, in its order:
  ``$XDG_CONFIG_HOME/vastai/vast_tfa_key`` (a 2FA session key, when present),
  ``$XDG_CONFIG_HOME/vastai/vast_api_key`` (``~/.config/vastai/...``), ``~/.vast_api_key``
+ ``VAST_API_URL``: the server, default ``https://console.vast.ai`` (as the CLI's
  ``VAST_URL``); the inventory pages through ``<server>/api/v1/instances/``. Plain
  ``http://`` only for loopback hosts.
+ ``VAST_API_TIMEOUT``: seconds for the whole listing, every page and retry included
  (default 30)
+ ``https_proxy``/``no_proxy``: honoured for https:// servers (a CONNECT tunnel)
+ ``VAST_LABEL``: only instances whose label matches this glob (``fnmatch``, case-sensitive)
+ ``VAST_INSTANCES_JSON``: a saved listing instead of the API: the output of
  ``vastai show instances --raw`` (a JSON list) or an API answer (``{"instances": [...]}``)

SSH endpoint, chosen as the vast CLI's ``ssh-url`` does: direct (``public_ipaddr`` and the
host port mapped to the container's ``22/tcp``) when the instance has that mapping, otherwise
Vast's SSH proxy ``ssh_host:ssh_port``, plus one for jupyter runtypes (Vast's proxy gives
jupyter boxes two ports and the second one is SSH). Where the CLI would print an unusable
address (a blank ip, a port outside 1..65535) the inventory takes the proxy instead, or skips
the box with a warning.

Host data: ``ssh_hostname``, ``ssh_port``, ``ssh_user`` (``root``), ``vast_id``,
``vast_label``, ``gpu_name``, ``compute_cap``, ``driver_version``, ``cuda_max_good`` (the
API's GPU fields as it gives them, None where it gives none), ``num_gpus``, ``vast_runtype``,
``vast_ssh_via`` (``direct`` or ``proxy``), and the two host key settings below.

The flavor each box will get, before anything connects: for every box whose record has the GPU
fields, loading prints one line ``red inventory: vast-<id>: the API says <gpu> on driver ...:
visomaster_flavor=auto gets upstream`` (``VISOMASTER_FLAVOR`` from the environment, else auto,
as ``redbox.app.flavors.choose`` decides it), and for a box no flavor runs on a warning that
nothing of the app will be installed there and what to rent instead (``pyinfra
inventories/vast.py deploy.py --dry`` shows them first). Unreadable GPU fields are one warning
at most; they never fail the listing. Once connected, the box's own nvidia-smi decides.

Host key policy: pinned per instance id, whatever the route. Vast hands the same ``ip:port``
to the next renter, and one instance can move between routes (another proxy port, direct vs
proxy). Each host gets its own file ``~/.ssh/red_known_hosts/vast-<id>`` (pyinfra data
``ssh_known_hosts_file``; directory 0700, files 0600), rewritten at every load so that its
keys stand for the instance's current route. An empty file (a new id) is trusted on first use
(``ssh_strict_host_key_checking="accept-new"``); once it holds a key, checking is strict
(``"yes"``): another key, of any type, on any route, is refused. Your own
``~/.ssh/known_hosts`` is not consulted for these hosts. Files of destroyed instances are left
behind (Vast never reuses an id); delete one to trust that instance anew.

Errors print one line ``red inventory: <message>`` to stderr and exit with status 2; no
listing is ever partial. The README's inventory section lists them and what to do.

The code is in this file's sibling modules, loaded as the package ``_red_vast_inventory``
(pyinfra runs an inventory by path, outside any package): ``vast_client.py`` (key,
settings, the listing), ``vast_http.py`` (one GET inside the listing's deadline),
``vast_hosts.py`` (records to hosts, host keys), ``vast_gpu.py`` (the API's GPU, the flavor
it gets) and ``vast_common.py``.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

_PACKAGE = "_red_vast_inventory"


def _sibling(name: str) -> ModuleType:
    """
    Import ``name`` from this file's directory, as a module of the package ``_PACKAGE``
    (whose path is that directory alone), so that the siblings import one another relatively;
    sys.path is left alone.
    """

    here = str(Path(__file__).resolve().parent)
    package = sys.modules.get(_PACKAGE)
    if package is None or list(package.__path__) != [here]:
        for loaded in [n for n in sys.modules if n.startswith(f"{_PACKAGE}.")]:
            del sys.modules[loaded]
        spec = importlib.machinery.ModuleSpec(_PACKAGE, None, is_package=True)
        spec.submodule_search_locations = [here]
        sys.modules[_PACKAGE] = importlib.util.module_from_spec(spec)
    return importlib.import_module(f"{_PACKAGE}.{name}")


vast_client = _sibling("vast_client")
vast_hosts = _sibling("vast_hosts")
vast_gpu = _sibling("vast_gpu")
vast_common = _sibling("vast_common")

VastInventoryError = vast_common.VastInventoryError
load_instances = vast_client.load_instances
hosts_from_instances = vast_hosts.hosts_from_instances
known_hosts_dir = vast_hosts.known_hosts_dir
prepare_known_hosts = vast_hosts.prepare_known_hosts
ssh_endpoint = vast_hosts.ssh_endpoint


def _build(env: Mapping[str, str], home: Path | None = None) -> list[vast_hosts.Host]:
    home = home or Path.home()
    label_glob = env.get("VAST_LABEL", "").strip() or None
    hosts = hosts_from_instances(load_instances(env, home), label_glob, known_hosts_dir(home))
    prepare_known_hosts(hosts)
    vast_gpu.report(hosts, env, vast_common.say, vast_common.warn)
    return hosts


def _load_or_exit() -> list[vast_hosts.Host]:
    try:
        return _build(os.environ)
    except VastInventoryError as e:
        # pyinfra would wrap an exception from an inventory file in a traceback-like report;
        # the operator only needs the one line.
        print(f"red inventory: {e}", file=sys.stderr)
    except Exception as e:
        print(f"red inventory: unexpected {type(e).__name__}: {' '.join(str(e).split())}",
              file=sys.stderr)
    raise SystemExit(2)


vast = _load_or_exit()
