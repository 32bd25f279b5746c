"""What many live processes do to a process start on this machine, without Overseer.

    python benchmarks/process_count_bench.py [--sleepers 2000] [--samples 200] [--reps 3] [--cgroups]

A bare ``os.posix_spawn`` loop starts ``/bin/sh -c 'echo x > FIFO'`` every 10 ms and times it to
the FIFO read (as case 1 and 4 of ``run_all.py`` do), first with nothing else running, then with
``--sleepers`` ``sleep`` processes alive (each in a cgroup of its own with ``--cgroups``, as
Overseer runs jobs; needs a writable cgroup2 hierarchy). It prints p50 and p99 per repetition
and when, in seconds from the start of each phase, the slow starts (over 8 ms) came: the
baseline for case 4's "p99 with 2,000 running against idle". It also times the ``posix_spawn``
call alone (the parent's part: the clone, and the wait until the child's exec begins; glibc's
``posix_spawn`` is a ``CLONE_VFORK``), which tells a stall of the clone from one of the new
process.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lib import percentile  # noqa: E402


def phase(fifo: str, fd: int, samples: int, reps: int) -> tuple[list[float], list[float], list[float],
                                                                 list[float]]:
    """p50s and p99s to the FIFO read, p99s of the call alone, and when the slow starts came."""
    env = dict(os.environ)
    argv = ["/bin/sh", "-c", f"echo x > {fifo}"]
    p50, p99, call_p99, slow = [], [], [], []
    began = time.monotonic()
    for _ in range(reps):
        out, calls = [], []
        for i in range(samples + 10):
            t0 = time.perf_counter()
            pid = os.posix_spawn("/bin/sh", argv, env, setsid=True)
            t1 = time.perf_counter()
            os.read(fd, 64)
            took = time.perf_counter() - t0
            os.waitpid(pid, 0)
            if i >= 10:
                out.append(took * 1000)
                calls.append((t1 - t0) * 1000)
                if took > 0.008:
                    slow.append(round(time.monotonic() - began, 2))
            time.sleep(0.01)
        p50.append(statistics.median(out))
        p99.append(percentile(out, 99))
        call_p99.append(percentile(calls, 99))
    return p50, p99, call_p99, slow


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sleepers", type=int, default=2000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cgroups", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="process-count-"))
    fifo = str(tmp / "fifo")
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR)
    root = Path(f"/sys/fs/cgroup/unified/process-count-{os.getpid()}")
    if not root.parent.is_dir():
        root = Path(f"/sys/fs/cgroup/process-count-{os.getpid()}")
    pids: list[int] = []
    try:
        for name, count in (("idle", 0), (f"{args.sleepers} sleeping", args.sleepers)):
            if count:
                if args.cgroups:
                    root.mkdir()
                for i in range(count):
                    pid = os.posix_spawn("/bin/sleep", ["sleep", "600"], dict(os.environ), setsid=True)
                    pids.append(pid)
                    if args.cgroups:
                        (root / f"s{i}").mkdir()
                        (root / f"s{i}" / "cgroup.procs").write_text(str(pid))
                time.sleep(1)
            p50, p99, call_p99, slow = phase(fifo, fd, args.samples, args.reps)
            print(f"{name:>16}: p50 {' '.join(f'{v:.2f}' for v in p50)} ms; "
                  f"p99 {' '.join(f'{v:.2f}' for v in p99)} ms; "
                  f"call alone p99 {' '.join(f'{v:.2f}' for v in call_p99)} ms; "
                  f"slow (>8 ms) at s {slow[:15]}")
    finally:
        for pid in pids:
            os.kill(pid, 9)
        for pid in pids:
            os.waitpid(pid, 0)
        if args.cgroups and root.exists():
            for child in root.iterdir():
                if child.is_dir():
                    child.rmdir()
            root.rmdir()
        os.close(fd)
        os.unlink(fifo)
        tmp.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
