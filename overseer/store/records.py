"""The Store's execution-record ops: they run on the writer thread as ``fn(batch, *args)``.

``RecordOps`` creates records (numbering them from the job's counter and pruning
past the job's ``keep``) and updates them. It keeps the decoded form of the
bytes it last wrote for the records being written now (running executions), so
that a run's start and end do not decode JSON again; that copy is used only
while the stored bytes are still those bytes, so a batch that was rolled back
leaves no trace.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Callable

from overseer.exceptions import NotFound

from .keys import decode_record, encode_appended, encode_record, from_u64, state_marker, u64
from .output import delete_prefix
from .writer import Batch, Rejected

log = logging.getLogger(__name__)

DECODED_KEEP = 4096  # records kept decoded beside the bytes last written (running executions)


def copy_record(record: dict) -> dict:
    """A copy an update may change: the record and its event list (events are only appended)."""
    copy = dict(record)
    if isinstance(copy.get("events"), list):
        copy["events"] = list(copy["events"])
    return copy


class RecordOps:
    """Ops on the ``executions`` and ``counters`` databases (and, when pruning, the output)."""

    def __init__(self, dbs: dict, name: str):
        self._dbs, self._name = dbs, name
        self._decoded: OrderedDict = OrderedDict()  # ekey -> (bytes written, record)

    def create(self, batch: Batch, job: str, prefix: bytes, record: dict, keep: int | None) -> dict:
        txn, counters = batch.txn, self._dbs["counters"]
        raw = txn.get(prefix[:-1], db=counters)
        ident = 1 if raw is None else from_u64(raw)
        record["job"], record["id"] = job, ident
        try:
            data = encode_record(record)
        except Exception as exc:
            raise Rejected(exc) from exc
        ekey = prefix + u64(ident)
        txn.put(prefix[:-1], u64(ident + 1), db=counters)
        txn.put(ekey, data, db=self._dbs["executions"])
        batch.records.add(ekey)
        if keep is not None:
            self._prune(batch, prefix, ekey, max(keep, 1))
        created = decode_record(data)  # the JSON form: what a read of it gives
        self._remember(ekey, data, created)
        return created

    def _prune(self, batch: Batch, prefix: bytes, newest: bytes, keep: int) -> None:
        """Delete the finished executions older than the `keep` newest ids, and their output.

        Seeks straight to the newest candidate (id <= newest - keep) and walks back from
        there: a create costs the few records beyond the limit, not a walk over `keep`."""
        txn, executions = batch.txn, self._dbs["executions"]
        cutoff = from_u64(newest, len(newest) - 8) - keep
        if cutoff < 1:
            return
        cur = txn.cursor(db=executions)
        if not cur.set_range(prefix + u64(cutoff + 1)):
            return
        victims, finished = [], state_marker("finished")
        while cur.prev() and cur.key()[: len(prefix)] == prefix:
            raw = bytes(cur.value())
            if finished in raw and decode_record(raw).get("state") == "finished":
                victims.append(bytes(cur.key()))
        for ekey in victims:
            txn.delete(ekey, db=executions)
            delete_prefix(txn, self._dbs["chunks"], ekey)
            delete_prefix(txn, self._dbs["interleave"], ekey)
            batch.out.forget(ekey)
            batch.records.add(ekey)
            self._decoded.pop(ekey, None)
        if victims:
            log.debug("store %s: pruned %d executions of %r", self._name, len(victims), prefix[:-1])

    def update(self, batch: Batch, job: str, ident: int, ekey: bytes, fn: Callable) -> dict:
        raw = batch.txn.get(ekey, db=self._dbs["executions"])
        if raw is None:
            raise Rejected(NotFound(f"no execution {ident} of job {job!r}"))
        raw = bytes(raw)
        try:
            known = self._decoded.get(ekey)
            # The record as this store last wrote it, if those are still its bytes (a run's start
            # and end update the record just written): no JSON decode. A copy: fn changes it.
            known = known[1] if known is not None and known[0] == raw else None
            record = copy_record(known) if known is not None else decode_record(raw)
            new = fn(record)
            if new is None:
                new = record
            new["job"], new["id"] = job, ident
            data = encode_record(new) if known is None else self._encode_known(new, known, raw)
        except BaseException as exc:
            raise Rejected(exc) from exc
        batch.txn.put(ekey, data, db=self._dbs["executions"])
        batch.records.add(ekey)
        self._remember(ekey, data, new)
        return new

    @staticmethod
    def _encode_known(new: dict, known: dict, raw: bytes) -> bytes:
        """``new``, made from ``known`` (the decoded ``raw``): when its events are ``known``'s with
        more appended (events are only appended), those encoded in ``raw`` are kept as they are."""
        before, after = known.get("events"), new.get("events")
        kept = len(before) if isinstance(before, list) else -1
        if kept >= 0 and isinstance(after, list) and len(after) >= kept and (
                kept == 0 or after[kept - 1] is before[kept - 1]):
            return encode_appended(new, raw, kept)
        return encode_record(new)

    def _remember(self, ekey: bytes, data: bytes, record: dict) -> None:
        """Keep the decoded form of bytes just written (ops run one at a time: no lock)."""
        decoded = self._decoded
        decoded[ekey] = (data, copy_record(record))
        decoded.move_to_end(ekey)
        if len(decoded) > DECODED_KEEP:
            decoded.popitem(last=False)
