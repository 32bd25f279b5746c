"""Output appends per second through Store.append_output, next to raw py-lmdb.

    python benchmarks/store_bench.py [--reps N] [--json out.json]

For each append size (64 KiB and 100 bytes) and each repetition, in a fresh
LMDB environment each time:

* store: one execution, N appends to stdout through ``Store.append_output``,
  then ``flush()``; the flush counts in the time.  The writer's average batch
  size (ops per commit) is read from ``Store.stats()``.
* raw: py-lmdb with the same flags (sync=False, metasync=False), the same N
  appends as one key per append, one write transaction per batch of that
  average size.  Which of the two runs first alternates between repetitions.

Printed: median, min and max appends/s (and MB/s) of each, and the ratio of
the medians store/raw.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import lmdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from overseer.store import Store  # noqa: E402

CASES = (("64KiB", 64 << 10, 1500), ("100B", 100, 100_000))
MAP_SIZE = 1 << 30


def run_store(path: Path, data: bytes, count: int) -> tuple[float, float]:
    """Seconds for `count` appends + flush, and the writer's average ops per batch."""
    store = Store(path, map_size=MAP_SIZE)
    try:
        ident = store.create_execution("bench", {"state": "running"})["id"]
        before = store.stats()
        append = store.append_output
        started = time.perf_counter()
        for _ in range(count):
            append("bench", ident, "stdout", data)
        store.flush()
        elapsed = time.perf_counter() - started
        after = store.stats()
        if store.output_size("bench", ident, "stdout") != count * len(data):
            raise SystemExit("store bench: output size mismatch")
    finally:
        store.close()
    return elapsed, (after["ops"] - before["ops"]) / max(1, after["batches"] - before["batches"])


def run_raw(path: Path, data: bytes, count: int, batch: int) -> float:
    """Seconds for `count` puts, one write transaction per `batch` of them."""
    path.mkdir(parents=True)
    env = lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=4, sync=False, metasync=False)
    try:
        db = env.open_db(b"chunks")
        prefix = b"bench\0" + struct.pack(">Q", 1) + b"1"
        pack = struct.Struct(">Q").pack
        offset, size = 0, len(data)
        started = time.perf_counter()
        for first in range(0, count, batch):
            with env.begin(write=True, db=db) as txn:
                put = txn.put
                for _ in range(first, min(count, first + batch)):
                    put(prefix + pack(offset), data)
                    offset += size
        elapsed = time.perf_counter() - started
    finally:
        env.close()
    return elapsed


def summary(rates: list[float]) -> dict:
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--dir", type=Path, help="where the scratch environments go (default: a temp dir)")
    args = parser.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="store-bench-", dir=args.dir))
    results: dict = {"reps": args.reps, "cases": {}}
    started = time.perf_counter()
    try:
        for name, size, count in CASES:
            data = os.urandom(size)
            store_rates, raw_rates, batches = [], [], []
            for rep in range(args.reps):
                path = base / f"{name}-{rep}"
                if rep % 2:   # alternate which runs first; raw then takes the previous batch size
                    raw_rates.append(count / run_raw(path / "raw", data, count, max(1, round(batches[-1]))))
                elapsed, batch = run_store(path / "store", data, count)
                store_rates.append(count / elapsed)
                batches.append(batch)
                if not rep % 2:
                    raw_rates.append(count / run_raw(path / "raw", data, count, max(1, round(batch))))
                shutil.rmtree(path)
            case = {"append_bytes": size, "appends": count, "store": summary(store_rates),
                    "raw": summary(raw_rates), "avg_batch": statistics.median(batches)}
            case["ratio"] = case["store"]["median"] / case["raw"]["median"]
            results["cases"][name] = case
            print(f"{name} appends x{count}, {args.reps} reps, median ops per writer batch "
                  f"{case['avg_batch']:.0f}")
            for label in ("store", "raw"):
                fig = case[label]
                mbs = fig["median"] * size / 1e6
                print(f"  {label:5}  median {fig['median']:>11,.0f}/s ({mbs:7.1f} MB/s)"
                      f"  min {fig['min']:>11,.0f}/s  max {fig['max']:>11,.0f}/s")
            print(f"  store/raw  {case['ratio']:.2f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    results["seconds"] = time.perf_counter() - started
    results["python"] = sys.version.split()[0]
    results["lmdb"] = lmdb.__version__
    print(f"total {results['seconds']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
