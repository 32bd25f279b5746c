"""The LMDB store, against a real environment in tmp_path."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import lmdb
import pytest

from overseer.exceptions import NotFound, StoreBusy, StoreError
from overseer.store import Store
from overseer.store import output as store_output
from overseer.store.keys import job_prefix, u64

from ..waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
BIG = 1 << 40


@pytest.fixture
def store(tmp_path):
    opened = Store(tmp_path / "db")
    yield opened
    opened.close()


def finish(record: dict) -> None:
    record["state"] = "finished"


def expected_streams(appends: list) -> dict[str, bytes]:
    """stdout, stderr and output of a list of (stream, data) in arrival order."""
    return {"stdout": b"".join(d for s, d in appends if s == "stdout"),
            "stderr": b"".join(d for s, d in appends if s == "stderr"),
            "output": b"".join(d for _s, d in appends)}


def assert_output(store: Store, job: str, ident: int, expected: dict[str, bytes]) -> None:
    for stream, data in expected.items():
        assert store.output_size(job, ident, stream) == len(data), stream
        assert store.read_output(job, ident, stream, 0, BIG) == data, stream
        assert b"".join(store.iter_output(job, ident, stream, chunk=4099)) == data, stream


# executions

def test_create_get_list(store):
    given = {"state": "queued", "params": {"n": 1}}
    records = [store.create_execution("a", given) for _ in range(5)]
    assert [r["id"] for r in records] == [1, 2, 3, 4, 5]
    assert records[0] == {"state": "queued", "params": {"n": 1}, "job": "a", "id": 1}
    assert given == {"state": "queued", "params": {"n": 1}}
    for job in ("ab", "a.b", "b"):
        assert store.create_execution(job, {"state": "queued"})["id"] == 1
    assert store.get_execution("a", 3) == {"state": "queued", "params": {"n": 1}, "job": "a", "id": 3}
    for job, ident in (("a", 6), ("a", 0), ("a", -1), ("nope", 1), ("a", "1"), ("a", True)):
        assert store.get_execution(job, ident) is None
    ids = lambda records: [r["id"] for r in records]  # noqa: E731
    assert ids(store.list_executions("a")) == [5, 4, 3, 2, 1]
    assert ids(store.list_executions("a", limit=2)) == [5, 4]
    assert ids(store.list_executions("a", before=4)) == [3, 2, 1]
    assert ids(store.list_executions("a", limit=2, before=4)) == [3, 2]
    assert ids(store.list_executions("a", before=1)) == []
    assert ids(store.list_executions("a", before=99)) == [5, 4, 3, 2, 1]
    assert ids(store.list_executions("ab")) == [1]
    assert store.list_executions("zzz") == []
    assert store.last_execution("a")["id"] == 5
    assert store.last_execution("zzz") is None


def test_ids_unique_under_concurrent_creators(tmp_path):
    store = Store(tmp_path / "db")
    start = threading.Barrier(16)
    ids: list[int] = []
    lock = threading.Lock()

    def creator():
        start.wait()
        mine = [store.create_execution("job", {"state": "queued"})["id"] for _ in range(200)]
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=creator) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(ids) == list(range(1, 3201))
    store.close()
    with Store(tmp_path / "db") as reopened:
        assert reopened.last_execution("job")["id"] == 3200
        assert reopened.create_execution("job", {})["id"] == 3201


def test_executions_in_states(store):
    for state in ("queued", "running", "finished", "stopped", "running"):
        store.create_execution("a", {"state": state})
    store.create_execution("b", {"state": "finished",
                                 "params": {"state": "running", "x": '"state":"queued"'}})
    store.create_execution("b", {"state": "queued"})
    found = store.executions_in_states({"queued", "running"})
    assert sorted((r["job"], r["id"], r["state"]) for r in found) == [
        ("a", 1, "queued"), ("a", 2, "running"), ("a", 5, "running"), ("b", 2, "queued")]
    assert store.executions_in_states(set()) == []


def test_update_execution(store):
    store.create_execution("a", {"state": "queued", "events": []})
    assert store.update_execution("a", 1, finish)["state"] == "finished"
    replaced = store.update_execution("a", 1, lambda r: {"state": "x", "job": "other", "id": 9})
    assert replaced == {"state": "x", "job": "a", "id": 1}
    assert store.get_execution("a", 1) == replaced
    with pytest.raises(ZeroDivisionError):
        store.update_execution("a", 1, lambda r: 1 / 0)
    with pytest.raises(TypeError):
        store.update_execution("a", 1, lambda r: {"state": object()})
    with pytest.raises(SystemExit):
        store.update_execution("a", 1, lambda r: sys.exit(3))
    with pytest.raises(NotFound):
        store.update_execution("a", 2, finish)
    with pytest.raises(StoreError):    # writing from inside fn would wait on itself
        store.update_execution("a", 1, lambda r: store.set_active("a", False))
    assert store.get_execution("a", 1) == replaced
    assert store.update_execution("a", 1, finish, durable=False)["state"] == "finished"


def test_failing_ops_do_not_fail_their_batch(store):
    """Ops queued while the writer is busy commit as one batch; the failing ones fail alone."""
    store.create_execution("a", {"state": "queued", "n": 0})
    store.create_execution("a", {"state": "queued", "n": 0})
    started, release = threading.Event(), threading.Event()

    def hold(record):
        started.set()
        assert release.wait(30)
        record["held"] = True

    holder = threading.Thread(target=store.update_execution, args=("a", 1, hold))
    holder.start()
    assert started.wait(30)
    before = store.stats()["batches"]

    def bump(record):
        record["n"] += 1

    def writes_then_fails(batch):
        batch.txn.put(b"half-done", b"", db=store._dbs["inactive"])
        raise RuntimeError("after a write")

    futures = [store._update_async("a", 2, bump, True),
               store._update_async("a", 2, lambda r: 1 / 0, True),
               store._update_async("a", 99, bump, True),
               store._writer.submit(writes_then_fails, (), durable=False),
               store._update_async("a", 2, bump, True)]
    store.append_output("a", 2, "stdout", b"kept")
    store.append_output("a", 3, "stdout", b"no such execution")
    release.set()
    holder.join()
    assert futures[0].result()["n"] == 1
    with pytest.raises(ZeroDivisionError):
        futures[1].result()
    with pytest.raises(NotFound):
        futures[2].result()
    with pytest.raises(RuntimeError):
        futures[3].result()
    assert futures[4].result()["n"] == 2
    store.flush()
    assert store.stats()["batches"] == before + 3    # the held batch, the queued ops, the flush
    assert store.get_execution("a", 1)["held"] is True
    assert store.get_execution("a", 2)["n"] == 2
    assert store.read_output("a", 2, "stdout") == b"kept"
    assert store.inactive_jobs() == set()            # the failed op's write was rolled back
    assert store.output_size("a", 3, "stdout") == 0


@contextmanager
def writer_held(store: Store):
    """Holds the writer inside a batch: the ops queued meanwhile form the next batch."""
    started, release = threading.Event(), threading.Event()

    def hold(batch):
        started.set()
        assert release.wait(30)

    future = store._writer.submit(hold, (), inline=False)
    assert started.wait(30)
    try:
        yield
    finally:
        release.set()
        future.result()


def test_append_in_the_batch_that_prunes_its_execution(store):
    store.create_execution("job", {"state": "running"})
    store.append_output("job", 1, "stdout", b"before")
    store.update_execution("job", 1, finish)
    with writer_held(store):
        created = store._writer.submit(store._records.create, ("job", job_prefix("job"), {}, 1), durable=True)
        store.append_output("job", 1, "stdout", b"after the prune")
        store.append_output("job", 2, "stderr", b"two")
    assert created.result()["id"] == 2
    store.flush()
    assert store.get_execution("job", 1) is None
    assert store.output_size("job", 1, "output") == 0
    assert store.read_output("job", 2, "output") == b"two"


# output

def test_concurrent_appends_in_arrival_order(store):
    rng = random.Random(7)
    for _ in range(3):
        store.create_execution("job", {"state": "running"})
    arrivals: dict[int, list] = {1: [], 2: [], 3: []}
    order = threading.Lock()

    def producer(seed):
        rng = random.Random(seed)
        for _ in range(150):
            ident, stream = rng.randint(1, 3), rng.choice(("stdout", "stderr"))
            data = rng.randbytes(rng.choice((1, 2, 50, 700, 3000, 9000)))
            with order:   # makes the arrival order known to the test
                arrivals[ident].append((stream, data))
                store.append_output("job", ident, stream, data)

    threads = [threading.Thread(target=producer, args=(rng.random(),)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.flush()
    for ident, appends in arrivals.items():
        assert_output(store, "job", ident, expected_streams(appends))


def test_concurrent_appends_interleave_consistently(store):
    """Unordered producers: each stream is its producer's bytes, `output` a merge of both."""
    store.create_execution("job", {"state": "running"})
    store.create_execution("job", {"state": "running"})

    def producer(ident, stream):
        tag = stream[3].encode()   # b"o" or b"e"
        rng = random.Random(ident * 10 + len(stream))
        line = 0
        for _ in range(400):
            count = rng.randint(1, 20)
            store.append_output("job", ident, stream, b"".join(
                b"%s %d %d\n" % (tag, ident, line + i) for i in range(count)))
            line += count

    threads = [threading.Thread(target=producer, args=(ident, stream))
               for ident in (1, 2) for stream in ("stdout", "stderr")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.flush()
    for ident in (1, 2):
        streams = {s: store.read_output("job", ident, s, 0, BIG) for s in ("stdout", "stderr", "output")}
        for stream in ("stdout", "stderr"):
            lines = streams[stream].splitlines()
            assert lines == [b"%s %d %d" % (stream[3].encode(), ident, n) for n in range(len(lines))]
            merged = [ln for ln in streams["output"].splitlines() if ln[:1] == stream[3].encode()]
            assert merged == lines
        assert len(streams["output"]) == len(streams["stdout"]) + len(streams["stderr"])


def test_read_output_at_every_offset(store, monkeypatch):
    # small limits, so that merging and coalescing cut many chunks of every kind
    monkeypatch.setattr(store_output, "MERGE_SMALL", 40)
    monkeypatch.setattr(store_output, "COALESCE_MAX", 100)
    rng = random.Random(3)
    store.create_execution("job", {"state": "running"})
    appends: list = []
    for size in (1, 3, 30, 1, 200, 7, 0, 39, 41, 1, 1, 500, 2, 90, 13, 1000, 5):
        for _ in range(rng.randint(1, 4)):
            stream = rng.choice(("stdout", "stderr"))
            data = rng.randbytes(size)
            store.append_output("job", 1, stream, data)
            appends.append((stream, data))
        if rng.random() < 0.5:
            store.flush()
    store.flush()
    expected = expected_streams(appends)
    assert_output(store, "job", 1, expected)
    for stream, data in expected.items():
        for offset in range(len(data) + 3):
            for limit in (1, 37, 1 << 20):
                assert store.read_output("job", 1, stream, offset, limit) == data[offset:offset + limit]
        assert b"".join(store.iter_output("job", 1, stream, offset=len(data) // 3, chunk=11)) == \
            data[len(data) // 3:]
    assert store.read_output("job", 1, "stdout", 5, 0) == b""


def test_output_bytes_kept_exactly(store):
    store.create_execution("job", {"state": "running"})
    raw = bytes(range(256)) + b"\r\n\x00\xff\xfe invalid utf-8 \xc3\x28"
    store.append_output("job", 1, "stdout", raw)
    store.append_output("job", 1, "stdout", bytearray(b"\x00"))
    store.append_output("job", 1, "stderr", memoryview(b"mv"))
    store.flush()
    before = store.stats()["ops"]
    store.append_output("job", 1, "stdout", b"")          # no-op: nothing queued
    store.flush()
    assert store.stats()["ops"] == before + 1             # the flush only
    assert store.read_output("job", 1, "stdout", 0, BIG) == raw + b"\x00"
    assert store.read_output("job", 1, "output", 0, BIG) == raw + b"\x00mv"


def test_output_errors(store):
    store.create_execution("job", {"state": "running"})
    with pytest.raises(NotFound):
        store.read_output("job", 1, "stdin")
    with pytest.raises(NotFound):
        store.append_output("job", 1, "nope", b"x")
    with pytest.raises(ValueError):
        store.append_output("job", 1, "output", b"x")
    with pytest.raises(ValueError):
        store.read_output("job", 1, "stdout", -1)
    with pytest.raises(StoreError):
        store.append_output("bad\0name", 1, "stdout", b"x")
    assert store.output_size("job", 1, "output") == 0
    assert store.read_output("job", 7, "output") == b""


def test_iter_output_of_50_mb_in_constant_memory(store):
    store.create_execution("job", {"state": "running"})
    block = random.Random(1).randbytes(1 << 20)
    written = hashlib.sha256()
    for i in range(50):
        piece = i.to_bytes(4, "big") + block[4:]
        written.update(piece)
        store.append_output("job", 1, "stdout" if i % 5 else "stderr", piece)
    store.flush()
    assert store.output_size("job", 1, "output") == 50 << 20
    around = block[-2:] + (25).to_bytes(4, "big") + block[4:6]
    assert store.read_output("job", 1, "output", (25 << 20) - 2, 8) == around
    tracemalloc.start()
    try:
        read, size = hashlib.sha256(), 0
        for piece in store.iter_output("job", 1, "output"):
            read.update(piece)
            size += len(piece)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert size == 50 << 20
    assert read.digest() == written.digest()
    assert peak < 8 << 20


def test_wait_output(store):
    store.create_execution("job", {"state": "running"})
    store.append_output("job", 1, "stdout", b"abc")
    store.flush()
    assert store.wait_output("job", 1, "stdout", 2, timeout=30) is True
    assert store.wait_output("job", 1, "stdout", 3, timeout=0) is False
    results: list = []
    follower = threading.Thread(target=lambda: results.append(store.wait_output("job", 1, "output", 3, 60)))
    follower.start()
    store.append_output("job", 1, "stderr", b"d")
    follower.join()
    assert results == [True]
    follower = threading.Thread(target=lambda: results.append(store.wait_output("job", 1, "stdout", 3, 60)))
    follower.start()
    store.update_execution("job", 1, finish)
    follower.join()
    assert results == [True, True]
    assert len(store._watches) == 0  # no watch left behind


def test_wait_commit(store):
    assert store.wait_commit(0) is False
    results: list = []
    waiter = threading.Thread(target=lambda: results.append(store.wait_commit(60)))
    waiter.start()
    while waiter.is_alive():
        store.flush()       # every flush is a commit
    assert results == [True]


# map growth, readers, crash, close

def test_map_grows_under_writes_and_reads(tmp_path):
    store = Store(tmp_path / "db", map_size=64 << 10)
    store.create_execution("job", {"state": "running"})
    stop, errors = threading.Event(), []

    def reader():
        while not stop.is_set():
            try:
                data = store.read_output("job", 1, "stdout", 0, BIG)
                assert data == expected["stdout"][:len(data)]
                store.get_execution("job", 1)
            except Exception as exc:  # reported below
                errors.append(exc)
                return

    rng = random.Random(2)
    appends = [("stdout", rng.randbytes(128 << 10)) for _ in range(40)]
    appends += [(rng.choice(("stdout", "stderr")), rng.randbytes(rng.randint(1, 300))) for _ in range(3000)]
    expected = expected_streams(appends)
    readers = [threading.Thread(target=reader) for _ in range(3)]
    for thread in readers:
        thread.start()
    for stream, data in appends:
        store.append_output("job", 1, stream, data)
    store.flush()
    stop.set()
    for thread in readers:
        thread.join()
    assert errors == []
    stats = store.stats()
    assert stats["map_growths"] >= 6 and stats["map_size"] >= 8 << 20
    assert_output(store, "job", 1, expected)
    store.close()
    with Store(tmp_path / "db", map_size=64 << 10) as reopened:
        assert_output(reopened, "job", 1, expected)
        reopened.create_execution("job", {"state": "queued"})


def test_reader_slots_full_is_store_busy(tmp_path):
    with Store(tmp_path / "db", max_readers=2) as store:
        store.create_execution("job", {"state": "queued"})
        held = [store._env.begin(), store._env.begin()]
        with pytest.raises(StoreBusy):
            store.get_execution("job", 1)
        for txn in held:
            txn.abort()
        del held, txn
        assert store.get_execution("job", 1)["id"] == 1


def test_close_commits_what_is_queued(tmp_path):
    store = Store(tmp_path / "db")
    store.create_execution("job", {"state": "running"})
    pieces = [b"%d," % i for i in range(5000)]
    for piece in pieces:
        store.append_output("job", 1, "stdout", piece)
    store.close()
    store.close()
    for call in (lambda: store.append_output("job", 1, "stdout", b"x"),
                 lambda: store.create_execution("job", {}),
                 lambda: store.get_execution("job", 1),
                 store.flush):
        with pytest.raises(StoreError):
            call()
    with Store(tmp_path / "db") as reopened:
        assert reopened.read_output("job", 1, "stdout", 0, BIG) == b"".join(pieces)
        # the writer picks up where the stored chunks end
        for stream, data in (("stdout", b"more"), ("stderr", b"err"), ("stdout", b"!")):
            reopened.append_output("job", 1, stream, data)
        reopened.flush()
        assert_output(reopened, "job", 1, {"stdout": b"".join(pieces) + b"more!", "stderr": b"err",
                                           "output": b"".join(pieces) + b"moreerr!"})


def test_open_errors(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreError):
        Store(tmp_path / "file")
    with Store(tmp_path / "db"):
        with pytest.raises(StoreError):   # one environment per process
            Store(tmp_path / "db")


CRASH_CHILD = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from overseer.store import Store
from tests.store.test_store import crash_piece

store = Store(Path(sys.argv[1]), map_size=1 << 16)
while True:
    ident = store.create_execution("crash", {"state": "running"})["id"]
    for k in range(60):
        store.append_output("crash", ident, "stdout" if k % 3 else "stderr", crash_piece(ident, k))
    store.flush()
    print(json.dumps({"id": ident}), flush=True)
"""


def crash_piece(ident: int, k: int) -> bytes:
    return (b"%d:%d|" % (ident, k)) * (1 + (ident * 7 + k * 13) % 400)


def crash_expected(ident: int) -> dict[str, bytes]:
    return expected_streams([("stdout" if k % 3 else "stderr", crash_piece(ident, k)) for k in range(60)])


def test_sigkill_loses_nothing_committed(tmp_path):
    path = tmp_path / "db"
    child = subprocess.Popen([sys.executable, "-c", CRASH_CHILD, str(path), str(ROOT)],
                             stdout=subprocess.PIPE, cwd=ROOT)
    reported = []
    try:
        for line in child.stdout:
            reported.append(json.loads(line)["id"])
            if len(reported) == 25:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert reported == list(range(1, 26))
    with Store(path) as store:
        for ident in reported:
            assert store.get_execution("crash", ident) == {"state": "running", "job": "crash", "id": ident}
            assert_output(store, "crash", ident, crash_expected(ident))
        last = store.last_execution("crash")["id"]
        assert last >= 25
        for ident in range(26, last + 1):     # interrupted mid-burst: a consistent prefix
            expected = crash_expected(ident)
            for stream in ("stdout", "stderr", "output"):
                data = store.read_output("crash", ident, stream, 0, BIG)
                assert data == expected[stream][:len(data)]
        assert store.create_execution("crash", {"state": "queued"})["id"] == last + 1


# retention, activation, schedule state

def test_retention_prunes_finished_executions_and_their_output(tmp_path, caplog):
    store = Store(tmp_path / "db")
    for ident in range(1, 6):
        store.create_execution("job", {"state": "queued"})
        store.append_output("job", ident, "stdout", b"out %d" % ident)
        store.append_output("job", ident, "stderr", b"err %d" % ident)
    store.create_execution("other", {"state": "finished"})
    for ident in (1, 2, 4):
        store.update_execution("job", ident, finish)
    assert store.create_execution("job", {"state": "queued"}, keep=3)["id"] == 6
    store.append_output("job", 6, "stdout", b"six")
    # the 3 newest (6, 5, 4) stay; of the older, the running 3 stays, the finished 1 and 2 go
    assert [r["id"] for r in store.list_executions("job")] == [6, 5, 4, 3]
    for ident in (1, 2):
        assert store.get_execution("job", ident) is None
        assert store.output_size("job", ident, "output") == 0
        assert store.read_output("job", ident, "output") == b""
    assert store.read_output("job", 3, "output") == b"out 3err 3"
    assert store.get_execution("other", 1) is not None
    with caplog.at_level(logging.WARNING, logger="overseer.store.writer"):
        store.append_output("job", 1, "stdout", b"late")   # dropped: no such execution
        store.flush()
    assert "no execution 1 of job 'job'" in caplog.text
    store.update_execution("job", 3, finish)
    store.update_execution("job", 5, finish)
    assert store.create_execution("job", {"state": "queued"}, keep=2)["id"] == 7
    assert [r["id"] for r in store.list_executions("job")] == [7, 6]
    store.close()
    env = lmdb.open(str(tmp_path / "db"), max_dbs=16, readonly=True, lock=False)
    with env.begin() as txn:
        for name in ("chunks", "interleave"):
            cursor = txn.cursor(db=env.open_db(name.encode(), txn=txn))
            keys = [bytes(k) for k in cursor.iternext(values=False)]
            owners = {k[: len(job_prefix("job")) + 8] for k in keys if k.startswith(job_prefix("job"))}
            assert owners == {job_prefix("job") + u64(6)}, name
    env.close()
    with Store(tmp_path / "db") as reopened:
        assert reopened.create_execution("job", {}, keep=2)["id"] == 8


def test_activation(tmp_path):
    with Store(tmp_path / "db") as store:
        assert store.is_active("a") and store.inactive_jobs() == set()
        store.set_active("a", False)
        store.set_active("a", False)
        store.set_active("b.c", False)
        assert not store.is_active("a") and store.is_active("b")
        syncs = store.stats()["syncs"]
        store.set_active("b.c", True)
        # durable: the fsync thread flushes it at once
        wait_for(lambda: store.stats()["syncs"] > syncs, 10, "the fsync", interval=0.01)
        assert store.stats()["syncs"] > syncs
    with Store(tmp_path / "db") as store:
        assert store.inactive_jobs() == {"a"}
        store.set_active("a", True)
        assert store.is_active("a") and store.inactive_jobs() == set()


def test_schedule_state(tmp_path):
    when = datetime(2026, 3, 29, 2, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    with Store(tmp_path / "db") as store:
        assert store.last_fire("job", "abc-0") is None
        store.set_last_fire("job", "abc-0", when)
        store.set_last_fire("job", "abc-1", datetime(2026, 1, 1, 12, 0))   # naive: UTC
        store.set_last_fire("other", "abc-0", when + timedelta(days=1))
    with Store(tmp_path / "db") as store:
        first = store.last_fire("job", "abc-0")
        assert first == when and first.utcoffset() == timedelta(0)
        assert store.last_fire("job", "abc-1") == datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
        assert store.last_fire("other", "abc-0") == when + timedelta(days=1)
        assert store.last_fire("job", "abc-2") is None


# the writer's Promise and the fsync a trigger asks for

def test_promise_resolves_waiters_callbacks_and_times_out():
    from concurrent.futures import TimeoutError as FutureTimeout

    from overseer.store.primitives import Promise

    p = Promise()
    with pytest.raises(FutureTimeout):
        p.result(timeout=0.01)
    got, seen = [], []
    waiters = [threading.Thread(target=lambda: got.append(p.result(timeout=10))) for _ in range(3)]
    for t in waiters:
        t.start()
    p.add_done_callback(lambda f: seen.append(("before", f.result())))
    p.set_result(42)
    p.add_done_callback(lambda f: seen.append(("after", f.result())))
    for t in waiters:
        t.join(10)
    assert got == [42, 42, 42] and seen == [("before", 42), ("after", 42)] and p.done()
    failed = Promise()
    failed.set_exception(KeyError("k"))
    assert isinstance(failed.exception(), KeyError)
    with pytest.raises(KeyError):
        failed.result()


def test_a_sync_later_create_is_fsynced_when_asked(store):
    before = store.stats()["syncs"]
    store.create_execution("job", {"state": "queued"}, sync_later=True)
    assert store._writer._durable_waiting  # committed, its fsync held for sync_soon
    store.sync_soon()
    wait_for(lambda: store.stats()["syncs"] > before, 10, "the fsync")
    assert not store._writer._durable_waiting


def test_what_waits_for_no_one_is_fsynced_within_the_interval_after_an_idle_spell(store):
    """A trigger's create (sync_later) whose sync_soon never comes, and output committed after
    the store was idle, reach the disk by themselves within SYNC_INTERVAL (and a little)."""
    from overseer.store.writer import SYNC_INTERVAL

    store.flush()
    wait_for(lambda: not store._writer._dirty, 10, "the store idle and synced")
    time.sleep(SYNC_INTERVAL * 1.5)  # the fsync thread waits with nothing to do
    before = store.stats()["syncs"]
    store.create_execution("job", {"state": "queued"}, sync_later=True)  # no sync_soon
    wait_for(lambda: store.stats()["syncs"] > before, SYNC_INTERVAL * 3, "the create fsynced")
    time.sleep(SYNC_INTERVAL * 1.5)
    before = store.stats()["syncs"]
    store.append_output("job", 1, "stdout", b"late output")
    store.flush()
    wait_for(lambda: store.stats()["syncs"] > before, SYNC_INTERVAL * 3, "the output fsynced")
