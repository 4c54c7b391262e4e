"""Remote URLs compared as git hosts do (redbox.app.checkout.same_remote), table-driven."""

import pytest

from redbox.app.checkout import remote_key, same_remote

DEFAULT = "https://github.com/visomaster/VisoMaster.git"


@pytest.mark.parametrize("url", [
    DEFAULT,
    "https://github.com/visomaster/VisoMaster",
    "https://github.com/VisoMaster/VisoMaster",
    "https://github.com/VisoMaster/VisoMaster.git/",
    "https://GitHub.com/visomaster/visomaster.git",
    "http://github.com/visomaster/VisoMaster",
    "https://user@github.com/visomaster/VisoMaster.git",
    "https://github.com:443/visomaster/VisoMaster.git",
    "git@github.com:visomaster/VisoMaster.git",
    "git@github.com:VisoMaster/VisoMaster",
    "ssh://git@github.com/visomaster/VisoMaster.git",
    "ssh://git@github.com:22/visomaster/VisoMaster.git",
    "git://github.com/visomaster/VisoMaster.git",
    "  https://github.com//visomaster/VisoMaster.git\n",
])
def test_the_same_remote_as_the_default(url):
    assert same_remote(url, DEFAULT), remote_key(url)


@pytest.mark.parametrize("url", [
    "https://github.com/VisoMasterFusion/VisoMaster-Fusion.git",
    "git@github.com:visomaster/visomaster-assets.git",
    "https://gitlab.com/visomaster/VisoMaster.git",
    "https://github.example.org/visomaster/VisoMaster.git",
    "https://github.com/visomaster",
    "/srv/VisoMaster.git",
])
def test_a_truly_different_remote(url):
    assert not same_remote(url, DEFAULT), remote_key(url)


@pytest.mark.parametrize(("a", "b", "same"), [
    # Other hosts keep their paths' case; ports other than the default count.
    ("https://git.example.org/Team/App.git", "https://git.example.org/team/app.git", False),
    ("https://GIT.example.org/Team/App", "git@git.example.org:Team/App.git", True),
    ("http://127.0.0.1:17991/app.git", "http://127.0.0.1:17992/app.git", False),
    ("http://127.0.0.1:17991/app.git", "http://127.0.0.1:17991/app", True),
    # Local paths and file:// URLs: normalized paths.
    ("file:///srv/red-fixtures/app.git", "/srv/red-fixtures/app.git", True),
    ("file:///srv/red-fixtures/app.git", "/srv/red-fixtures/./app", True),
    ("file:///srv/red-fixtures/app.git", "file:///srv/red-fixtures/other.git", False),
    ("/srv/App.git", "/srv/app.git", False),
])
def test_pairs(a, b, same):
    assert same_remote(a, b) is same, (remote_key(a), remote_key(b))
