"""The store's writer: group commit, map growth, fsync pacing.

Callers queue ops; whoever commits drains the whole queue into one write
transaction and commits it once.  A caller whose op is a record (not output)
commits on its own thread when no commit is in progress, so an idle store
costs a trigger no thread hand-over; otherwise, and for every output append,
the writer thread does it, and under load everything queued meanwhile goes
into the next batch (group commit).  An op is ``fn(batch, *args)``; it raises
``Rejected`` to fail before writing anything (only its caller sees the error,
the others in the batch commit), any other exception makes the batch replay
without that op, and ``MapFullError`` makes the map double and the batch
replay.  Nothing an op raises stops the writer.

Output that cannot be written (the disk is full: the commit fails) is dropped
so that the records of the batch can still commit: the batch replays without
its appends, and what each execution lost is counted (``lost``) for its end to
tell (``output-lost``).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict, deque
from operator import itemgetter
from typing import Any, Callable

import lmdb

from overseer.exceptions import NotFound, StoreError

from .keys import STDOUT, describe
from .output import OutputBatch
from .primitives import Promise, RWLock

log = logging.getLogger(__name__)

SYNC_INTERVAL = 1.0             # longest time committed output stays without fsync
MAX_PENDING_BYTES = 64 << 20    # appenders wait while this much output is queued
MAX_MAP_SIZE = 1 << 44
APPEND = object()               # marks an output append in the queue
DURABLE = 1                     # an op's batch is fsynced at once (True is DURABLE)
DURABLE_SOON = 2                # ... once the caller says so (sync_soon), or within SYNC_INTERVAL


class Rejected(Exception):
    """An op refused before writing anything: only its caller sees `error`."""

    def __init__(self, error: BaseException):
        super().__init__(error)
        self.error = error


class _OpFailed(Exception):
    def __init__(self, index: int, error: BaseException):
        super().__init__(error)
        self.index, self.error = index, error


def _orphan(args: tuple) -> Rejected:
    ekey, _code, data = args
    return Rejected(NotFound(f"no {describe(ekey)} for {len(data)} bytes of output"))


class Batch:
    """What an op gets: the write transaction, the output appender, the records it touched."""

    __slots__ = ("txn", "out", "records")

    def __init__(self, txn: Any, out: OutputBatch):
        self.txn, self.out, self.records = txn, out, set()


class Writer:
    """The queue and the thread.  `notify(output_keys, record_keys)` runs after each commit."""

    def __init__(self, env: Any, dbs: dict, rwlock: RWLock, name: str,
                 notify: Callable[[Any, set], None]):
        self._env, self._dbs, self._rw, self._name, self._notify = env, dbs, rwlock, name, notify
        self._ops: deque = deque()
        self._put = self._ops.append
        self._work = threading.Event()  # ops wait for the writer thread
        self._committing = threading.Lock()  # held by whoever runs a batch (one write txn at a time)
        self._batch_thread = 0  # the thread running a batch now (update fns must not write)
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._pending_bytes = 0
        self.closed = False
        self._cache: OrderedDict = OrderedDict()
        # Output not stored, by execution key: [stdout bytes, stderr bytes, why]; changed only by
        # whoever commits (one at a time), read by the update ops of those executions' ends.
        self.lost: dict[bytes, list] = {}
        self._dirty = False
        self._last_sync = time.monotonic()
        self.stats = {"batches": 0, "ops": 0, "syncs": 0, "map_growths": 0}
        self._sync_now = threading.Event()
        self._durable_waiting = False  # a DURABLE_SOON batch is committed and not fsynced yet
        self._thread = threading.Thread(target=self._run, name=f"store-writer:{name}", daemon=True)
        self._thread.start()
        self._syncer = threading.Thread(target=self._sync_loop, name=f"store-sync:{name}", daemon=True)
        self._syncer.start()

    def submit(self, fn: Callable, args: tuple, durable: int = False, inline: bool = True) -> Promise:
        """Queue `fn(batch, *args)` and return a Promise of its result, resolved once the batch
        is committed: at once, on this thread, when no batch is running; else by the writer
        thread (always, with ``inline=False``).  With `durable`, the fsync thread flushes the batch
        to disk at once (without holding up the caller or the next batch); other batches within
        SYNC_INTERVAL."""
        if self._batch_thread == threading.get_ident():
            raise StoreError("the store cannot be written from inside an update_execution function")
        future = Promise()
        with self._lock:
            if self.closed:
                raise StoreError(f"the store {self._name} is closed")
            self._put((fn, args, future, durable, 0))
        if inline and self._committing.acquire(blocking=False):
            try:
                self._drain()
            finally:
                self._committing.release()
            if self._ops:
                self._work.set()  # queued while this thread committed: the writer takes them
        else:
            self._work.set()
        return future

    def sync_soon(self) -> None:
        """fsync what DURABLE_SOON ops committed (on the fsync thread). A trigger calls it once
        its process has started: the fsync thread then takes the GIL after the start, not during."""
        if self._durable_waiting:
            self._durable_waiting = False
            self._sync_now.set()

    def append(self, ekey: bytes, code: bytes, data: bytes) -> None:
        """Queue an output append for the writer thread (no answer); waits while too much output
        is queued."""
        with self._lock:
            if self.closed or self._pending_bytes > MAX_PENDING_BYTES:
                self._wait_for_space()
            self._pending_bytes += len(data)
            self._put((APPEND, (ekey, code, data), None, False, len(data)))
        self._work.set()

    def _wait_for_space(self) -> None:
        if self._batch_thread == threading.get_ident():
            raise StoreError("the store cannot be written from inside an update_execution function")
        while self._pending_bytes > MAX_PENDING_BYTES and not self.closed:
            self._space.wait()
        if self.closed:
            raise StoreError(f"the store {self._name} is closed")

    def close(self) -> None:
        """Commit everything queued and stop the thread."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._space.notify_all()
        self._work.set()
        self._thread.join()
        self._sync_now.set()
        self._syncer.join()

    def _run(self) -> None:
        while True:
            self._work.wait()
            self._work.clear()
            with self._committing:
                self._drain()
            if self.closed and not self._ops:
                return

    def _drain(self) -> None:
        """Run batches until the queue is empty (the caller holds ``_committing``)."""
        ops, popleft = self._ops, self._ops.popleft
        self._batch_thread = threading.get_ident()
        try:
            while ops:
                batch = []
                try:
                    while True:
                        batch.append(popleft())
                except IndexError:
                    pass
                try:
                    self._process(batch)
                except BaseException as exc:  # the writer must outlive any batch
                    if isinstance(exc, lmdb.Error):  # the disk's fault (full, failing), not a bug
                        log.error("store %s: a batch of %d ops failed: %s", self._name, len(batch), exc)
                    else:
                        log.exception("store %s: a batch of %d ops failed", self._name, len(batch))
                    for op in batch:
                        if op[2] is not None and not op[2].done():
                            op[2].set_exception(StoreError(f"store write failed: {exc!r}"))
        finally:
            self._batch_thread = 0

    def _process(self, ops: list) -> None:
        pending = list(ops)
        try:
            while True:
                try:
                    batch, results = self._attempt(pending)
                    break
                except lmdb.MapFullError:
                    self._grow()
                except _OpFailed as failed:
                    self._fail(pending.pop(failed.index), failed.error)
                except lmdb.Error as exc:  # the commit failed: a full disk, an I/O error
                    appends = [op for op in pending if op[0] is APPEND]
                    if not appends:
                        raise
                    for op in appends:  # the records of the batch may fit where the output did not
                        self._lose(op, exc)
                    pending = [op for op in pending if op[0] is not APPEND]
            self.stats["batches"] += 1
            self.stats["ops"] += len(pending)
            self._dirty = True
            durability = set(map(itemgetter(3), pending))
            if DURABLE in durability:
                self._sync_now.set()
            elif DURABLE_SOON in durability:
                self._durable_waiting = True
            batch.out.commit_to(self._cache)
            for op, result in zip(pending, results):
                if isinstance(result, Rejected):
                    self._fail(op, result.error)
                elif op[2] is not None:
                    op[2].set_result(result)
            self._notify(batch.out.states.keys(), batch.records)
        finally:
            released = sum(map(itemgetter(4), ops))
            if released:
                with self._lock:
                    self._pending_bytes -= released
                    self._space.notify_all()

    def _attempt(self, ops: list) -> tuple[Batch, list]:
        txn = self._env.begin(write=True, buffers=True)
        batch = Batch(txn, OutputBatch(txn, self._dbs, self._cache))
        results: list = []
        add, append = results.append, batch.out.append
        try:
            for index, op in enumerate(ops):
                try:
                    if op[0] is APPEND:
                        add(None if append(*op[1]) else _orphan(op[1]))
                    else:
                        add(op[0](batch, *op[1]))
                except Rejected as rejected:
                    results.append(rejected)
                except lmdb.MapFullError:
                    raise
                except BaseException as exc:
                    raise _OpFailed(index, exc) from exc
            batch.out.finish()
            txn.commit()
        except BaseException:
            # py-lmdb 3.0 (C extension): aborting a write transaction waits for a moment when no
            # read is in flight, which busy readers may never give; so abort with readers held off.
            with self._rw.exclusive():
                try:
                    txn.abort()
                except lmdb.Error:
                    pass
            raise
        return batch, results

    def _fail(self, op: tuple, error: BaseException) -> None:
        if op[2] is not None:
            op[2].set_exception(error)
        elif isinstance(error, lmdb.Error):
            self._lose(op, error)
        else:
            log.warning("store %s: dropped an output append: %s", self._name, error)

    def _lose(self, op: tuple, error: BaseException) -> None:
        """An output append that could not be written: counted for its execution."""
        ekey, code, data = op[1]
        entry = self.lost.get(ekey)
        if entry is None:
            try:
                disk = os.statvfs(self._name)
                free = f" ({disk.f_bavail * disk.f_frsize} bytes free on its file system)"
            except OSError:
                free = ""
            entry = self.lost[ekey] = [0, 0, f"the store could not write it: {error}{free}"]
            log.warning("store %s: output of %s is not stored: %s", self._name, describe(ekey), error)
        entry[0 if code == STDOUT else 1] += len(data)

    def _grow(self) -> None:
        size = self._env.info()["map_size"]
        if size >= MAX_MAP_SIZE:
            raise StoreError(f"the store {self._name} cannot grow beyond {size} bytes")
        with self._rw.exclusive():
            self._env.set_mapsize(size * 2)
        self.stats["map_growths"] += 1
        log.info("store %s: map grown to %d MiB", self._name, size * 2 >> 20)

    def _sync_loop(self) -> None:
        """fsync at once after a durable batch, else at most SYNC_INTERVAL after a commit. It
        wakes every SYNC_INTERVAL whatever happens: a commit does not wake it (that would fsync
        at once), so an idle wait must end by itself to see what was committed meanwhile."""
        while not (self.closed and not self._thread.is_alive()):
            self._sync_now.wait(SYNC_INTERVAL)
            self._sync_now.clear()
            if self._dirty:
                self._sync()

    def _sync(self) -> Exception | None:
        self._dirty = self._durable_waiting = False  # this fsync covers what sync_soon would
        self._rw.acquire_shared()  # never while the map is being resized
        try:
            self._env.sync(True)
        except lmdb.Error as exc:
            self._dirty = True
            log.error("store %s: fsync failed: %s", self._name, exc)
            return exc
        finally:
            self._rw.release_shared()
        self._last_sync = time.monotonic()
        self.stats["syncs"] += 1
        return None
