"""Faults of the LMDB store (case 6): a full map, a follower held open while much output is
written and pruned, more readers than LMDB has reader slots, and stale reader slots left by a
killed process."""
from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from overseer.exceptions import StoreError
from overseer.store import Store

from ..serving import start_server
from ..waiting import wait_finished, wait_for

pytestmark = pytest.mark.slow


# -- a full map ----------------------------------------------------------------------------------

def test_full_map_grows_and_carries_on(monkeypatch, system_factory):
    """A real system whose store starts with a 1 MiB map: jobs writing 24 MB in all fill it again
    and again while they run; it grows, and every byte is kept."""
    from overseer.actors import system as system_module

    monkeypatch.setattr(system_module, "Store", functools.partial(Store, map_size=1 << 20))
    s = system_factory({"counter.yml": {"command": "seq 1 {{ n }}", "vars": [{"name": "n", "type": "int"}]}})
    for n in (1_000_000, 700_000, 600_000):
        s.trigger("counter", {"n": n})
    for ident, n in enumerate((1_000_000, 700_000, 600_000), 1):
        assert wait_finished(s, "counter", ident, 60)["status"] == "complete"
        expected = b"".join(b"%d\n" % i for i in range(1, n + 1))
        assert s.store.output_size("counter", ident, "stdout") == len(expected)
        assert s.store.read_output("counter", ident, "stdout", 0, len(expected)) == expected
    stats = s.store.stats()
    assert stats["map_growths"] >= 4 and stats["map_size"] >= 16 << 20, stats
    s.trigger("counter", {"n": 3})
    assert wait_finished(s, "counter", 4)["status"] == "complete"


# -- a follower held open -------------------------------------------------------------------------

HELD = 32_000_000  # more than the socket buffers of both ends hold: the server's send blocks

def test_a_stalled_follower_does_not_make_the_file_grow(tmp_path):
    """A client follows an execution's output and stops reading (its socket buffers fill, the
    server's write blocks) while 60 runs write 4 MB each and retention prunes all but two: the
    follower pins no pages, so the file stays the size of what is kept, not of what was written."""
    gate = tmp_path / "gate"
    files = {
        "held.yml": {"command": f"head -c {HELD} /dev/zero; while [ ! -e {gate} ]; do sleep 0.05; done; "
                                "echo end"},
        "churn.yml": {"command": "head -c 4000000 /dev/zero"},
    }
    server = start_server(tmp_path / "s", files, {"retention": {"executions_per_job": 2}})
    follower = socket.create_connection(("127.0.0.1", server.port))
    try:
        server.run("held")
        wait_for(lambda: int(server.req("HEAD", "/jobs/held/1/stdout").headers["Content-Length"]) == HELD,
                 30, "held's output")
        follower.sendall(b"GET /jobs/held/1/stdout?follow=true HTTP/1.1\r\nHost: localhost\r\n\r\n")
        received = bytearray(follower.recv(1024))
        assert received.startswith(b"HTTP/1.1 200")   # then it reads nothing for a while
        data_file = server.data / "store" / "data.mdb"
        churned = 0
        for _ in range(12):
            idents = [server.run("churn")["id"] for _i in range(5)]
            for ident in idents:  # finished, or finished and pruned already by a later create
                wait_for(lambda ident=ident: (r := server.get(f"/jobs/churn/{ident}")).status_code == 404
                         or r.json()["state"] == "finished", 30, f"churn/{ident} to finish")
                churned += 4_000_000
            assert server.execution("held", 1)["state"] == "running"
        # retention prunes at each create the finished runs beyond the newest two
        assert len(server.get("/jobs/churn?limit=100").json()["executions"]) <= 5
        size = os.path.getsize(data_file)
        assert size < 100 << 20, f"the file grew to {size >> 20} MiB while {churned >> 20} MiB were churned"
        # the follower, once it reads again, gets every byte and the end of the stream
        gate.write_text("go")
        follower.settimeout(30)
        while not received.endswith(b"0\r\n\r\n"):
            chunk = follower.recv(1 << 20)
            assert chunk, "connection closed before the end of the stream"
            received += chunk
        body = _dechunk(bytes(received).split(b"\r\n\r\n", 1)[1])
        assert len(body) == HELD + 4 and body.endswith(b"\0end\n")
        print(f"\n[case 6] a stalled follower while {churned >> 20} MiB were written and pruned: "
              f"store file {size >> 20} MiB")
    finally:
        follower.close()
        assert server.stop() == 0


def _dechunk(data: bytes) -> bytes:
    out, pos = bytearray(), 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end], 16)
        if size == 0:
            return bytes(out)
        out += data[end + 2:end + 2 + size]
        pos = end + 2 + size + 2


# -- reader slots ---------------------------------------------------------------------------------

HOG = textwrap.dedent("""
    import lmdb, sys, threading
    env = lmdb.open(sys.argv[1], max_dbs=16, readonly=False, lock=True)
    held = []
    try:
        while True:
            held.append(env.begin())
    except lmdb.ReadersFullError:
        pass
    print(len(held), flush=True)
    sys.stdin.readline()   # hold them until told, or until killed
    for txn in held:
        txn.abort()
    held.clear()           # a read transaction's slot is freed when the object goes
    del txn
    print("released", flush=True)
""")


def _hog(path):
    """Another process (a backup, a monitoring script) that takes every reader slot of the store."""
    proc = subprocess.Popen([sys.executable, "-c", HOG, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    taken = int(proc.stdout.readline())
    return proc, taken


def test_more_readers_than_reader_slots_is_a_clean_503(tmp_path):
    files = {"hello.yml": {"command": "echo hello"},
             "tick.yml": {"command": "true", "schedule": [{"frequency": 1}]},
             "long.yml": {"command": "echo started; sleep 2; echo done"}}
    server = start_server(tmp_path / "s", files)
    try:
        server.run("hello")
        server.wait("hello", 1)
        server.run("long")
        wait_for(lambda: server.get("/jobs/long/1/stdout").content == b"started\n", 20, "long to start")
        hog, taken = _hog(server.data / "store")
        try:
            assert taken > 900
            for path in ("/jobs/hello/1", "/jobs/hello/1/stdout", "/jobs", "/jobs/hello"):
                r = server.get(path)
                assert r.status_code == 503, (path, r.status_code, r.text)
                assert r.headers["Retry-After"] == "1" and "reader slot" in r.json()["error"]
            # a trigger reads nothing (activation is kept in memory) and writes need no reader slot
            r = server.req("POST", "/jobs/hello", json={})
            assert r.status_code == 201 and r.json()["id"] == 2
            assert server.get("/health").status_code == 200
            # the run that was going on ends normally meanwhile (writes need no reader slot)
            hog.stdin.write("\n")
            hog.stdin.flush()
            assert hog.stdout.readline().strip() == "released"
        finally:
            hog.kill()
            hog.wait()
        assert server.wait("long", 1)["status"] == "complete"
        assert server.get("/jobs/long/1/stdout").content == b"started\ndone\n"
        assert server.wait("hello", 2)["status"] == "complete"
        assert server.run("hello")["id"] == 3
        assert server.wait("hello", 3)["status"] == "complete"
        ticks = len(server.get("/jobs/tick?limit=1000").json()["executions"])
        wait_for(lambda: len(server.get("/jobs/tick?limit=1000").json()["executions"]) > ticks, 15,
                 "the schedule to go on")
        assert server.proc.poll() is None
    finally:
        assert server.stop() == 0


KEEPER = textwrap.dedent("""
    import lmdb, sys
    env = lmdb.open(sys.argv[1], max_dbs=16)
    print("open", flush=True)
    sys.stdin.readline()
""")


def test_stale_reader_slots_of_a_killed_process_are_cleared_at_start(tmp_path):
    server = start_server(tmp_path / "s", {"hello.yml": {"command": "echo hello"}})
    server.run("hello")
    server.wait("hello", 1)
    assert server.stop() == 0
    # Another process keeps the store open (LMDB resets the reader table only when the first
    # process opens it), and one that took every slot is killed: its slots stay taken.
    keeper = subprocess.Popen([sys.executable, "-c", KEEPER, str(server.data / "store")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert keeper.stdout.readline().strip() == "open"
        hog, taken = _hog(server.data / "store")
        os.kill(hog.pid, signal.SIGKILL)
        hog.wait()
        server.start()
        try:
            assert server.execution("hello", 1)["status"] == "complete"
            assert server.run("hello")["id"] == 2
            assert f"cleared {taken} stale reader slots" in server.log()
        finally:
            assert server.stop() == 0
    finally:
        keeper.kill()
        keeper.wait()


def test_a_store_whose_slots_are_all_held_by_live_processes_is_refused_by_name(tmp_path, caplog):
    """Only dead processes' slots are freed: with every slot held by a live one the Store does not
    open, and says which store and why; once the holder is killed it opens, and says so."""
    path = tmp_path / "store"
    Store(path).close()
    keeper = subprocess.Popen([sys.executable, "-c", KEEPER, str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert keeper.stdout.readline().strip() == "open"
        hog, taken = _hog(path)
        try:
            with pytest.raises(StoreError, match=f"cannot open the store at {path}.*READERS_FULL"):
                Store(path)
        finally:
            hog.kill()
            hog.wait()
        with caplog.at_level(logging.INFO, logger="overseer.store"):
            store = Store(path)
        try:
            assert f"cleared {taken} stale reader slots" in caplog.text
            assert store.list_executions("hello") == []
        finally:
            store.close()
    finally:
        keeper.kill()
        keeper.wait()


def test_stale_reader_slots_of_a_process_killed_while_serving_are_reclaimed(tmp_path):
    server = start_server(tmp_path / "s", {"hello.yml": {"command": "echo hello"}})
    try:
        server.run("hello")
        server.wait("hello", 1)
        hog, _ = _hog(server.data / "store")
        assert server.get("/jobs/hello/1").status_code == 503
        os.kill(hog.pid, signal.SIGKILL)
        hog.wait()
        wait_for(lambda: server.get("/jobs/hello/1").status_code == 200, 2, "the slots to be reclaimed")
    finally:
        assert server.stop() == 0
