"""Eight fake Debian 12 boxes for bench/speedups.py (tests/fixtures/fake_inventory.py's kind)."""

from tests.fixtures.fake_inventory import DEBIAN_12, _host

one = [_host("bench-box-0", DEBIAN_12, python_version="3.11")]
fleet = [_host(f"bench-box-{index}", DEBIAN_12, python_version="3.11") for index in range(1, 9)]
