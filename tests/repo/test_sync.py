"""RepoSync end to end: real git commits, snapshots, last good definitions."""
from __future__ import annotations

from ..conftest import git
from ..waiting import wait_finished, wait_for


def test_sync_adds_changes_and_removes_jobs(system_factory, job_repo):
    s = system_factory({"a.yml": {"command": "echo a1"}, "b.yml": {"command": "echo b"}})
    first = s.repo_info()["commit"]
    assert {j.name for j in s.jobs()} == {"a", "b"}
    second = job_repo.commit({"a.yml": {"command": "echo a2"}, "b.yml": None,
                              "team/c.yaml": {"command": "echo c"}})
    s.sync()
    assert s.repo_info()["commit"] == second != first
    assert {j.name for j in s.jobs()} == {"a", "team.c"}
    s.trigger("a", {})
    done = wait_finished(s, "a", 1)
    assert done["commit"] == second
    assert s.store.read_output("a", 1, "stdout") == b"a2\n"


def test_broken_commit_keeps_last_good_definition(system_factory, job_repo):
    s = system_factory({"a.yml": {"command": "echo good"}, "b.yml": {"command": "echo b"}})
    good = s.repo_info()["commit"]
    job_repo.commit({"a.yml": "command: [unclosed\n", "b.yml": {"command": "echo b2"},
                     "new.yml": {"comand": "typo"}})
    s.sync()
    info = s.repo_info()
    files = {e["file"]: e["error"] for e in info["errors"]}
    assert set(files) == {"a.yml", "new.yml"} and "comand" in files["new.yml"]
    assert {j.name for j in s.jobs()} == {"a", "b"}
    assert s.job("a").commit == good  # the last valid definition, from its own commit
    s.trigger("a", {})
    assert wait_finished(s, "a", 1)["commit"] == good
    assert s.store.read_output("a", 1, "stdout") == b"good\n"
    fixed = job_repo.commit({"a.yml": {"command": "echo fixed"}, "new.yml": None})
    s.sync()
    assert s.repo_info()["errors"] == [] and s.job("a").commit == fixed


def test_running_job_keeps_its_commit_files(system_factory, job_repo, tmp_path):
    gate = tmp_path / "gate"
    wait_gate = f"while [ ! -e {gate} ]; do sleep 0.02; done"
    s = system_factory({"data.txt": "version one\n", "reader.yml": {"command": f"{wait_gate}; cat data.txt"}})
    s.trigger("reader", {})
    wait_for(lambda: s.execution("reader", 1)["state"] == "running", store=s.store)
    job_repo.commit({"data.txt": "version two\n"})
    s.sync()
    gate.write_text("go")
    wait_finished(s, "reader", 1)
    assert s.store.read_output("reader", 1, "stdout") == b"version one\n"
    s.trigger("reader", {})
    wait_finished(s, "reader", 2)
    assert s.store.read_output("reader", 2, "stdout") == b"version two\n"


def test_force_push_and_unreachable_remote(system_factory, job_repo):
    s = system_factory({"a.yml": {"command": "echo one"}})
    job_repo.commit({"a.yml": {"command": "echo two"}})
    s.sync()
    # rewrite history: reset to the first commit and commit something else
    git(job_repo.root, "reset", "-q", "--hard", "HEAD~1")
    rewritten = job_repo.commit({"a.yml": {"command": "echo rewritten"}})
    s.sync()
    assert s.repo_info()["commit"] == rewritten
    # the remote disappears: the last good state stays, the error is reported
    job_repo.root.rename(job_repo.root.with_name("moved"))
    s.sync()
    info = s.repo_info()
    assert info["commit"] == rewritten and "sync_error" in info
    assert [j.name for j in s.jobs()] == ["a"]


def test_symlink_leaving_repository_is_reported(system_factory, job_repo):
    (job_repo.root / "bin").mkdir()
    (job_repo.root / "bin" / "passwd").symlink_to("/etc/passwd")
    (job_repo.root / "etc.yml").symlink_to("/etc/hostname")
    s = system_factory({"ok.yml": {"command": "true"}})
    files = {e["file"] for e in s.repo_info()["errors"]}
    assert {"bin/passwd", "etc.yml"} <= files
    assert [j.name for j in s.jobs()] == ["ok"]
    snapshot = s.catalog.snapshot(s.repo_info()["commit"])
    assert not (snapshot / "bin" / "passwd").exists() and not (snapshot / "bin" / "passwd").is_symlink()


def test_commit_git_cannot_write_out_keeps_the_last_good_state(system_factory, job_repo, tmp_path):
    """A symlink target of 2 MiB: too long for the listing of git's objects and for the disk
    (ENAMETOOLONG), so the sync fails as the commit's fault, naming the file, and the jobs stay."""
    s = system_factory({"a.yml": {"command": "echo one"}})
    good = s.repo_info()["commit"]
    target = tmp_path / "target"
    target.write_bytes(b"x" * (2 << 20))
    blob = git(job_repo.root, "hash-object", "-w", str(target))
    job_repo.write({"b.yml": {"command": "echo b"}})
    git(job_repo.root, "add", "-A")
    git(job_repo.root, "update-index", "--add", "--cacheinfo", f"120000,{blob},longlink")
    git(job_repo.root, "commit", "-q", "-m", "a symlink too long to write")
    bad = git(job_repo.root, "rev-parse", "HEAD")
    s.sync()
    info = s.repo_info()
    assert info["commit"] == good and [j.name for j in s.jobs()] == ["a"]
    error = info["sync_error"]
    assert error.startswith(f"cannot check out {bad[:12]}: ") and "longlink" in error, error
    s.trigger("a", {})
    assert s.store.read_output("a", wait_finished(s, "a", 1)["id"], "stdout") == b"one\n"
    git(job_repo.root, "rm", "-q", "--cached", "longlink")
    fixed = job_repo.commit({}, "the symlink removed")
    s.sync()
    info = s.repo_info()
    assert info["commit"] == fixed and "sync_error" not in info
    assert [j.name for j in s.jobs()] == ["a", "b"]


def test_activation_survives_restart_and_sync(system_factory, job_repo, tmp_path):
    from overseer.actors.system import System

    s = system_factory({"a.yml": {"command": "true"}})
    s.set_active("a", False)
    job_repo.commit({"a.yml": {"command": "true", "description": "changed"}})
    s.sync()
    assert not s.is_active("a")
    config = s.config
    s.stop()
    s2 = System(config).start()
    try:
        assert not s2.is_active("a")
    finally:
        s2.stop()


def test_snapshots_follow_each_commit_exactly(system_factory, job_repo):
    import os

    s = system_factory({"a.yml": {"command": "true"}, "keep.txt": "same\n", "gone.txt": "x\n",
                        "scripts/run.sh": "#!/bin/sh\necho one\n", "dir/f.txt": "f\n",
                        "r.yml": {"script": "run.sh"}})
    (job_repo.root / "link").symlink_to("/etc")
    job_repo.write({"dir/f.txt": None})
    (job_repo.root / "dir").rmdir()
    second = job_repo.commit({"gone.txt": None, "scripts/run.sh": "#!/bin/sh\necho two\n",
                              "new/deep/n.txt": "n\n", "dir": "now a file\n"})
    s.sync()
    snap = s.catalog.snapshot(second)
    first = s.catalog.snapshot(s.job("a").commit)
    assert (snap / "keep.txt").read_text() == "same\n" and not (snap / "gone.txt").exists()
    assert (snap / "new/deep/n.txt").read_text() == "n\n" and (snap / "dir").read_text() == "now a file\n"
    assert (snap / "scripts/run.sh").read_text() == "#!/bin/sh\necho two\n"
    assert os.access(snap / "scripts/run.sh", os.X_OK) and not (snap / "link").is_symlink()
    assert ("link", "symlink to '/etc' leaves the repository") in [
        (e["file"], e["error"]) for e in s.repo_info()["errors"]]
    assert not (os.stat(snap / "keep.txt").st_mode & 0o222) and not (os.stat(snap).st_mode & 0o222)
    s.trigger("r", {})
    assert wait_finished(s, "r", 1)["commit"] == second
    assert s.store.read_output("r", 1, "stdout") == b"two\n"
    wait_for(lambda: not first.exists() or s.job("a").commit == second, what="old snapshot removed")
    # a restart reports the dropped symlink again
    config = s.config
    s.stop()
    from overseer.actors.system import System
    s2 = System(config).start()
    try:
        assert "link" in {e["file"] for e in s2.repo_info()["errors"]}
        job_repo.commit({"keep.txt": "changed\n"})
        s2.sync()  # built from the previous snapshot: its report is carried over
        assert "link" in {e["file"] for e in s2.repo_info()["errors"]}
        assert (s2.catalog.snapshot(s2.repo_info()["commit"]) / "keep.txt").read_text() == "changed\n"
    finally:
        s2.stop()
