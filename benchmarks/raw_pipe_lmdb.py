"""The output-capture baseline: a child's stdout read from a pipe straight into py-lmdb.

    python benchmarks/raw_pipe_lmdb.py DIR COMMAND

Starts ``/bin/sh -c COMMAND`` with stdout on a pipe, reads it in 256 KiB reads (the
server's read size), gathers 1 MiB chunks (the server's largest chunk) and puts each under
its own big-endian offset key in one write transaction per chunk, in an environment opened
as the Store opens its own (sync=False, metasync=False, writemap=False; the map grows by
doubling). Prints one JSON line: bytes, seconds (start of the child to the last commit),
peak RSS of this process.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time

import lmdb

READ_SIZE = 256 << 10
CHUNK = 1 << 20


def main() -> int:
    path, command = sys.argv[1], sys.argv[2]
    os.makedirs(path, exist_ok=True)
    env = lmdb.open(path, map_size=1 << 30, max_dbs=4, sync=False, metasync=False, writemap=False)
    db = env.open_db(b"chunks")
    pack = struct.Struct(">Q").pack
    prefix = b"bench\0" + pack(1) + b"1"
    started = time.perf_counter()
    child = subprocess.Popen(["/bin/sh", "-c", command], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    fd = child.stdout.fileno()
    offset = 0
    buf = bytearray()

    def put(data: bytes) -> None:
        while True:
            try:
                with env.begin(write=True, db=db) as txn:
                    txn.put(prefix + pack(offset), data)
                return
            except lmdb.MapFullError:
                env.set_mapsize(env.info()["map_size"] * 2)

    while True:
        data = os.read(fd, READ_SIZE)
        if not data:
            break
        buf += data
        if len(buf) >= CHUNK:
            put(bytes(buf))
            offset += len(buf)
            buf.clear()
    if buf:
        put(bytes(buf))
        offset += len(buf)
    child.wait()
    seconds = time.perf_counter() - started
    env.sync(True)
    env.close()
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
    print(json.dumps({"bytes": offset, "seconds": seconds, "peak_rss": hwm}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
