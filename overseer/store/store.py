"""The one LMDB store: jobs' activation, executions, output, id counters, schedule state.

One ``lmdb.Environment`` is opened once, with named databases (layout in
``overseer.store.keys``).  Reads run in short read transactions on the caller's thread.
Every write is queued to one writer thread, which drains the whole queue into
one write transaction and commits it once (group commit).

Durability, exactly:

* A write that returns (``create_execution``, ``update_execution``,
  ``set_active``, ``set_last_fire``, ``flush``) has been committed.  A commit
  is in the OS page cache: if the process dies, even by SIGKILL, nothing
  committed is lost.  ``append_output`` returns once its bytes are queued:
  queued bytes not yet committed die with the process; ``flush()`` waits for
  them.
* The environment is opened with ``sync=False, metasync=False``; a separate
  fsync thread flushes it.  A batch holding a durable op
  (``create_execution``, ``update_execution`` with ``durable=True``,
  ``set_active``, ``set_last_fire``) wakes it at once, so such a record reaches
  the disk within one fsync (milliseconds) of its commit; callers do not wait
  for it, so neither they nor the next batch queue behind the disk.  A
  ``create_execution(sync_later=True)`` (a trigger) wakes it when the caller
  calls ``sync_soon()`` (once the run's process has started), or at most
  ``SYNC_INTERVAL`` later.
* Other batches (output appends, non-durable updates) are fsynced at most
  ``SYNC_INTERVAL`` (1 s) after their commit.  Power loss may lose the last
  second of output and the last milliseconds of records; a crash of the
  process loses nothing committed.  This rests on LMDB's own terms for
  ``MDB_NOSYNC``: commits that were not fsynced keep the database consistent
  over a power loss only if the file system writes them in order (with
  ``writemap=False``, as here); a file system that reorders them can leave the
  file damaged, and then only a copy made with ``env.copy()`` is safe.

The map grows by doubling on ``MapFullError``: the batch is aborted, the map
resized while no read transaction of this process is open (reads hold a
reader/writer lock shared), and the batch retried.  When every reader slot is
taken, reads raise ``StoreBusy``.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import lmdb

from overseer.exceptions import NotFound, StoreBusy, StoreError

from .env import open_dbs, open_env
from .keys import (
    END,
    STDERR,
    STDOUT,
    STREAM_CODES,
    decode_head,
    decode_record,
    decode_time,
    encode_time,
    exec_key,
    job_key,
    job_prefix,
    schedule_key,
    state_marker,
    stream_code,
    u64,
)
from .output import read_interleaved, read_stream, stream_size
from .primitives import Promise, RWLock
from .recent import RecentQuery, recent
from .records import RecordOps
from .watch import Watches
from .writer import DURABLE, DURABLE_SOON, Batch, Writer

log = logging.getLogger(__name__)

class Store:
    """The LMDB environment under `path` and its writer thread."""

    def __init__(self, path: Path, map_size: int = 1 << 30, max_readers: int = 1024):
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._env, stale = open_env(self.path, map_size, max_readers)
            stale += self._env.reader_check()
            self._dbs = open_dbs(self._env)
        except (lmdb.Error, OSError) as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc
        if stale:
            log.info("store %s: cleared %d stale reader slots", self.path, stale)
        self._rw = RWLock()
        self._env_closed = False
        self._watches = Watches()
        self._records = RecordOps(self._dbs, str(self.path))
        self._writer = Writer(self._env, self._dbs, self._rw, str(self.path), self._watches.committed)
        # Activation is read on every trigger and every schedule fire, and written only through
        # set_active: it is kept in memory too, changed by the op itself (in commit order).
        self._inactive = self.inactive_jobs()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Commit everything queued, stop the writer, fsync and close the environment."""
        if self._writer.closed:
            return
        self._writer.close()
        self._watches.close()
        with self._rw.exclusive():
            try:
                self._env.sync(True)
            except lmdb.Error as exc:
                log.error("store %s: final sync failed: %s", self.path, exc)
            self._env.close()
            self._env_closed = True

    def flush(self) -> None:
        """Wait until every op queued before this call is committed."""
        self._writer.submit(self._op_noop, ()).result()

    def stats(self) -> dict:
        """Counters of the writer (batches, ops, syncs, map_growths) and the current map size."""
        return dict(self._writer.stats, map_size=None if self._env_closed else self._env.info()["map_size"])

    # activation (absent = active)

    def is_active(self, job: str) -> bool:
        job_key(job)  # the same refusal of a bad name as a read would give
        return job not in self._inactive

    def set_active(self, job: str, active: bool) -> None:
        key = job_key(job)
        try:
            self._writer.submit(self._op_activate, (key, job, active), durable=True).result()
        except BaseException:
            # The batch did not commit: what memory says of this job is what the store says.
            with self._reading() as txn:
                stored_inactive = txn.get(key, db=self._dbs["inactive"]) is not None
            (self._inactive.add if stored_inactive else self._inactive.discard)(job)
            raise

    def _op_activate(self, batch: Batch, key: bytes, job: str, active: bool) -> None:
        """Runs again if its batch is replayed: the same outcome each time."""
        if active:
            batch.txn.delete(key, db=self._dbs["inactive"])
            self._inactive.discard(job)
        else:
            batch.txn.put(key, b"", db=self._dbs["inactive"])
            self._inactive.add(job)

    def inactive_jobs(self) -> set[str]:
        with self._reading() as txn:
            cur = txn.cursor(db=self._dbs["inactive"])
            return {bytes(key).decode("utf-8") for key in cur.iternext(values=False)}

    # executions

    def create_execution(self, job: str, record: dict, keep: int | None = None,
                         sync_later: bool = False) -> dict:
        """Store `record` as the next execution of `job` (durable) and return it with job and id.
        With `keep`, finished executions older than the `keep` newest are deleted with their output.
        With ``sync_later`` its fsync waits for ``sync_soon()`` (at most SYNC_INTERVAL)."""
        return self.create_execution_async(job, record, keep, sync_later=sync_later).result()

    def sync_soon(self) -> None:
        """fsync now (on the fsync thread) what ``sync_later`` creates committed."""
        self._writer.sync_soon()

    def create_execution_async(self, job: str, record: dict, keep: int | None = None,
                               inline: bool = True, sync_later: bool = False) -> Promise:
        """`create_execution` without waiting: a Promise (a Future's methods) of the stored record.
        With ``inline=False`` it is only queued for the writer thread, so that many of them queued
        at once commit together (the Scheduler firing many entries in one tick)."""
        prefix = job_prefix(job)
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int)):
            raise ValueError(f"keep must be an int or None, not {keep!r}")
        return self._writer.submit(self._records.create, (job, prefix, dict(record), keep),
                                   durable=DURABLE_SOON if sync_later else DURABLE, inline=inline)

    def get_execution(self, job: str, ident: int) -> dict | None:
        try:
            ekey = exec_key(job, ident)
        except NotFound:
            return None
        with self._reading() as txn:
            raw = txn.get(ekey, db=self._dbs["executions"])
            return None if raw is None else decode_record(raw)

    def get_summary(self, job: str, ident: int) -> dict | None:
        """``get_execution`` without the events, read no further than the record's head."""
        try:
            ekey = exec_key(job, ident)
        except NotFound:
            return None
        with self._reading() as txn:
            raw = txn.get(ekey, db=self._dbs["executions"])
            return None if raw is None else decode_head(raw)

    def list_executions(self, job: str, limit: int = 20, before: int | None = None) -> list[dict]:
        """Newest first; with `before`, only ids smaller than it."""
        prefix = job_prefix(job)
        bound = prefix + (END if before is None else u64(max(0, min(before, (1 << 64) - 1))))
        out: list[dict] = []
        with self._reading() as txn:
            cur = txn.cursor(db=self._dbs["executions"])
            found = cur.prev() if cur.set_range(bound) else cur.last()
            while found and len(out) < limit and cur.key()[: len(prefix)] == prefix:
                out.append(decode_record(cur.value()))
                found = cur.prev()
        return out

    def recent_executions(self, query: RecentQuery) -> tuple[list[dict], str | None]:
        """Executions of every job (or of ``query.jobs``), newest first, and the ``before`` of the
        next page (None at the end): ``overseer.store.recent``."""
        with self._reading() as txn:
            return recent(txn, self._dbs["executions"], query)

    def last_execution(self, job: str) -> dict | None:
        newest = self.list_executions(job, 1)
        return newest[0] if newest else None

    def last_summary(self, job: str) -> dict | None:
        """The newest execution of `job` without its events, read no further than its head (the
        job list: a run with a thousand long events costs what a run with none does)."""
        prefix = job_prefix(job)
        with self._reading() as txn:
            cur = txn.cursor(db=self._dbs["executions"])
            found = cur.prev() if cur.set_range(prefix + END) else cur.last()
            if found and cur.key()[: len(prefix)] == prefix:
                return decode_head(cur.value())
        return None

    def update_execution(self, job: str, ident: int, fn: Callable[[dict], dict | None],
                         durable: bool = True) -> dict:
        """Run `fn` on a copy of the record in the writer thread, inside the write transaction,
        and store what it returns (or the mutated copy when it returns None).  `fn` runs again
        if its batch is replayed (after the map grows, or when another op of the batch fails after
        writing), so it must depend on the record alone, and it must not call the store's write
        methods.  Its exceptions reach the caller and only fail this update; NotFound when the
        execution does not exist."""
        return self._update_async(job, ident, fn, durable).result()

    def update_execution_async(self, job: str, ident: int, fn: Callable[[dict], dict | None],
                               durable: bool = False, inline: bool = True) -> Promise:
        """``update_execution`` without waiting: a Promise (a Future's methods) of the stored
        record. Ops are committed in the order they were queued, so a later write (or ``flush``)
        waiting means this one is in. ``inline=False``: queued for the writer thread (to be
        committed with what else is queued), never committed on this thread."""
        return self._update_async(job, ident, fn, durable, inline)

    def _update_async(self, job: str, ident: int, fn: Callable, durable: bool,
                      inline: bool = True) -> Promise:
        return self._writer.submit(self._records.update, (job, ident, exec_key(job, ident), fn), durable,
                                   inline=inline)

    def executions_in_states(self, states: set[str]) -> list[dict]:
        """Every execution (of every job) whose state is one of `states`."""
        states = set(states)
        markers = [state_marker(state) for state in states]
        found = []
        with self._reading() as txn:
            for _key, value in txn.cursor(db=self._dbs["executions"]):
                raw = bytes(value)
                if any(marker in raw for marker in markers):
                    record = decode_record(raw)
                    if record.get("state") in states:
                        found.append(record)
        return found

    # output

    def append_output(self, job: str, ident: int, stream: str, data: bytes) -> None:
        """Queue `data` to the end of `stream` ("stdout" or "stderr"); empty data is a no-op."""
        if not data:
            return
        code = STREAM_CODES.get(stream) if isinstance(stream, str) else None
        if code is None:
            stream_code(stream)
            raise ValueError("output is appended to stdout or stderr, not to the interleaved output")
        self._writer.append(exec_key(job, ident), code, bytes(data))

    def output_lost(self, job: str, ident: int) -> dict | None:
        """The output of the execution the store could not write (a full disk) since this store
        opened: ``{"stdout": N, "stderr": M, "cause": WHY}``, or None when none was lost. Exact when
        read inside an ``update_execution`` function queued after the execution's last append."""
        entry = self._writer.lost.get(exec_key(job, ident))
        return None if entry is None else {"stdout": entry[0], "stderr": entry[1], "cause": entry[2]}

    def forget_lost(self, job: str, ident: int) -> None:
        """The execution's end told its lost output: the count is no longer kept."""
        self._writer.lost.pop(exec_key(job, ident), None)

    def output_size(self, job: str, ident: int, stream: str) -> int:
        code, ekey = stream_code(stream), exec_key(job, ident)
        chunks = self._dbs["chunks"]
        with self._reading() as txn:
            if code is not None:
                return stream_size(txn, chunks, ekey, code)
            return stream_size(txn, chunks, ekey, STDOUT) + stream_size(txn, chunks, ekey, STDERR)

    def read_output(self, job: str, ident: int, stream: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        """Up to `limit` bytes of `stream` from byte `offset` (of that stream)."""
        code, ekey = stream_code(stream), exec_key(job, ident)
        if offset < 0:
            raise ValueError(f"offset must not be negative, not {offset}")
        with self._reading() as txn:
            if code is not None:
                return read_stream(txn, self._dbs["chunks"], ekey, code, offset, limit)
            return read_interleaved(txn, self._dbs["chunks"], self._dbs["interleave"], ekey, offset, limit)

    def iter_output(self, job: str, ident: int, stream: str, offset: int = 0,
                    chunk: int = 1 << 20) -> Iterator[bytes]:
        """The output from `offset` to its current end, `chunk` bytes at a time, each piece read in
        its own short read transaction (a slow consumer pins no pages)."""
        while True:
            data = self.read_output(job, ident, stream, offset, chunk)
            if not data:
                return
            yield data
            offset += len(data)

    def wait_output(self, job: str, ident: int, stream: str, size: int, timeout: float) -> bool:
        """Return when `stream` holds more than `size` bytes (True), the record changed (True), or
        `timeout` seconds passed (False).  A record change committed before the call is not seen:
        a follower checks the record after each return and waits with a modest timeout."""
        ekey = exec_key(job, ident)
        stream_code(stream)
        return self._watches.wait(ekey, lambda: self.output_size(job, ident, stream) > size, timeout)

    # schedule state

    def last_fire(self, job: str, entry_key: str) -> datetime | None:
        key = schedule_key(job, entry_key)
        with self._reading() as txn:
            raw = txn.get(key, db=self._dbs["schedule"])
            return None if raw is None else decode_time(raw)

    def set_last_fire(self, job: str, entry_key: str, when: datetime, wait: bool = True) -> Promise:
        """Store an entry's last fire time (durable). Writes queued before an execution's create
        commit with it or before it, never after. Without ``wait`` it is only queued (committed
        with what is queued next)."""
        key = schedule_key(job, entry_key)
        future = self._writer.submit(self._op_put, ("schedule", key, encode_time(when)), durable=True,
                                     inline=wait)
        if wait:
            future.result()
        return future

    # reading

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        self._rw.acquire_shared()
        try:
            if self._env_closed:
                raise StoreError(f"the store at {self.path} is closed")
            try:
                txn = self._env.begin(buffers=True)
            except lmdb.ReadersFullError:
                # Slots held by a process that died stay taken until someone checks: free them and
                # try once more before telling the caller the store is busy.
                stale = self._env.reader_check()
                if stale:
                    log.warning("store %s: cleared %d stale reader slots", self.path, stale)
                try:
                    txn = self._env.begin(buffers=True)
                except lmdb.ReadersFullError as exc:
                    raise StoreBusy(
                        f"every LMDB reader slot of the store at {self.path} is in use") from exc
            try:
                yield txn
            finally:
                txn.abort()
        except lmdb.Error as exc:
            raise StoreError(f"cannot read the store at {self.path}: {exc}") from exc
        finally:
            self._rw.release_shared()

    # writing: callers queue ops, the writer thread runs them

    def wait_commit(self, timeout: float) -> bool:
        """Wait for the next commit of the writer (True) or `timeout` seconds (False)."""
        return self._watches.wait_commit(timeout)

    # ops: run in the writer thread as fn(batch, *args); records' ops are in records.py

    def _op_noop(self, batch: Batch) -> None:
        return None

    def _op_put(self, batch: Batch, db: str, key: bytes, value: bytes) -> None:
        batch.txn.put(key, value, db=self._dbs[db])
