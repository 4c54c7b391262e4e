"""Tests for files/visomaster/opt/red/bin/red-app-checkout (no network but loopback, no root).

Each test builds its own upstream: a bare repository with tags v0.1.5 and v0.1.6 and one more
commit on main, served as a file:// URL. Every case asserts that each pre-existing user file
still exists byte for byte at a path the summary and the log name, and that --check exits 0
after the apply.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.checkout_repo import TOOL, Runner, git, write_files

V5_FILES = {
    "README.md": b"VisoMaster fixture\n",
    "main.py": b"print('v0.1.5')\n",
    "app/shared.py": b"SHARED = 1\n",
    "app/old_only.py": b"OLD = True\n",
    ".gitignore": b"*.json\nmodel_assets/\n",
}
V6_FILES = {
    "main.py": b"print('v0.1.6')\n",
    "app/new_in_6.py": b"NEW = 6\n",
    "app/presets.json": b'{"upstream": true}\n',  # force-added although *.json is ignored
}


class Upstream:
    def __init__(self, base: Path, env: dict, name: str = "upstream"):
        self.env = env
        self.bare = base / f"{name}.git"
        self.work = base / f"{name}-work"
        git("init", "-q", "--bare", "-b", "main", str(self.bare), cwd=base, env=env)
        git("init", "-q", "-b", "main", str(self.work), cwd=base, env=env)
        git("remote", "add", "origin", str(self.bare), cwd=self.work, env=env)
        self.shas: dict[str, str] = {}
        self.commit(V5_FILES, "v0.1.5", tag="v0.1.5")
        (self.work / "app" / "old_only.py").unlink()
        self.commit(V6_FILES, "v0.1.6", tag="v0.1.6")
        self.commit({"README.md": b"VisoMaster fixture (title change)\n"}, "title")

    @property
    def url(self) -> str:
        return self.bare.as_uri()

    def commit(self, files: dict[str, bytes], msg: str, tag: str | None = None) -> str:
        write_files(self.work, files)
        git("add", "-A", "-f", ".", cwd=self.work, env=self.env)
        git("commit", "-q", "-m", msg, cwd=self.work, env=self.env)
        sha = git("rev-parse", "HEAD", cwd=self.work, env=self.env)
        if tag:
            git("tag", "-a", "-m", tag, tag, cwd=self.work, env=self.env)
            self.shas[tag] = sha
        self.shas["main"] = sha
        git("push", "-q", "origin", "main", "--tags", cwd=self.work, env=self.env)
        return sha


@pytest.fixture
def env(tmp_path: Path) -> dict:
    cfg = tmp_path / "gitconfig"
    cfg.write_text("[user]\n\tname = Test\n\temail = test@example.invalid\n"
                   "[init]\n\tdefaultBranch = main\n")
    e = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    e.update(GIT_CONFIG_GLOBAL=str(cfg), GIT_CONFIG_NOSYSTEM="1", LC_ALL="C")
    return e


@pytest.fixture
def up(tmp_path: Path, env: dict) -> Upstream:
    base = tmp_path / "remote"
    base.mkdir()
    return Upstream(base, env)


@pytest.fixture
def box(tmp_path: Path, env: dict) -> Path:
    """The parent of DEST; itself a git repository, so a broken DEST/.git must not let git
    wander up into it."""
    b = tmp_path / "workspace"
    b.mkdir()
    subprocess.run(["git", "init", "-q", str(b)], check=True, capture_output=True, env=env)
    return b


@pytest.fixture
def run(tmp_path: Path, env: dict) -> Runner:
    return Runner(env, tmp_path / "logs" / "checkout.log")


def head(dest: Path, env: dict) -> str:
    return git("rev-parse", "HEAD", cwd=dest, env=env)


def snapshot(root: Path) -> dict:
    """Every path under root's parent that starts with root's name, with its content."""
    snap = {}
    for top in sorted(root.parent.glob(root.name + "*")):
        if top.is_file():
            snap[str(top)] = top.read_bytes()
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for f in sorted(filenames):
                p = Path(dirpath) / f
                snap[str(p)] = os.readlink(p) if p.is_symlink() else p.read_bytes()
            snap[dirpath] = "dir"
    return snap


def named_locations(summary: dict, dest: Path, rel: str) -> list[Path]:
    """Where the summary says the user's file `rel` now is."""
    for uf in summary["user_files"]:
        if rel == uf["path"] or rel.startswith(uf["path"] + "/"):  # a file or a saved dir
            locs = [Path(uf["backup"]) / rel[len(uf["path"]):].lstrip("/")]
            if uf["in_worktree"]:
                locs.append(dest / rel)
            return locs
    if summary["moved_aside"]:
        return [Path(summary["moved_aside"][0]) / rel]
    return [dest / rel]


def assert_user_files(summary: dict, dest: Path, files: dict[str, bytes], log: str) -> None:
    for rel, data in files.items():
        locs = named_locations(summary, dest, rel)
        for loc in locs:
            assert loc.is_file(), f"{rel}: {loc} missing ({summary})"
            assert loc.read_bytes() == data, f"{rel}: {loc} differs"
            if loc != dest / rel:
                assert named_in_log(loc, summary, log), f"{loc} not named in the log"


def named_in_log(loc: Path, summary: dict, log: str) -> bool:
    """The log names the saved copy itself or the saved entry (file or directory) holding it."""
    if summary["moved_aside"]:
        root = Path(summary["moved_aside"][0])
        return str(root) in log and root in loc.parents
    root = Path(summary["user_files_backup"])
    return any(str(p) in log for p in (loc, *loc.parents) if root in p.parents)


def assert_converged(run: Runner, up: Upstream, ref: str, dest: Path, env: dict) -> None:
    rc, res = run.check(up.url, ref, dest)
    assert rc == 0, res
    assert head(dest, env) == up.shas[ref]
    assert not list(dest.parent.glob(dest.name + ".partial-*"))


def test_tool_is_the_box_librarys_console_script() -> None:
    assert os.access(TOOL, os.X_OK)
    assert "from redbox.app.checkout import main" in TOOL.read_text()


# 1 ------------------------------------------------------------------------------------------
def test_missing_dest_is_cloned_at_tag(run: Runner, up: Upstream, box: Path, env: dict) -> None:
    dest = box / "VisoMaster"
    rc, res = run.check(up.url, "v0.1.6", dest)
    assert rc == 1 and res["state"] == "missing"
    assert not dest.exists()
    rc, summary, _ = run(up.url, "v0.1.6", dest)
    assert rc == 0, summary
    assert summary["action"] == "cloned" and summary["ok"] and summary["ref_type"] == "tag"
    assert summary["commit"] == up.shas["v0.1.6"]
    assert (dest / "app" / "new_in_6.py").read_bytes() == V6_FILES["app/new_in_6.py"]
    assert git("config", "--get", "remote.origin.url", cwd=dest, env=env) == up.url
    assert_converged(run, up, "v0.1.6", dest, env)
    assert "cloned" in run.log_text()


def test_parent_directories_and_log_dir_are_created(run: Runner, up: Upstream,
                                                    tmp_path: Path, env: dict) -> None:
    dest = tmp_path / "deep" / "er" / "VisoMaster"
    log = tmp_path / "newlogs" / "x" / "checkout.log"
    proc = subprocess.run([str(TOOL), "--url", up.url, "--ref", "v0.1.5", "--dest", str(dest),
                           "--log", str(log)], env=env, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert log.is_file() and "cloned" in log.read_text()
    assert head(dest, env) == up.shas["v0.1.5"]


def test_unwritable_log_goes_to_stderr(up: Upstream, tmp_path: Path, env: dict) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    dest = tmp_path / "VisoMaster"
    proc = subprocess.run([sys.executable, str(TOOL), "--url", up.url, "--ref", "v0.1.6",
                           "--dest", str(dest), "--log", str(blocker / "sub" / "log")],
                          env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert "cannot write log" in proc.stderr and "cloned" in proc.stderr
    assert json.loads(proc.stdout)["action"] == "cloned"


# 2 ------------------------------------------------------------------------------------------
def test_clean_clone_at_ref_is_unchanged_and_check_works_offline(
        run: Runner, up: Upstream, box: Path, env: dict) -> None:
    dest = box / "VisoMaster"
    assert run(up.url, "v0.1.6", dest)[0] == 0
    before = snapshot(dest)
    hidden = up.bare.with_name("gone.git")
    up.bare.rename(hidden)  # offline: the URL no longer answers
    try:
        rc, res = run.check(up.url, "v0.1.6", dest)
        assert rc == 0 and res["state"] == "in_state" and res["target"] == up.shas["v0.1.6"]
        rc, res = run.check(up.url, up.shas["v0.1.6"], dest)  # a full commit hash
        assert rc == 0 and res["ref_type"] == "commit"
        rc, summary, _ = run(up.url, "v0.1.6", dest)
        assert rc == 0 and summary["action"] == "unchanged", summary
    finally:
        hidden.rename(up.bare)
    assert snapshot(dest) == before
    rc, summary, _ = run(up.url, "v0.1.6", dest)
    assert summary["action"] == "unchanged"
    assert_converged(run, up, "v0.1.6", dest, env)


def test_equivalent_url_spelling_is_the_same_remote(run: Runner, up: Upstream, box: Path,
                                                    env: dict) -> None:
    dest = box / "VisoMaster"
    assert run(up.url, "v0.1.6", dest)[0] == 0
    rc, summary, _ = run(up.url + "/", "v0.1.6", dest)
    assert rc == 0 and summary["action"] == "unchanged" and not summary["moved_aside"]
    rc, summary, _ = run(str(up.bare), "v0.1.6", dest)
    assert rc == 0 and summary["action"] == "unchanged" and not summary["moved_aside"]


# 3 ------------------------------------------------------------------------------------------
def test_older_tag_is_brought_to_ref(run: Runner, up: Upstream, box: Path, env: dict) -> None:
    dest = box / "VisoMaster"
    assert run(up.url, "v0.1.5", dest)[0] == 0
    before = snapshot(dest)
    rc, res = run.check(up.url, "v0.1.6", dest)
    assert rc == 1 and res["state"] == "wrong_commit"
    assert snapshot(dest) == before, "--check modified something"
    rc, summary, _ = run(up.url, "v0.1.6", dest)
    assert rc == 0 and summary["action"] == "updated"
    assert summary["previous_commit"] == up.shas["v0.1.5"]
    assert summary["user_files_backup"] is None and summary["backup_branches"] == []
    assert not (dest / "app" / "old_only.py").exists()
    assert_converged(run, up, "v0.1.6", dest, env)


def test_branch_ref_follows_upstream(run: Runner, up: Upstream, box: Path, env: dict) -> None:
    dest = box / "VisoMaster"
    rc, summary, _ = run(up.url, "main", dest)
    assert rc == 0 and summary["ref_type"] == "branch" and summary["branch"] == "main"
    assert_converged(run, up, "main", dest, env)
    up.commit({"main.py": b"print('newer')\n"}, "upstream moved")
    before = snapshot(dest)
    rc, res = run.check(up.url, "main", dest)
    assert rc == 1 and res["state"] == "wrong_commit" and res["target"] == up.shas["main"]
    assert snapshot(dest) == before, "--check modified something"
    rc, summary, _ = run(up.url, "main", dest)
    assert rc == 0 and summary["action"] == "updated" and summary["branch"] == "main"
    assert git("rev-parse", "--abbrev-ref", "main@{upstream}", cwd=dest, env=env) == \
        "origin/main"
    assert (dest / "main.py").read_bytes() == b"print('newer')\n"
    assert_converged(run, up, "main", dest, env)


def test_detached_at_branch_head_gets_the_branch(run: Runner, up: Upstream, box: Path,
                                                 env: dict) -> None:
    dest = box / "VisoMaster"
    assert run(up.url, up.shas["main"], dest)[0] == 0
    rc, res = run.check(up.url, "main", dest)
    assert rc == 1 and res["state"] == "wrong_branch"
    rc, summary, _ = run(up.url, "main", dest)
    assert rc == 0 and summary["branch"] == "main"
    assert_converged(run, up, "main", dest, env)


# 4 ------------------------------------------------------------------------------------------
def test_dirty_tree_user_files_are_never_lost(run: Runner, up: Upstream, box: Path,
                                              env: dict) -> None:
    dest = box / "VisoMaster"
    assert run(up.url, "v0.1.5", dest)[0] == 0
    user = {
        "main.py": b"print('my edit')\n",            # tracked, changed upstream: collides
        "app/shared.py": b"SHARED = 'mine'\n",        # tracked, unchanged upstream: carried
        "notes.txt": b"my notes\n",                   # untracked
        "app/new_in_6.py": b"# my own file\n",        # untracked, v0.1.6 adds this path
        "app/presets.json": b'{"mine": 1}\n',         # ignored, v0.1.6 tracks this path
        "last_workspace.json": b'{"ws": 1}\n',        # ignored, left alone
        "staged.txt": b"staged\n",                    # staged new file
        "app/old_only.py": b"OLD = 'edited'\n",       # tracked, deleted upstream
        "bin\xe4ry name.dat": bytes(range(256)),       # odd name, binary bytes
    }
    write_files(dest, user)
    git("add", "staged.txt", cwd=dest, env=env)
    rc, summary, _ = run(up.url, "v0.1.6", dest)
    assert rc == 0, summary
    assert summary["action"] == "updated"
    bdir = Path(summary["user_files_backup"])
    assert bdir.parent == box and bdir.name.startswith("VisoMaster.user-files-")
    log = run.log_text()
    assert str(bdir) in log
    assert_user_files(summary, dest, user, log)
    by_path = {u["path"]: u for u in summary["user_files"]}
    assert by_path["app/shared.py"]["in_worktree"]          # carried over
    assert by_path["notes.txt"]["in_worktree"]
    assert by_path["staged.txt"]["in_worktree"]
    assert by_path["app/old_only.py"]["in_worktree"]        # kept as an untracked file
    assert not by_path["main.py"]["in_worktree"]            # REF's content in the tree
    assert not by_path["app/new_in_6.py"]["in_worktree"]
    assert not by_path["app/presets.json"]["in_worktree"]
    assert "last_workspace.json" not in by_path
    assert (dest / "main.py").read_bytes() == V6_FILES["main.py"]
    assert (dest / "app/presets.json").read_bytes() == V6_FILES["app/presets.json"]
    assert any("main.py" in w for w in summary["warnings"])
    assert (bdir / ".red-app-checkout.patch").read_bytes()
    manifest = json.loads((bdir / ".red-app-checkout-manifest.json").read_text())
    assert manifest["head_before"] == up.shas["v0.1.5"]
    assert_converged(run, up, "v0.1.6", dest, env)
    rc, again, _ = run(up.url, "v0.1.6", dest)
    assert rc == 0 and again["action"] == "unchanged"


def test_non_colliding_edits_stay_in_the_tree(run: Runner, up: Upstream, box: Path,
                                              env: dict) -> None:
    dest = box / "VisoMaster"
    assert run(up.url, "v0.1.5", dest)[0] == 0
    user = {"app/shared.py": b"SHARED = 2\n", "mine/data.bin": b"\x00\x01\x02"}
    write_files(dest, user)
    rc, summary, _ = run(up.url, "v0.1.6", dest)
    assert rc == 0 and summary["action"] == "updated"
    assert all(u["in_worktree"] for u in summary["user_files"]), summary
    assert "refused" not in run.log_text()
    for rel, data in user.items():
        assert (dest / rel).read_bytes() == data
    assert_user_files(summary, dest, user, run.log_text())
    assert_converged(run, up, "v0.1.6", dest, env)


def test_directory_in_the_way_and_nested_repo(run: Runner, up: Upstream, box: Path,
                                              env: dict) -> None:
    dest = box / "VisoMaster"
    assert run(up.url, "v0.1.5", dest)[0] == 0
    user = {"app/new_in_6.py/inner/deep.txt": b"a dir where v0.1.6 has a file\n",
            "nested/z.txt": b"inside a nested repository\n"}
    write_files(dest, user)
    git("init", "-q", str(dest / "nested"), cwd=dest, env=env)
    rc, summary, _ = run(up.url, "v0.1.6", dest)
    assert rc == 0, summary
    by_path = {u["path"]: u for u in summary["user_files"]}
    assert set(by_path) == {"app/new_in_6.py", "nested"}
    assert not by_path["app/new_in_6.py"]["in_worktree"] and by_path["nested"]["in_worktree"]
    assert (dest / "app" / "new_in_6.py").read_bytes() == V6_FILES["app/new_in_6.py"]
    assert_user_files(summary, dest, user, run.log_text())
    assert_converged(run, up, "v0.1.6", dest, env)


def test_dirty_tree_at_ref_is_left_alone(run: Runner, up: Upstream, box: Path,
                                         env: dict) -> None:
    dest = box / "VisoMaster"
    assert run(up.url, "v0.1.6", dest)[0] == 0
    user = {"main.py": b"print('edited at ref')\n", "notes.txt": b"n\n"}
    write_files(dest, user)
    before = snapshot(dest)
    rc, res = run.check(up.url, "v0.1.6", dest)
    assert rc == 0 and res["dirty"] is True
    rc, summary, _ = run(up.url, "v0.1.6", dest)
    assert rc == 0 and summary["action"] == "unchanged" and summary["user_files_backup"] is None
    assert snapshot(dest) == before
    assert not list(box.glob("VisoMaster.user-files-*"))


# 5 ------------------------------------------------------------------------------------------
def test_local_commits_are_kept_on_a_backup_branch(run: Runner, up: Upstream, box: Path,
                                                   env: dict) -> None:
    dest = box / "VisoMaster"
    assert run(up.url, "v0.1.5", dest)[0] == 0
    (dest / "mine.txt").write_bytes(b"committed work\n")
    git("add", "mine.txt", cwd=dest, env=env)
    git("commit", "-q", "-m", "local work", cwd=dest, env=env)
    local = head(dest, env)
    rc, res = run.check(up.url, "v0.1.6", dest)
    assert rc == 1 and res["local_commits"] == 1
    rc, summary, _ = run(up.url, "v0.1.6", dest)
    assert rc == 0, summary
    [bb] = summary["backup_branches"]
    assert bb["name"].startswith("red-backup/") and bb["commit"] == local and bb["commits"] == 1
    assert bb["name"] in run.log_text()
    assert git("rev-parse", f"refs/heads/{bb['name']}", cwd=dest, env=env) == local
    shown = subprocess.run(["git", "show", f"{bb['name']}:mine.txt"], cwd=dest, env=env,
                           capture_output=True, check=True).stdout
    assert shown == b"committed work\n"
    assert_converged(run, up, "v0.1.6", dest, env)


def test_local_commits_on_branch_survive_upstream_move(run: Runner, up: Upstream, box: Path,
                                                       env: dict) -> None:
    dest = box / "VisoMaster"
    assert run(up.url, "main", dest)[0] == 0
    (dest / "mine.txt").write_bytes(b"on main\n")
    git("add", "mine.txt", cwd=dest, env=env)
    git("commit", "-q", "-m", "local on main", cwd=dest, env=env)
    local = head(dest, env)
    up.commit({"main.py": b"print('upstream 2')\n"}, "upstream moved")
    e = dict(env, RED_APP_CHECKOUT_TIMESTAMP="20250101-000000")
    subprocess.run(["git", "branch", "red-backup/20250101-000000", up.shas["v0.1.5"]],
                   cwd=dest, env=env, check=True)
    rc, summary, _ = run(up.url, "main", dest, env=e)
    assert rc == 0, summary
    [bb] = summary["backup_branches"]
    assert bb == {"name": "red-backup/20250101-000000-2", "commit": local, "commits": 1}
    assert git("rev-parse", "main", cwd=dest, env=env) == up.shas["main"]
    assert git("rev-parse", bb["name"], cwd=dest, env=env) == local
    assert_converged(run, up, "main", dest, env)


# 6 ------------------------------------------------------------------------------------------
def test_empty_dir_is_cloned_into(run: Runner, up: Upstream, box: Path, env: dict) -> None:
    dest = box / "VisoMaster"
    dest.mkdir(mode=0o750)
    dest.chmod(0o750)
    ino = dest.stat().st_ino
    rc, res = run.check(up.url, "v0.1.6", dest)
    assert rc == 1 and res["state"] == "empty"
    rc, summary, _ = run(up.url, "v0.1.6", dest)
    assert rc == 0 and summary["action"] == "cloned" and summary["moved_aside"] == []
    assert dest.stat().st_ino == ino and (dest.stat().st_mode & 0o777) == 0o750
    assert sorted(p.name for p in box.iterdir()) == [".git", "VisoMaster"]
    assert_converged(run, up, "v0.1.6", dest, env)


# 7 ------------------------------------------------------------------------------------------
def test_dir_without_git_is_moved_aside(run: Runner, up: Upstream, box: Path,
                                        env: dict) -> None:
    dest = box / "VisoMaster"
    user = {"model_assets/big.onnx": os.urandom(4096), "notes.txt": b"keep me\n",
            ".hidden": b"h"}
    write_files(dest, user)
    (dest / "link").symlink_to("notes.txt")
    stamp = "20250102-030405"
    taken = box / f"VisoMaster.moved-aside-{stamp}"
    taken.mkdir()
    (taken / "older.txt").write_bytes(b"older run\n")
    e = dict(env, RED_APP_CHECKOUT_TIMESTAMP=stamp)
    before = snapshot(dest)
    rc, res = run.check(up.url, "v0.1.6", dest, env=e)
    assert rc == 1 and res["state"] == "not_a_repo"
    assert snapshot(dest) == before
    rc, summary, _ = run(up.url, "v0.1.6", dest, env=e)
    assert rc == 0, summary
    assert summary["moved_aside"] == [f"{taken}-2"]
    assert (taken / "older.txt").read_bytes() == b"older run\n"
    assert os.readlink(Path(f"{taken}-2") / "link") == "notes.txt"
    assert f"{taken}-2" in run.log_text()
    assert_user_files(summary, dest, user, run.log_text())
    assert_converged(run, up, "v0.1.6", dest, env)


def test_dest_that_is_a_file_is_moved_aside(run: Runner, up: Upstream, box: Path,
                                            env: dict) -> None:
    dest = box / "VisoMaster"
    dest.write_bytes(b"not a dir\n")
    rc, summary, _ = run(up.url, "v0.1.6", dest)
    assert rc == 0, summary
    [aside] = summary["moved_aside"]
    assert Path(aside).read_bytes() == b"not a dir\n" and aside in run.log_text()
    assert_converged(run, up, "v0.1.6", dest, env)


# 8 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("breakage", ["no_head", "bare_skeleton", "missing_objects",
                                      "empty_git_file"])
def test_broken_git_is_moved_aside_and_recloned(run: Runner, up: Upstream, box: Path,
                                                env: dict, breakage: str) -> None:
    dest = box / "VisoMaster"
    if breakage == "bare_skeleton":
        (dest / ".git" / "objects").mkdir(parents=True)
    elif breakage == "empty_git_file":
        dest.mkdir()
        (dest / ".git").write_bytes(b"")
    else:
        assert run(up.url, "v0.1.6", dest)[0] == 0
        if breakage == "no_head":
            (dest / ".git" / "HEAD").unlink()
        else:
            subprocess.run(["rm", "-rf", str(dest / ".git" / "objects")], check=True)
            (dest / ".git" / "objects").mkdir()
    user = {"notes.txt": b"interrupted clone, my file\n"}
    write_files(dest, user)
    parent_git = snapshot(box / ".git")
    rc, res = run.check(up.url, "v0.1.6", dest)
    assert rc == 1 and res["state"] == "broken_repo", res
    rc, summary, _ = run(up.url, "v0.1.6", dest)
    assert rc == 0, summary
    assert summary["action"] == "cloned" and len(summary["moved_aside"]) == 1
    assert summary["moved_aside"][0] in run.log_text()
    assert_user_files(summary, dest, user, run.log_text())
    # the workspace repository above DEST was never touched
    assert snapshot(box / ".git") == parent_git
    assert_converged(run, up, "v0.1.6", dest, env)


# 9 ------------------------------------------------------------------------------------------
def test_different_remote_is_moved_aside_not_repointed(run: Runner, up: Upstream, box: Path,
                                                       tmp_path: Path, env: dict) -> None:
    other = Upstream(tmp_path / "remote", env, name="fork")
    dest = box / "VisoMaster"
    assert run(other.url, "v0.1.6", dest)[0] == 0
    user = {"notes.txt": b"fork notes\n", "main.py": b"print('fork edit')\n"}
    write_files(dest, user)
    rc, res = run.check(up.url, "v0.1.6", dest)
    assert rc == 1 and res["state"] == "different_remote"
    rc, summary, _ = run(up.url, "v0.1.6", dest)
    assert rc == 0, summary
    [aside] = summary["moved_aside"]
    assert git("config", "--get", "remote.origin.url", cwd=aside, env=env) == other.url
    assert git("config", "--get", "remote.origin.url", cwd=dest, env=env) == up.url
    assert aside in run.log_text()
    assert_user_files(summary, dest, user, run.log_text())
    assert_converged(run, up, "v0.1.6", dest, env)


# dubious ownership --------------------------------------------------------------------------
# git 2.34 as Ubuntu 22.04 ships it, in front of this machine's git: `-c safe.directory=` is
# ignored on the command line (honoured from 2.38) and core.fsmonitor's value is a hook path
# (a boolean from 2.36), so `-c core.fsmonitor=false` would run a hook named "false".
OLD_GIT = """#!/bin/bash
if [ "$1" = --version ]; then echo "git version 2.34.1"; exit 0; fi
args=()
while [ $# -gt 0 ]; do
  if [ "$1" = -c ]; then
    case "$2" in
      safe.directory=*) shift 2; continue ;;
      core.fsmonitor=?*) echo "error: cannot run fsmonitor hook '${2#*=}'" >&2; exit 128 ;;
    esac
  fi
  args+=("$1"); shift
done
exec REAL_GIT "${args[@]}"
"""


def old_git_env(env: dict, directory: Path) -> dict:
    """env with git 2.34's command-line behaviour emulated in front of the real git."""
    directory.mkdir()
    wrapper = directory / "git"
    real = subprocess.run(["sh", "-c", "command -v git"], capture_output=True, text=True,
                          check=True, env=env).stdout.strip()
    wrapper.write_text(OLD_GIT.replace("REAL_GIT", real))
    wrapper.chmod(0o755)
    probe = subprocess.run(["git", "--version"], capture_output=True,
                           text=True, check=False, env=dict(env, PATH=f"{directory}:{env['PATH']}"))
    assert probe.stdout.strip() == "git version 2.34.1", probe
    return dict(env, PATH=f"{directory}:{env['PATH']}")


@pytest.mark.parametrize("git_release", ["this machine's git", "git 2.34 (Ubuntu 22.04)"])
def test_dubious_ownership_is_handled_per_directory(run: Runner, up: Upstream, box: Path,
                                                    env: dict, tmp_path: Path,
                                                    git_release: str) -> None:
    if git_release.startswith("git 2.34"):
        env = old_git_env(env, tmp_path / "old-git")
    dest = box / "VisoMaster"
    assert run(up.url, "v0.1.5", dest)[0] == 0
    # Every repository now looks owned by someone else. The fixture remote is allowed in the
    # test's global config (a real remote is a server, not a local directory).
    cfg = Path(env["GIT_CONFIG_GLOBAL"])
    cfg.write_text(cfg.read_text() + f"[safe]\n\tdirectory = {up.bare.resolve()}\n")
    foreign = dict(env, GIT_TEST_ASSUME_DIFFERENT_OWNER="1")
    probe = subprocess.run(["git", "status"], cwd=dest, env=foreign, capture_output=True,
                           text=True, check=False)
    assert probe.returncode != 0 and "dubious ownership" in probe.stderr
    assert "safe.directory" not in cfg.read_text().split("[safe]")[0]
    rc, res = run.check(up.url, "v0.1.6", dest, env=foreign)
    assert rc == 1 and res["state"] == "wrong_commit", res
    rc, summary, err = run(up.url, "v0.1.6", dest, env=foreign)
    assert rc == 0 and summary["action"] == "updated", (summary, err)
    rc, res = run.check(up.url, "v0.1.6", dest, env=foreign)
    assert rc == 0, res
    fresh = box / "Fresh"
    rc, summary, err = run(up.url, "v0.1.6", fresh, env=foreign)
    assert rc == 0 and summary["action"] == "cloned", (summary, err)
    assert run.check(up.url, "v0.1.6", fresh, env=foreign)[0] == 0
    # nothing was added to any config file: the exception is per command, per directory
    assert "VisoMaster" not in cfg.read_text()
    assert "safe" not in (dest / ".git" / "config").read_text()
    assert head(dest, env) == up.shas["v0.1.6"]


# network failure ----------------------------------------------------------------------------
@pytest.mark.parametrize("bad_url", ["http://127.0.0.1:1/x.git", "missing-file-path"])
def test_network_failure_is_bounded_and_leaves_nothing(run: Runner, up: Upstream, box: Path,
                                                       env: dict, bad_url: str) -> None:
    if bad_url == "missing-file-path":
        bad_url = (box.parent / "nowhere" / "x.git").as_uri()
    dest = box / "VisoMaster"
    t0 = time.monotonic()
    rc, summary, err = run(bad_url, "v0.1.6", dest, "--retries", "2")
    elapsed = time.monotonic() - t0
    assert rc == 2, summary
    assert not summary["ok"] and summary["action"] == "error"
    assert "after 3 attempts" in summary["error"]
    err_lines = err.strip().splitlines()
    assert len(err_lines) == 1 and "after 3 attempts" in err_lines[0]
    log = run.log_text()
    assert log.count("attempt 1/3 failed") == 1 and log.count("attempt 3/3 failed") == 1
    assert "attempt 4/" not in log and "ERROR:" in log
    assert elapsed >= 0.05 + 0.1  # backoff 0.05 then 0.1
    assert not dest.exists()
    assert not list(box.glob("VisoMaster.partial-*"))
    rc, summary, _ = run(up.url, "v0.1.6", dest)
    assert rc == 0 and summary["action"] == "cloned"
    assert_converged(run, up, "v0.1.6", dest, env)


def test_fetch_failure_leaves_existing_checkout_untouched(run: Runner, up: Upstream, box: Path,
                                                          env: dict) -> None:
    dest = box / "VisoMaster"
    assert run(up.url, "v0.1.5", dest)[0] == 0
    user = {"main.py": b"print('wip')\n", "notes.txt": b"n\n"}
    write_files(dest, user)
    hidden = up.bare.with_name("gone.git")
    up.bare.rename(hidden)
    try:
        rc, summary, err = run(up.url, "v0.1.6", dest, "--retries", "1")
        assert rc == 2 and "after 2 attempts" in err
    finally:
        hidden.rename(up.bare)
    assert head(dest, env) == up.shas["v0.1.5"]
    for rel, data in user.items():
        assert (dest / rel).read_bytes() == data
    assert not list(box.glob("VisoMaster.user-files-*"))
    rc, summary, _ = run(up.url, "v0.1.6", dest)
    assert rc == 0 and summary["action"] == "updated"
    assert_user_files(summary, dest, user, run.log_text())
    assert_converged(run, up, "v0.1.6", dest, env)


def test_unknown_ref_exits_3_and_leaves_nothing(run: Runner, up: Upstream, box: Path) -> None:
    dest = box / "VisoMaster"
    rc, _, err = run(up.url, "v9.9.9", dest)
    assert rc == 3 and "not found" in err
    assert not dest.exists() and not list(box.glob("VisoMaster.partial-*"))


def test_stale_partial_of_dead_process_is_removed(run: Runner, up: Upstream, box: Path,
                                                  env: dict) -> None:
    dest = box / "VisoMaster"
    stale = box / "VisoMaster.partial-4194305"  # above the kernel's largest pid
    (stale / ".git").mkdir(parents=True)
    rc, _, _ = run(up.url, "v0.1.6", dest)
    assert rc == 0 and not stale.exists()
    assert_converged(run, up, "v0.1.6", dest, env)


def test_values_are_data_not_shell(run: Runner, up: Upstream, tmp_path: Path,
                                   env: dict) -> None:
    dest = tmp_path / "odd $(touch pwned) dir" / "Viso Master;echo"
    rc, summary, _ = run(up.url, "v0.1.6", dest)
    assert rc == 0, summary
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    assert_converged(run, up, "v0.1.6", dest, env)
    proc = subprocess.run([sys.executable, str(TOOL), "--url", up.url, "--ref", "--upload-pack=x",
                           "--dest", str(dest), "--check"], capture_output=True, text=True,
                          env=env, check=False)
    assert proc.returncode == 2 and "ref" in proc.stderr
