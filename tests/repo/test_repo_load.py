"""A commit's jobs read from git's objects give what its checked-out snapshot gives: the same jobs,
the same errors, the same symlinks dropped, whichever way the snapshot was made."""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from overseer.exceptions import TreeError
from overseer.repo import load as jobmodel
from overseer.repo.parse_cache import ParseCache
from overseer.repo.snapshots import Snapshots
from overseer.repo.tree import Tree

from ..conftest import GIT_ENV, JobRepo, git


def _snapshots(root: Path, repo: JobRepo) -> Snapshots:
    return Snapshots(root, repo.root / ".git", dict(os.environ))


def _from_snapshot(snaps: Snapshots, commit: str, base: str | None = None):
    link_errors = snaps.ensure(commit, base)
    found, errors = jobmodel.load_repository(snaps.path(commit))
    return found, sorted(set(errors) | set(link_errors)), link_errors


def _from_objects(snaps: Snapshots, commit: str, cache: ParseCache | None = None):
    tree = snaps.tree(commit)
    found, errors = jobmodel.load_tree(tree, snaps.read_blobs, cache=cache)
    return found, errors, tree


def _same_jobs(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name] and a[name].definition == b[name].definition, name


def _clear(root: Path) -> None:
    for entry in root.iterdir():
        if entry.name == ".git":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _link(root: Path, rel: str, target: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        return
    os.symlink(target, path)


DIRS = ["", "d/", "d/e/", "team/", "scripts/", "scripts/sub/", "bin/", "tools/", ".hidden/"]
SCRIPTS = ["run.sh", "sub/run.sh", "scripts/run.sh", "./run.sh", "sub/../run.sh", "run.sh/", "missing.sh",
           "noexec.sh", "sub", "out.sh", "up.sh", "../a.yml", "scripts/../scripts/run.sh", "inner.sh",
           "scripts/sub/run.sh", "loop.sh", "dir.sh", "viatools.sh", ".", "..", "sub/", "scripts"]
TARGETS = ["../a.yml", "a.yml", "d", "d/", "d/e", "scripts", "..", "../..", ".", "nothing", "nothing/x",
           "/etc", "/etc/hostname", "a.yml/x", "a.yml/", "d/../a.yml", "d/e/../../a.yml", "out", "out/x",
           "loop1", "loop2", "d/x.yml", "team", "../d/x.yml", "tools", "deep/../../..", "./a.yml",
           "out/../a.yml", "chain1", "sub.yml"]


def _random_commit(repo: JobRepo, rnd: random.Random) -> str:
    root = repo.root
    _clear(root)
    files = {
        "a.yml": "command: echo a\n",
        "scripts/run.sh": "#!/bin/sh\necho run\n",
        "scripts/sub/run.sh": "#!/bin/sh\necho sub\n",
        "scripts/noexec.sh": "#!/bin/sh\n",
        "tools/tool.sh": "#!/bin/sh\n",
    }
    for i in range(rnd.randint(3, 9)):
        where = rnd.choice(DIRS)
        kind = rnd.random()
        if kind < 0.45:
            files[f"{where}j{i}.yml"] = f"command: echo {i}\nvars:\n  - {{name: v, default: x{i}}}\n"
        elif kind < 0.7:
            files[f"{where}s{i}.yaml"] = f"script: {json.dumps(rnd.choice(SCRIPTS))}\n"
        elif kind < 0.8:
            files[f"{where}j{i}.json"] = json.dumps({"command": f"echo {i}"})
        elif kind < 0.9:
            files[f"{where}bad{i}.yml"] = rnd.choice(["command: [unclosed\n", "comand: x\n", "", "[1, 2]\n"])
        else:
            files[f"{where}data{i}.txt"] = "data\n"
    if rnd.random() < 0.3:
        files["d/x.yml"] = "command: echo x\n"
    repo.write(files)
    os.chmod(root / "scripts/noexec.sh", 0o644)
    if rnd.random() < 0.5:
        os.chmod(root / "tools/tool.sh", 0o755)
    links = {"scripts/out.sh": "/bin/true", "scripts/up.sh": "../a.yml", "scripts/inner.sh": "sub/run.sh",
             "scripts/loop.sh": "loop.sh", "scripts/dir.sh": "sub", "scripts/viatools.sh": "../tools/tool.sh",
             "out": rnd.choice(["/etc", "..", "d"]), "loop1": "loop2", "loop2": "loop1",
             "chain1": rnd.choice(["chain2", "out/hostname", "a.yml"]), "chain2": "a.yml"}
    for i in range(rnd.randint(2, 10)):
        where = rnd.choice(DIRS)
        name = rnd.choice([f"l{i}.yml", f"l{i}", f"l{i}.json", f"l{i}.sh"])
        links[where + name] = rnd.choice(TARGETS)
    if rnd.random() < 0.15:
        shutil.rmtree(root / "scripts")
        links["scripts"] = "tools"
    for rel, target in rnd.sample(sorted(links.items()), k=len(links)):
        _link(root, rel, target)
    git(root, "add", "-A")
    if rnd.random() < 0.2:   # a submodule entry: git leaves an empty directory
        head = git(root, "rev-parse", "HEAD") if (root / ".git/refs/heads/main").exists() else None
        if head:
            git(root, "update-index", "--add", "--cacheinfo", f"160000,{head},sub.yml")
    git(root, "commit", "-q", "--allow-empty", "-m", "random")
    return git(root, "rev-parse", "HEAD")


@pytest.mark.parametrize("seed", range(6))
def test_objects_and_snapshots_agree_on_random_trees(tmp_path, seed):
    rnd = random.Random(seed)
    repo = JobRepo(tmp_path / "jobs")
    chained = _snapshots(tmp_path / "chained", repo)   # each snapshot made from the one before
    previous = None
    for _ in range(6):
        commit = _random_commit(repo, rnd)
        fresh = _snapshots(tmp_path / f"fresh-{commit[:8]}", repo)
        snap_jobs, snap_errors, link_errors = _from_snapshot(fresh, commit)
        tree_jobs, tree_errors, tree = _from_objects(fresh, commit)
        assert tree_errors == snap_errors
        assert tree.link_errors == sorted(link_errors)
        _same_jobs(tree_jobs, snap_jobs)
        inc_jobs, inc_errors, _ = _from_snapshot(chained, commit, previous)
        assert inc_errors == snap_errors
        _same_jobs(inc_jobs, snap_jobs)
        assert _listing(chained.path(commit)) == _listing(fresh.path(commit))
        previous = commit


def _listing(root: Path) -> list:
    """Every path under ``root`` with its kind, target or content and mode."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out.append((rel, "link", os.readlink(path)))
            elif os.path.isdir(path):
                out.append((rel, "dir", oct(os.stat(path).st_mode & 0o777)))
            else:
                out.append((rel, "file", Path(path).read_bytes(), oct(os.stat(path).st_mode & 0o777)))
    return sorted(out)


def test_a_symlink_leaving_and_a_missing_script_are_reported_alike(tmp_path):
    repo = JobRepo(tmp_path / "jobs")
    repo.write({"ok.yml": "command: echo ok\n", "gone.yml": "script: nowhere.sh\n",
                "scripts/real.sh": "#!/bin/sh\n"})
    (repo.root / "bin").mkdir()
    (repo.root / "bin" / "passwd").symlink_to("/etc/passwd")
    (repo.root / "etc.yml").symlink_to("../../etc/hostname")
    (repo.root / "via.yml").symlink_to("bin/passwd/../../ok.yml")
    commit = repo.commit({})
    snaps = _snapshots(tmp_path / "snapshots", repo)
    tree_jobs, tree_errors, _ = _from_objects(snaps, commit)
    snap_jobs, snap_errors, _ = _from_snapshot(snaps, commit)
    assert tree_errors == snap_errors == [
        ("bin/passwd", "symlink to '/etc/passwd' leaves the repository"),
        ("etc.yml", "symlink to '../../etc/hostname' leaves the repository"),
        ("gone.yml", "script: 'nowhere.sh' does not exist under scripts/"),
        ("via.yml", "symlink to 'bin/passwd/../../ok.yml' leaves the repository"),
    ]
    _same_jobs(tree_jobs, snap_jobs)
    assert sorted(tree_jobs) == ["ok"]


def test_symlink_chains_stop_where_the_kernel_stops(tmp_path):
    repo = JobRepo(tmp_path / "jobs")
    repo.write({"target.yml": "command: echo t\n"})
    for n, prefix in ((40, "ok"), (41, "far")):
        for i in range(n):
            os.symlink(f"{prefix}{i + 1}.yml" if i < n - 1 else "target.yml", repo.root / f"{prefix}{i}.yml")
    commit = repo.commit({})
    snaps = _snapshots(tmp_path / "snapshots", repo)
    tree_jobs, tree_errors, _ = _from_objects(snaps, commit)
    snap_jobs, snap_errors, _ = _from_snapshot(snaps, commit)
    assert tree_errors == snap_errors
    assert ("far0.yml", "cannot read the file: Too many levels of symbolic links") in tree_errors
    assert "ok0" in tree_jobs and "ok1" in tree_jobs
    _same_jobs(tree_jobs, snap_jobs)


def test_a_large_file_is_refused_without_being_held(tmp_path):
    repo = JobRepo(tmp_path / "jobs")
    commit = repo.commit({"huge.yml": b"command: echo " + b"a" * (2 << 20) + b"\n",
                          "ok.yml": "command: echo ok\n"})
    snaps = _snapshots(tmp_path / "snapshots", repo)
    seen = []

    def reader(oids, limit):
        blobs = snaps.read_blobs(oids, limit)
        seen.extend(size for size, data in blobs.values() if data is None)
        return blobs
    found, errors = jobmodel.load_tree(snaps.tree(commit), reader)
    assert list(found) == ["ok"] and seen == [(2 << 20) + 15]
    assert errors == [("huge.yml", f"the file is {(2 << 20) + 15} bytes; job files are limited to "
                                   f"{jobmodel.MAX_JOB_FILE_BYTES} bytes")]


def test_unchanged_blobs_are_not_read_again(tmp_path):
    repo = JobRepo(tmp_path / "jobs")
    first = repo.commit({f"j{i}.yml": f"command: echo {i}\n" for i in range(20)})
    snaps = _snapshots(tmp_path / "snapshots", repo)
    cache_file = tmp_path / "job-cache.pickle"
    cache = ParseCache(cache_file)
    read = []

    def reader(oids, limit):
        read.extend(oids)
        return snaps.read_blobs(oids, limit)
    found, errors = jobmodel.load_tree(snaps.tree(first), reader, cache=cache)
    assert len(found) == 20 and errors == [] and len(read) == 20
    cache.save()
    second = repo.commit({"j3.yml": "command: echo changed\n", "j4.yml": "bogus: 1\n"})
    read.clear()
    cache = ParseCache(cache_file)   # a restart: what the file holds
    found, errors = jobmodel.load_tree(snaps.tree(second), reader, cache=cache)
    assert len(read) == 2 and cache.hits == 18
    assert found["j3"].command == "echo changed" and "j4" not in found and errors[0][0] == "j4.yml"
    read.clear()
    found, errors = jobmodel.load_tree(snaps.tree(second), reader, cache=cache)   # a sync: the same tree
    assert read == [git(repo.root, "rev-parse", f"{second}:j4.yml")]   # only the broken file is parsed again


def test_a_tree_git_cannot_write_is_left_to_the_checkout(tmp_path):
    repo = JobRepo(tmp_path / "jobs")
    repo.commit({"a.yml": "command: echo a\n"})
    empty = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=repo.root, input=b"", check=True,
                           capture_output=True, env=GIT_ENV).stdout.decode().strip()
    git(repo.root, "update-index", "--add", "--cacheinfo", f"120000,{empty},empty.yml")
    git(repo.root, "commit", "-q", "-m", "an empty symlink")
    snaps = _snapshots(tmp_path / "snapshots", repo)
    with pytest.raises(TreeError):
        snaps.tree(git(repo.root, "rev-parse", "HEAD"))


def test_the_tree_model_answers_like_the_file_system(tmp_path):
    """Spot checks of Tree against the snapshot it models."""
    repo = JobRepo(tmp_path / "jobs")
    repo.write({"a.yml": "command: echo a\n", "d/e/f.txt": "f\n", "scripts/run.sh": "#!/bin/sh\n"})
    for rel, target in {"up": "d/e/..", "file_dir": "a.yml/", "loop": "loop", "abs": "/tmp",
                        "d/e/back": "../../a.yml", "d/out": "../../x"}.items():
        os.symlink(target, repo.root / rel)
    commit = repo.commit({})
    snaps = _snapshots(tmp_path / "snapshots", repo)
    snaps.ensure(commit)
    root = snaps.path(commit)
    tree = snaps.tree(commit)
    for rel in ("up", "file_dir", "loop", "d/e/back", "a.yml", "d", "d/e/f.txt", "nothing", "a.yml/x",
                "up/e/f.txt", "scripts/run.sh", "abs", "d/out"):
        try:
            os.stat(root / rel)
            expected = "dir" if os.path.isdir(root / rel) else "file"
        except OSError as e:
            expected = e.errno
        kind, error = tree.resolve(rel)
        assert (kind[0] if kind else error) == expected, rel
        real = os.path.realpath(root / rel)
        model = tree.realpath(rel)
        real_root = os.path.realpath(root)
        if real == real_root or real.startswith(real_root + "/"):
            assert Tree.relative(model) == ("" if real == real_root else os.path.relpath(real, real_root))
        else:
            assert not model.startswith("/\0/") and model != "/\0", rel
