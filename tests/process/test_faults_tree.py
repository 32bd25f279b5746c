"""Killing the whole tree of a job (case 4), with real processes, on both paths: each execution in
its own cgroup v2 (``cgroup.kill``) where one is writable, and the process group alone
(``OVERSEER_NO_CGROUPS=1``), where the server is the child subreaper of its jobs as ``overseer
serve`` is (``overseer/orphans.py``).

What is reached (docs/guarantees.rst):

==========================================  ==========  ======================================
the job leaves behind                       cgroup      process group
==========================================  ==========  ======================================
a background child                          killed      killed
a child that ignores SIGTERM                killed      killed (SIGKILL)
a child that left the group with ``setsid`` killed      killed (SIGKILL, once the main ends)
==========================================  ==========  ======================================
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from overseer.actors.system import System

from overseer.process import cgroups

from ..conftest import make_config
from ..serving import alive
from ..waiting import wait_finished, wait_for

pytestmark = pytest.mark.slow


def _cgroup_mount():
    root = cgroups.CgroupRoot.find() if not os.environ.get("OVERSEER_NO_CGROUPS") else None
    if root is None:
        return None
    root.remove()
    return root.path.parent


CGROUP_MOUNT = _cgroup_mount()


@pytest.fixture(params=["cgroup", "process-group"])
def tree(request, monkeypatch, tmp_path, job_repo):
    """A System whose executions run in a cgroup each, or in their process group only (the System
    the child subreaper of its jobs, as ``overseer serve`` makes it)."""
    if request.param == "cgroup":
        if CGROUP_MOUNT is None:
            pytest.skip("no writable cgroup v2 hierarchy with cgroup.kill here")
        monkeypatch.delenv("OVERSEER_NO_CGROUPS", raising=False)
    else:
        monkeypatch.setenv("OVERSEER_NO_CGROUPS", "1")

    def make(files):
        job_repo.commit(files, "initial")
        system = System(make_config(tmp_path, job_repo, execution={"kill_grace": 1}), subreaper=True)
        request.addfinalizer(system.stop)
        system.start()
        assert (system.ctx.monitor.orphans is not None) == (request.param == "process-group")
        assert (system.ctx.monitor.cgroup_root is not None) == (request.param == "cgroup")
        return system

    make.kind = request.param
    return make


def _pids(system, job, ident, count):
    """The pids the job printed, one per line."""
    out = wait_for(lambda: (o := system.store.read_output(job, ident, "stdout")).count(b"\n") >= count and o,
                   20, f"{count} pids from {job}/{ident}", store=system.store)
    return [int(line) for line in out.split()[:count]]


def _gone(pid):
    wait_for(lambda: not alive(pid), 10, f"pid {pid} to end")


def test_background_child_is_killed_when_the_job_ends(tree):
    s = tree({"bg.yml": {"command": "sleep 300 & echo $!"}})
    s.trigger("bg", {})
    (child,) = _pids(s, "bg", 1, 1)
    assert wait_finished(s, "bg", 1)["status"] == "complete"
    _gone(child)


def test_background_child_is_killed_on_terminate(tree):
    s = tree({"bg.yml": {"command": "sleep 300 & echo $!; echo $$; sleep 300"}})
    s.trigger("bg", {})
    child, main = _pids(s, "bg", 1, 2)
    s.create_event("bg", 1, "terminate", "test")
    done = wait_finished(s, "bg", 1)
    assert done["status"] == "fail" and done["signal"] == "SIGTERM"
    _gone(child)
    _gone(main)


def test_child_ignoring_sigterm_is_killed(tree):
    # the child ignores SIGTERM; the main process ignores it too, so only SIGKILL after kill_grace ends it
    # The trap comes first: the pid is printed only once both ignore it (a subshell keeps it).
    s = tree({"stubborn.yml": {"command": "trap '' TERM; (while :; do sleep 0.1; done) & echo $!; "
                                          "while :; do sleep 0.1; done"}})
    s.trigger("stubborn", {})
    (child,) = _pids(s, "stubborn", 1, 1)
    s.create_event("stubborn", 1, "terminate", "test")
    done = wait_finished(s, "stubborn", 1)
    assert done["status"] == "fail" and done["signal"] == "SIGKILL"
    _gone(child)


def test_child_ignoring_sigterm_after_the_main_process_ended(tree):
    s = tree({"stubborn.yml": {"command": "(trap '' TERM; while :; do sleep 0.1; done) & echo $!"}})
    s.trigger("stubborn", {})
    (child,) = _pids(s, "stubborn", 1, 1)
    assert wait_finished(s, "stubborn", 1)["status"] == "complete"
    _gone(child)


# The child reports its own pid and session id: it leads a session of its own.
ESCAPE = "setsid sh -c 'read -r _ _ _ _ _ sid _ < /proc/$$/stat; echo escaped $$ $sid; exec sleep 300' & "
# Wait until this shell is in its cgroup (the next tests check that no wait is needed).
IN_CGROUP = "while ! grep -q '^0::/overseer-' /proc/$$/cgroup; do sleep 0.01; done; "


def _escape(tree, request, end, first=""):
    command = first + ESCAPE + "echo main $$; " + ("sleep 0.5" if end == "exit" else "sleep 300")
    job = {"command": command}
    if end == "time-out":
        job["timeout"] = 1
    s = tree({"escape.yml": job})
    s.trigger("escape", {})
    out = wait_for(lambda: (o := s.store.read_output("escape", 1, "stdout")).count(b"\n") >= 2 and o, 20,
                   "the pids", store=s.store)
    lines = {line.split()[0]: [int(x) for x in line.split()[1:]] for line in out.splitlines()}
    (escaped, session), (main,) = lines[b"escaped"], lines[b"main"]
    request.addfinalizer(lambda: alive(escaped) and os.kill(escaped, 9))
    assert session == escaped != main
    if end in ("terminate", "kill"):
        s.create_event("escape", 1, end, "test")
    done = wait_finished(s, "escape", 1)
    assert done["status"] == {"exit": "complete", "terminate": "fail", "kill": "fail",
                              "time-out": "time-out"}[end]
    _gone(main)
    if tree.kind == "cgroup":
        # the run's cgroup is removed only once every process in it has ended
        cgroup_root = s.ctx.monitor.cgroup_root.path
        wait_for(lambda: not list(cgroup_root.glob("escape-1-*")), 10, "its cgroup removed")
        assert not alive(escaped), "the setsid child outlived the run's cgroup"
    else:  # handed to the server when the run's shell ended, and killed as the run's
        _gone(escaped)


@pytest.mark.parametrize("end", ["exit", "terminate", "kill", "time-out"])
def test_setsid_child_is_killed_through_the_cgroup_or_as_an_orphan(tree, request, end):
    _escape(tree, request, end, IN_CGROUP if tree.kind == "cgroup" else "")


@pytest.mark.parametrize("end", ["exit", "terminate"])
def test_setsid_child_forked_at_once(tree, request, end):
    # The job moves itself into its cgroup before its first command (job_process.entering): a child
    # forked at once is inside too, and reached.
    _escape(tree, request, end)


@pytest.mark.skipif(CGROUP_MOUNT is None, reason="no writable cgroup v2 hierarchy here")
def test_cgroups_of_a_killed_server_are_removed_at_the_next_start(monkeypatch, system_factory):
    monkeypatch.delenv("OVERSEER_NO_CGROUPS", raising=False)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = CGROUP_MOUNT / f"overseer-{gone.pid}"
    (stale / "job-1-abcdef").mkdir(parents=True)
    s = system_factory({"j.yml": {"command": "true"}})
    assert not stale.exists()
    live = s.ctx.monitor.cgroup_root.path
    assert live.is_dir()
    s.trigger("j", {})
    assert wait_finished(s, "j", 1)["status"] == "complete"
