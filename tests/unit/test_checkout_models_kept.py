"""
red-app-checkout (redbox.app.checkout) on a fixture shaped like v0.1.6: its .gitignore mix (tracked
files inside model_assets/, ignored *.onnx, *.trt, tensorrt-engines/, *.json, .thumbnails,
__pycache__) and the files the app writes at run time. After a run a converge changes nothing
and copies nothing aside; a ref move leaves every run-time file in place; a change of remote
(the Fusion fork) carries the models and engines into the new tree, moved, not copied.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixtures.checkout_repo import Runner, git, write_files

# v0.1.6's .gitignore, as the reference describes it.
GITIGNORE = (b"**/__pycache__/**\n*.onnx\n*.pth\n*.trt\ntensorrt-engines/\n*.json\n"
             b".thumbnails\n*.mp4\n*.jpg\n")
TRACKED = {
    ".gitignore": GITIGNORE,
    "main.py": b"print('app')\n",
    "requirements_cu124.txt": b"numpy==1.26.4\n",
    "model_assets/meanshape_68.pkl": b"tracked inside model_assets\n",
    "model_assets/liveportrait_onnx/lip_array.pkl": b"tracked too\n",
    "model_assets/dfm_models/.gitkeep": b"",
}
BIG = 1 << 21  # 2 MiB: a model
# What the app (and its downloader) write into its working directory while it runs.
RUNTIME = {
    "model_assets/inswapper_128.fp16.onnx": os.urandom(BIG),
    "model_assets/liveportrait_onnx/motion_extractor.onnx": os.urandom(BIG),
    "tensorrt-engines/inswapper_128.trt": os.urandom(BIG),
    "last_workspace.json": b'{"workspace": "mine"}\n',
    ".thumbnails/a1b2.png": b"\x89PNG thumb",
    "app/__pycache__/main.cpython-310.pyc": b"\x00pyc",
    "output/take1.mp4": b"\x00mp4",
}


def repo(base: Path, name: str, env: dict, tags: dict[str, dict[str, bytes]]) -> str:
    """A bare repository whose tags each add files ("main": the branch only); its URL."""
    bare, work = base / f"{name}.git", base / f"{name}-work"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=base, env=env)
    git("init", "-q", "-b", "main", str(work), cwd=base, env=env)
    for tag, files in tags.items():
        write_files(work, files)
        git("add", "-A", ".", cwd=work, env=env)
        git("commit", "-q", "-m", tag, cwd=work, env=env)
        if tag != "main":
            git("tag", tag, cwd=work, env=env)
    git("push", "-q", bare.as_uri(), "main", "--tags", cwd=work, env=env)
    return bare.as_uri()


@pytest.fixture
def world(tmp_path: Path):
    (tmp_path / "gitconfig").write_text("[user]\n\tname = T\n\temail = t@example.invalid\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
           "GIT_CONFIG_GLOBAL": str(tmp_path / "gitconfig"), "GIT_CONFIG_NOSYSTEM": "1"}
    (tmp_path / "remote").mkdir()
    upstream = repo(tmp_path / "remote", "upstream", env,
                    {"v0.1.5": TRACKED, "v0.1.6": {"main.py": b"print('v0.1.6')\n"}})
    fork = repo(tmp_path / "remote", "fork", env,
                {"main": {**TRACKED, "requirements_cu129.txt": b"torch==2.8.0\n"}})
    dest = tmp_path / "workspace" / "VisoMaster"
    return Runner(env, tmp_path / "logs" / "checkout.log"), upstream, fork, dest


def written(dest: Path) -> None:
    write_files(dest, RUNTIME)


def assert_runtime_files_at(root: Path, names=RUNTIME) -> None:
    for rel in names:
        assert (root / rel).read_bytes() == RUNTIME[rel], rel


def test_after_a_run_a_converge_changes_nothing_and_copies_nothing_aside(world):
    run, upstream, _, dest = world
    assert run(upstream, "v0.1.6", dest)[0] == 0
    written(dest)
    rc, report = run.check(upstream, "v0.1.6", dest)
    assert rc == 0 and report["in_state"], report
    rc, summary, _ = run(upstream, "v0.1.6", dest)
    assert rc == 0 and summary["action"] in ("unchanged", "none"), summary
    assert summary["moved_aside"] == [] and summary["user_files_backup"] is None
    assert sorted(p.name for p in dest.parent.iterdir()) == ["VisoMaster"]
    assert_runtime_files_at(dest)


def test_a_ref_move_leaves_every_run_time_file_in_place(world):
    run, upstream, _, dest = world
    assert run(upstream, "v0.1.5", dest)[0] == 0
    written(dest)
    rc, summary, _ = run(upstream, "v0.1.6", dest)
    assert rc == 0 and summary["action"] == "updated", summary
    assert summary["user_files_backup"] is None and summary["moved_aside"] == []
    assert_runtime_files_at(dest)
    assert (dest / "model_assets" / "meanshape_68.pkl").read_bytes() == \
        TRACKED["model_assets/meanshape_68.pkl"]


def test_a_change_of_remote_carries_the_models_into_the_new_tree(world):
    run, upstream, fork, dest = world
    assert run(upstream, "v0.1.6", dest)[0] == 0
    written(dest)
    inodes = {rel: (dest / rel).stat().st_ino for rel in RUNTIME}
    rc, summary, _ = run(fork, "main", dest)
    assert rc == 0 and summary["action"] == "cloned", summary
    [aside] = summary["moved_aside"]
    large = sorted(rel for rel, data in RUNTIME.items() if len(data) >= BIG)
    carried = summary["carried_over"]
    assert carried["from"] == aside and sorted(carried["files"]) == large
    assert carried["bytes"] == 3 * BIG
    for rel in large:  # moved (same inode), not copied, and gone from the old tree
        assert (dest / rel).stat().st_ino == inodes[rel]
        assert not (Path(aside) / rel).exists()
    assert_runtime_files_at(dest, large)
    # The small run-time files stay in the moved-aside tree: nothing lost.
    assert_runtime_files_at(Path(aside), [rel for rel in RUNTIME if rel not in large])
    log = run.log_text()
    assert f"carried 3 git-ignored file(s) ({3 * BIG} bytes) from {aside} into {dest} " \
        "(moved, not copied): " in log
    assert all(rel in log for rel in large)
    rc, report = run.check(fork, "main", dest)
    assert rc == 0, report
