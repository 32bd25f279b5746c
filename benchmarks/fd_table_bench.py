"""What a server's open descriptors cost each job start, and what parking them high saves.

    python benchmarks/fd_table_bench.py [--fds 6000] [--reps 300]

A server running 2,000 jobs holds 6,000 descriptors (two pipes and a pidfd each). A child made
by a plain clone copies the whole descriptor table and its exec then closes every one of them.
The native spawn starts the child sharing the table (CLONE_FILES) and has it take a copy of only
the descriptors below its own three (close_range with CLOSE_RANGE_UNSHARE); the runner keeps
running jobs' descriptors high (from ``runner.park_fds_at()``, 8192 at most), so that copy is
small. Three ways, interleaved, each the median and p99 of ``spawn_piped`` of ``/bin/true`` until its exec:

- none:    no extra descriptors open
- low:     ``--fds`` extra descriptors at the lowest numbers (where they would be unparked)
- parked:  the same number from ``runner.park_fds_at()`` up (after raising the limit)
"""
from __future__ import annotations

import argparse
import fcntl
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from overseer.process import runner, spawn  # noqa: E402

ENV = {b"PATH": b"/usr/bin:/bin"}


def one(devnull: int) -> float:
    t = time.perf_counter()
    pid, pidfd, out_r, err_r, _, _ = spawn.spawn_piped(["/bin/true"], "/", ENV, devnull, None)
    took = time.perf_counter() - t
    os.waitpid(pid, 0)
    for fd in (pidfd, out_r, err_r):
        os.close(fd)
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fds", type=int, default=6000)
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=6, help="the ways alternate in this many rounds")
    args = ap.parse_args()
    if not spawn.available():
        print("the native spawn is not available here", file=sys.stderr)
        return 1
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    park_at = runner.park_fds_at()
    if not park_at:
        print("the open-file limit is too low to park descriptors", file=sys.stderr)
        return 1
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    times: dict[str, list[float]] = {"none": [], "low": [], "parked": []}
    per_round = max(1, args.reps // args.rounds)
    for _ in range(args.rounds):
        for way in times:
            if way == "low":
                held = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(args.fds)]
            elif way == "parked":
                held = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(args.fds)]
                moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, park_at) for fd in held]
                for fd in held:
                    os.close(fd)
                held = moved
            else:
                held = []
            times[way].extend(one(devnull) for _ in range(per_round))
            for fd in held:
                os.close(fd)
    print(f"spawn_piped of /bin/true with {args.fds} other descriptors open, "
          f"{per_round * args.rounds} starts each, in {args.rounds} rounds")
    print(f"{'way':8} {'median ms':>10} {'p99 ms':>8}")
    for way, got in times.items():
        got.sort()
        print(f"{way:8} {statistics.median(got) * 1e3:10.2f} {got[int(len(got) * 0.99)] * 1e3:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
