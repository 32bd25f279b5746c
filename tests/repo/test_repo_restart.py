"""The job repository across restarts and misconfiguration: a restart while the remote is away
serves what the server served before, a job broken at the head keeps its last valid definition
across a restart and says it is stale, and a branch that does not exist is named with those that
do. Real ``overseer serve`` processes, real git repositories and a real bare remote."""
from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import JobRepo, git
from ..serving import Server
from ..waiting import wait_for

pytestmark = pytest.mark.slow

BROKEN = "command: [unclosed\n"


def _push(work: JobRepo, bare: Path) -> str:
    if not bare.exists():
        git(work.root.parent, "init", "-q", "--bare", str(bare))
    git(work.root, "push", "-q", "--force", str(bare), "main")
    return git(work.root, "rev-parse", "HEAD")


def _synced(server: Server, commit: str) -> dict:
    """POST /repo/sync, then GET /repo once it serves ``commit`` with no sync error."""
    assert server.req("POST", "/repo/sync").status_code == 202
    return wait_for(lambda: (info := server.get("/repo").json())["commit"] == commit
                    and "sync_error" not in info and info, 30, f"the sync of {commit[:12]}")


def _output(server: Server, job: str) -> bytes:
    run = server.run(job)
    done = server.wait(job, run["id"])
    assert done["status"] == "complete", done
    return server.get(f"/jobs/{job}/{run['id']}/stdout").content


def _jobs(server: Server) -> dict:
    return {j["name"]: j for j in server.get("/jobs").json()["jobs"]}


def test_a_restart_with_the_remote_away_serves_the_last_synced_commit(tmp_path):
    work, bare = JobRepo(tmp_path / "work"), tmp_path / "remote.git"
    files = {"a.yml": {"command": "echo one"},
             "tick.yml": {"command": "true", "schedule": [{"frequency": "* * * * * *"}]}}
    server = Server(tmp_path / "s", files, {"repository": {"url": str(bare)}}, repo=work)
    _push(work, bare)
    server.start()
    try:
        work.commit({"a.yml": {"command": "echo two"}})
        last = _synced(server, _push(work, bare))
        assert server.stop() == 0
        away = bare.rename(tmp_path / "moved-away.git")
        server.start()
        info = server.get("/repo").json()
        assert info["commit"] == last["commit"] and info["synced_at"] == last["synced_at"]
        assert "does not appear to be a git repository" in info["sync_error"], info
        assert set(_jobs(server)) == {"a", "tick"}
        assert _output(server, "a") == b"two\n"
        assert server.get("/jobs/a").json()["commit"] == last["commit"]
        ticks = len(server.get("/jobs/tick?limit=1000").json()["executions"])
        wait_for(lambda: len(server.get("/jobs/tick?limit=1000").json()["executions"]) > ticks, 20,
                 "the schedule to fire in this life of the server")
        wait_for(lambda: server.log().count(" listening on ") == 2, 10, "the start's log lines")
        lines = [line for line in server.log().splitlines() if " ERROR " in line and "sync failed" in line]
        assert lines and f"serving the 2 jobs of {last['commit'][:12]}, as before the restart" in lines[-1]
        # the remote comes back with a new commit: the next sync takes it
        away.rename(bare)
        work.commit({"a.yml": {"command": "echo three"}})
        _synced(server, _push(work, bare))
        assert _output(server, "a") == b"three\n"
        assert server.stop() == 0
        assert "Traceback" not in server.log()
    finally:
        server.kill()


def test_a_job_broken_at_the_head_stays_at_its_last_valid_definition_across_restarts(tmp_path):
    work, bare = JobRepo(tmp_path / "work"), tmp_path / "remote.git"
    server = Server(tmp_path / "s", {"a.yml": {"command": "echo good"}, "b.yml": {"command": "echo b"}},
                    {"repository": {"url": str(bare)}}, repo=work)
    good = _push(work, bare)
    server.start()
    try:
        work.commit({"a.yml": BROKEN})
        bad = _push(work, bare)
        _synced(server, bad)
        assert server.stop() == 0
        server.start()                              # the remote still has the broken head
        assert server.get("/repo").json()["commit"] == bad
        job = server.get("/jobs/a").json()
        assert job["commit"] == good and job["stale"]["commit"] == good, job
        assert _output(server, "a") == b"good\n"
        server.kill()                               # a crash, with the remote away
        away = bare.rename(tmp_path / "moved-away.git")
        server.start()
        assert server.get("/jobs/a").json()["commit"] == good
        assert _output(server, "a") == b"good\n" and _output(server, "b") == b"b\n"
        away.rename(bare)
        work.commit({"a.yml": {"command": "echo fixed"}})
        _synced(server, _push(work, bare))
        assert "stale" not in server.get("/jobs/a").json() and _output(server, "a") == b"fixed\n"
        assert server.stop() == 0
    finally:
        server.kill()


def test_a_job_kept_at_an_older_definition_says_it_is_stale(tmp_path):
    server = Server(tmp_path / "s", {"a.yml": {"command": "echo good"}, "b.yml": {"command": "echo b"}})
    server.start()
    try:
        good = server.get("/repo").json()["commit"]
        bad = server.repo.commit({"a.yml": BROKEN, "b.yml": {"command": "echo b2"}})
        _synced(server, bad)
        error = {e["file"]: e["error"] for e in server.get("/repo").json()["errors"]}["a.yml"]
        job = server.get("/jobs/a").json()
        assert job["stale"] == {"error": error, "commit": good} and job["commit"] == good
        listed = _jobs(server)
        assert listed["a"]["stale"] == {"error": error, "commit": good}
        assert "stale" not in listed["b"] and "stale" not in server.get("/jobs/b").json()
        assert _output(server, "a") == b"good\n"
        fixed = server.repo.commit({"a.yml": {"command": "echo fixed"}})
        _synced(server, fixed)
        assert "stale" not in server.get("/jobs/a").json() and "stale" not in _jobs(server)["a"]
        assert server.stop() == 0
    finally:
        server.kill()


def test_a_branch_that_does_not_exist_is_named_with_the_branches_that_do(tmp_path):
    server = Server(tmp_path / "s", {"a.yml": {"command": "echo a"}})   # configured: branch main
    git(server.repo.root, "branch", "-m", "main", "master")           # as a `git init` may make it
    git(server.repo.root, "branch", "dev")
    server.start()
    try:
        info = server.get("/repo").json()
        expected = "branch 'main' does not exist in the repository; its branches: dev, master"
        assert info["commit"] is None and info["sync_error"] == expected, info
        assert server.get("/jobs").json() == {"jobs": []}
        wait_for(lambda: " listening on " in server.log(), 10, "the start's log lines")
        errors = [line for line in server.log().splitlines() if " ERROR " in line]
        assert len(errors) == 1 and expected in errors[0] and "no jobs are served" in errors[0], errors
        assert " WARNING " not in server.log()
        git(server.repo.root, "branch", "main", "master")
        _synced(server, git(server.repo.root, "rev-parse", "main"))
        assert _output(server, "a") == b"a\n"
        assert server.stop() == 0
    finally:
        server.kill()
