"""One SIGTERM per run, however it is ended: terminate, time-out and a graceful stop each send one
to the job's tree, never one to the process group and again to the cgroup, and a time-out that
comes while a terminate's grace runs sends none. The job counts the SIGTERMs it gets: it blocks the
signal and takes each with ``sigtimedwait``, so none is lost in a handler."""
from __future__ import annotations

import shlex
import sys

import pytest

from overseer.store import Store

from ..waiting import wait_finished, wait_for
from .test_faults_tree import tree  # noqa: F401 - the fixture: cgroup and process-group paths

pytestmark = pytest.mark.slow

# Counts SIGTERMs: the first may take a minute to come; after each, AFTER seconds more for another
# (the tree fixture's kill_grace is 1 s).
COUNTER = """
import os, signal, sys
try:  # woken at once by a signal, ahead of the sender: a second signal cannot merge with the first
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
except OSError:
    pass
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
print("ready", flush=True)
count = 0
while signal.sigtimedwait([signal.SIGTERM], float(sys.argv[1]) if count else 60) is not None:
    count += 1
    print("TERM", count, flush=True)
"""


def counter(after: float) -> str:
    return f"exec {shlex.quote(sys.executable)} -c {shlex.quote(COUNTER)} {after}"


def _ready(system, ident):
    wait_for(lambda: system.store.read_output("count", ident, "stdout").startswith(b"ready"), 30,
             "the job to be ready", store=system.store)


def _terms(system, ident):
    return system.store.read_output("count", ident, "stdout").count(b"TERM")


def test_terminate_sends_one_sigterm(tree):  # noqa: F811
    s = tree({"count.yml": {"command": counter(0.5)}})
    for ident in (1, 2, 3):  # the doubled signal came in some runs only: a few of them
        assert s.trigger("count", {})["id"] == ident
        _ready(s, ident)
        s.create_event("count", ident, "terminate", "test")
        done = wait_finished(s, "count", ident, timeout=60)
        assert done["exit_code"] == 0, done
        assert _terms(s, ident) == 1, s.store.read_output("count", ident, "stdout")


def test_a_time_out_during_a_terminates_grace_sends_no_second_sigterm(system_factory):
    s = system_factory({"count.yml": {"command": counter(5), "timeout": 3}}, execution={"kill_grace": 10})
    s.trigger("count", {})
    _ready(s, 1)
    s.create_event("count", 1, "terminate", "test")
    done = wait_finished(s, "count", 1, timeout=60)
    names = [e["name"] for e in done["events"]]
    assert "terminate" in names and "time-out" in names  # the time-out came within the 5 s it waited
    assert _terms(s, 1) == 1, s.store.read_output("count", 1, "stdout")
    assert done["signal"] is None  # it ended by itself, before kill_grace: no SIGKILL


def test_a_time_out_sends_one_sigterm(tree):  # noqa: F811
    s = tree({"count.yml": {"command": counter(0.5), "timeout": 1}})
    for ident in (1, 2, 3):
        s.trigger("count", {})
        done = wait_finished(s, "count", ident, timeout=60)
        assert done["status"] == "time-out"
        assert _terms(s, ident) == 1, s.store.read_output("count", ident, "stdout")


def test_a_graceful_stop_sends_one_sigterm(tree):  # noqa: F811
    s = tree({"count.yml": {"command": counter(0.5)}})
    s.trigger("count", {})
    _ready(s, 1)
    s.stop()
    with Store(s.config.data_path / "store") as store:
        done = store.get_execution("count", 1)
        assert done["state"] == "finished" and done["exit_code"] == 0, done
        out = store.read_output("count", 1, "stdout")
        assert out.count(b"TERM") == 1, out
