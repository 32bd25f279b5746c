"""A running System loads a commit's jobs before its snapshot is checked out; runs of that commit
wait for the snapshot, and fail naming the commit when it does not come."""
from __future__ import annotations

import threading
import time

import pytest

from ..conftest import make_config
from ..waiting import wait_finished, wait_for


class Gate:
    """The catalog's checkout hook: holds each checkout until opened (or raises, once)."""

    def __init__(self):
        self.opened = threading.Event()
        self.held: list[str] = []
        self.fail: Exception | None = None

    def __call__(self, commit: str) -> None:
        self.held.append(commit)
        if self.fail is not None:
            fail, self.fail = self.fail, None
            raise fail
        assert self.opened.wait(60), "the test never opened the gate"


@pytest.fixture
def held_system(tmp_path, job_repo):
    """``make(files, gate)``: a System whose snapshot checkouts wait for ``gate``."""
    from overseer.actors.system import System

    made = []

    def make(files, gate, **overrides):
        job_repo.commit(files, "initial")
        system = System(make_config(tmp_path, job_repo, **overrides))
        system.catalog.checkout_hook = gate
        made.append((system, gate))
        return system.start()

    yield make
    for system, gate in made:
        gate.opened.set()
        system.stop()


def _trigger_aside(system, job: str) -> threading.Thread:
    """Trigger ``job`` on a thread of its own: the thread that admits a run may be the one that
    waits for its snapshot."""
    thread = threading.Thread(target=system.trigger, args=(job, {}), daemon=True)
    thread.start()
    wait_for(lambda: system.store.get_execution(job, 1), what=f"{job}/1 to be stored")
    return thread


def _stays_queued(system, job: str, ident: int, seconds: float = 0.5) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        record = system.execution(job, ident)
        assert record["state"] == "queued" and not record.get("started_at"), record
        time.sleep(0.02)


def test_jobs_load_before_the_snapshot_and_a_run_waits_for_it(held_system):
    gate = Gate()
    files = {f"team/j{i}.yml": {"command": "cat data.txt"} for i in range(30)}
    s = held_system({**files, "data.txt": "from the snapshot\n"}, gate)
    commit = s.repo_info()["commit"]
    assert len(s.jobs()) == 30 and s.repo_info()["errors"] == []
    wait_for(lambda: gate.held == [commit], what="the checkout to be held")
    assert not s.catalog.snapshots.joinpath(commit).exists()   # loaded, not checked out
    trigger = _trigger_aside(s, "team.j0")
    _stays_queued(s, "team.j0", 1)
    gate.opened.set()
    trigger.join(30)
    done = wait_finished(s, "team.j0", 1)
    assert done["commit"] == commit and done["exit_code"] == 0
    assert s.store.read_output("team.j0", 1, "stdout") == b"from the snapshot\n"


def test_a_run_that_waits_too_long_for_its_snapshot_could_not_start(held_system):
    gate = Gate()
    s = held_system({"a.yml": {"command": "true"}}, gate)
    s.catalog.snapshot_wait = 0.3
    commit = s.repo_info()["commit"]
    run = s.trigger("a", {})
    done = wait_finished(s, "a", run["id"])
    cause = done["events"][-1]["cause"]
    assert cause == f"could not start: the snapshot of commit {commit} is not ready after 0.3 s"
    gate.opened.set()
    wait_for(lambda: s.catalog.snapshots.joinpath(commit).is_dir(), what="the snapshot")
    again = s.trigger("a", {})
    assert wait_finished(s, "a", again["id"])["exit_code"] == 0


def test_a_snapshot_that_cannot_be_made_fails_its_runs_until_a_sync_makes_it(held_system):
    gate = Gate()
    gate.fail = OSError("no space left on the device")
    gate.opened.set()
    s = held_system({"a.yml": {"command": "echo made"}}, gate)
    commit = s.repo_info()["commit"]
    wait_for(lambda: "sync_error" in s.repo_info(), what="the failed checkout to be reported")
    assert "no space left" in s.repo_info()["sync_error"] and [j.name for j in s.jobs()] == ["a"]
    run = s.trigger("a", {})
    cause = wait_finished(s, "a", run["id"])["events"][-1]["cause"]
    assert cause.startswith(f"could not start: the snapshot of commit {commit} could not be made: ")
    s.sync()   # the same commit, made again
    assert "sync_error" not in s.repo_info()
    wait_for(lambda: gate.held == [commit, commit], what="the second checkout")
    again = s.trigger("a", {})
    assert wait_finished(s, "a", again["id"])["exit_code"] == 0
    assert s.store.read_output("a", again["id"], "stdout") == b"made\n"


def test_a_broken_commit_keeps_the_last_valid_definition_and_its_snapshot(held_system, job_repo):
    gate = Gate()
    gate.opened.set()
    s = held_system({"a.yml": {"command": "echo good"}, "b.yml": {"command": "echo b"}}, gate)
    good = s.repo_info()["commit"]
    wait_for(lambda: s.catalog.snapshots.joinpath(good).is_dir(), what="the first snapshot")
    gate.opened.clear()
    broken = job_repo.commit({"a.yml": "command: [unclosed\n", "b.yml": {"command": "echo b2"}})
    s.sync()
    info = s.repo_info()
    assert info["commit"] == broken and [e["file"] for e in info["errors"]] == ["a.yml"]
    assert s.job("a").commit == good and s.job("b").commit == broken
    # a's definition is from a commit whose snapshot is complete: it runs now, b waits for its own
    a_run = s.trigger("a", {})
    assert wait_finished(s, "a", a_run["id"])["commit"] == good
    assert s.store.read_output("a", a_run["id"], "stdout") == b"good\n"
    trigger = _trigger_aside(s, "b")
    _stays_queued(s, "b", 1, 0.3)
    gate.opened.set()
    trigger.join(30)
    assert wait_finished(s, "b", 1)["commit"] == broken
    assert s.store.read_output("b", 1, "stdout") == b"b2\n"


def test_the_snapshot_a_checkout_starts_from_is_kept_until_it_is_done(held_system, job_repo):
    gate = Gate()
    gate.opened.set()
    s = held_system({"a.yml": {"command": "cat f.txt"}, "f.txt": "one\n"}, gate)
    first = s.repo_info()["commit"]
    wait_for(lambda: s.catalog.snapshots.joinpath(first).is_dir(), what="the first snapshot")
    gate.opened.clear()
    second = job_repo.commit({"f.txt": "two\n"})
    s.sync()   # every job moves to the second commit; its snapshot is made from the first one
    assert s.job("a").commit == second
    assert s.catalog.snapshots.joinpath(first).is_dir()
    gate.opened.set()
    wait_for(lambda: s.catalog.snapshots.joinpath(second).is_dir(), what="the second snapshot")
    third = job_repo.commit({"f.txt": "three\n"})
    s.sync()
    run = s.trigger("a", {})
    assert wait_finished(s, "a", run["id"])["commit"] == third
    assert s.store.read_output("a", run["id"], "stdout") == b"three\n"
    wait_for(lambda: not s.catalog.snapshots.joinpath(first).exists(), what="the unused snapshot removed")


def test_the_catalog_tells_when_a_snapshot_is_ready(tmp_path):
    from concurrent.futures import Future

    from overseer.repo.catalog import Catalog

    catalog = Catalog(tmp_path / "snapshots")
    calls = []
    catalog.when_snapshot_ready("a" * 40, lambda: calls.append("known"))
    assert calls == ["known"] and catalog.snapshot_ready("a" * 40)
    made: Future = Future()
    catalog.expect("b" * 40, made)
    catalog.when_snapshot_ready("b" * 40, lambda: calls.append("made"))
    assert calls == ["known"] and not catalog.snapshot_ready("b" * 40)
    made.set_result([])
    assert calls == ["known", "made"] and catalog.snapshot_ready("b" * 40)
    assert catalog.snapshot("b" * 40) == tmp_path / "snapshots" / ("b" * 40)
    failed: Future = Future()
    catalog.expect("c" * 40, failed)
    failed.set_exception(OSError("disk full"))
    with pytest.raises(OSError, match=f"the snapshot of commit {'c' * 40} could not be made: disk full"):
        catalog.snapshot("c" * 40)
