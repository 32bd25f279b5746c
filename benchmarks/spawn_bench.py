"""Starting one job process, six ways: start latency and the parent's CPU per start.

    python benchmarks/spawn_bench.py [--reps 300]

Each start runs ``/bin/sh -c 'echo x > FIFO'`` with stdin on /dev/null and stdout/stderr on new
pipes, in a new session, as the runner starts a job. Latency: from just before the start call to
the parent's read of the child's ``x`` from the FIFO. CPU: the calling thread's user+system time
in the start call and in reaping the child (``time.thread_time``); the child's own CPU is not in
it. The ways, interleaved in every repetition (a fresh cgroup each where there is one; making and
removing it is left out of both figures, as it is the same on every path):

- native:          ``spawn.spawn_piped`` as the runner starts a job (clone3 straight into the
                   cgroup, given by its directory; pipes and pidfd made in the call, added to an
                   epoll set, parked at ``runner.park_fds_at()``, start time read), then
                   ``spawn.reap`` once the pidfd is readable and ``spawn.unwatch`` of both pipes
- popen+entering:  Popen of the ``job_process.entering`` wrapper (the job moves itself in), + pidfd_open
- popen:           bare Popen, no cgroup
- posix_spawn:     ``os.posix_spawn`` with setsid and dup2 file actions, no cgroup
- native, no cgroup: ``native`` without a cgroup (what the cgroup itself costs)
- native-spawn:    ``spawn.spawn``, the plain call: pipes made and cgroup opened in Python, no
                   epoll, no parking, waitpid and close

The runner has ``spawn_piped`` make the cgroup (``make_cgroup=True``) and ``reap`` remove it;
here it is made before the start and removed after the reap, as for every way with a cgroup.

Needs a writable cgroup2 hierarchy (root) for native, popen+entering and native-spawn; without one
they are left out.
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_lib import percentile  # noqa: E402

from overseer.process import cgroups, job_process, runner, spawn  # noqa: E402

ENV = {b"PATH": b"/usr/bin:/bin"}
DEVNULL = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
EPOLL = select.epoll()  # as the runner's ProcessMonitor: one set for every start
PARK_AT = 0  # runner.park_fds_at(), once main() has raised the open-file limit as the server does


def _pipes() -> tuple[int, int, int, int]:
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    return out_r, out_w, err_r, err_w


def start_native(argv: list[str], cgroup: Optional[cgroups.Cgroup]) -> Callable[[], None]:
    pid, pidfd, out_r, err_r, _start_time, _cgroup_error = spawn.spawn_piped(
        argv, None, ENV, DEVNULL, cgroup.path if cgroup else None, EPOLL.fileno(), park_at=PARK_AT)

    def reap() -> None:
        # As the monitor once its epoll set says the pidfd is readable: one reap call (without the
        # cgroup: once() removes it, as for every way), then the pipes out of epoll and closed.
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOWAIT)  # until it has ended; not reaped
        spawn.reap(pid, pidfd, EPOLL, None)
        spawn.unwatch(EPOLL, out_r)
        spawn.unwatch(EPOLL, err_r)
    return reap


def start_native_spawn(argv: list[str], cgroup: Optional[cgroups.Cgroup]) -> Callable[[], None]:
    out_r, out_w, err_r, err_w = _pipes()
    cgroup_fd = cgroup.open_fd() if cgroup else -1
    try:
        pid, pidfd = spawn.spawn(argv, None, ENV, DEVNULL, out_w, err_w, cgroup_fd)
    finally:
        if cgroup_fd >= 0:
            os.close(cgroup_fd)
        os.close(out_w)
        os.close(err_w)

    def reap() -> None:
        os.waitpid(pid, 0)
        for fd in (pidfd, out_r, err_r):
            os.close(fd)
    return reap


def _popen(argv: list[str]) -> Callable[[], None]:
    popen = subprocess.Popen(argv, env=ENV, stdin=DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True, close_fds=True)
    pidfd = os.pidfd_open(popen.pid)  # as the runner: what it waits on

    def reap() -> None:
        popen.wait()
        popen.stdout.close()
        popen.stderr.close()
        os.close(pidfd)
    return reap


def start_popen_entering(argv: list[str], cgroup: Optional[cgroups.Cgroup]) -> Callable[[], None]:
    return _popen(job_process.entering(cgroup, argv))


def start_popen(argv: list[str], cgroup: Optional[cgroups.Cgroup]) -> Callable[[], None]:
    return _popen(argv)


def start_posix_spawn(argv: list[str], cgroup: Optional[cgroups.Cgroup]) -> Callable[[], None]:
    out_r, out_w, err_r, err_w = _pipes()
    actions = [(os.POSIX_SPAWN_DUP2, DEVNULL, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
               (os.POSIX_SPAWN_DUP2, err_w, 2)]
    try:
        pid = os.posix_spawn(argv[0], argv, ENV, file_actions=actions, setsid=True)
    finally:
        os.close(out_w)
        os.close(err_w)

    def reap() -> None:
        os.waitpid(pid, 0)
        os.close(out_r)
        os.close(err_r)
    return reap


WAYS = {"native": (start_native, True), "popen+entering": (start_popen_entering, True),
        "popen": (start_popen, False), "posix_spawn": (start_posix_spawn, False),
        "native, no cgroup": (start_native, False), "native-spawn": (start_native_spawn, True)}


def once(start, root: Optional[cgroups.CgroupRoot], argv: list[str], fifo_r: int,
         n: int) -> tuple[float, float]:
    """One start: (latency, parent CPU) in seconds."""
    cgroup = root.create(f"bench-{n}") if root else None
    cpu0 = time.thread_time()
    t0 = time.perf_counter()
    reap = start(argv, cgroup)
    cpu1 = time.thread_time()
    if not select.select([fifo_r], [], [], 10)[0]:
        raise RuntimeError("the child never wrote")
    t1 = time.perf_counter()
    os.read(fifo_r, 64)
    cpu2 = time.thread_time()
    reap()
    cpu = (cpu1 - cpu0) + (time.thread_time() - cpu2)
    if cgroup:
        while not cgroup.remove():  # empty once the child has exited, at once or nearly
            time.sleep(0.001)
    return t1 - t0, cpu


def _park_at() -> int:
    """``runner.park_fds_at()`` after raising the open-file limit to the hard one, as the server
    does at start."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    return runner.park_fds_at()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=300, help="starts per way (default 300)")
    args = ap.parse_args()
    global PARK_AT
    PARK_AT = _park_at()
    root = cgroups.CgroupRoot.find()
    ways = {name: start for name, (start, needs_cgroup) in WAYS.items()
            if (root or not needs_cgroup) and (not name.startswith("native") or spawn.available())}
    if len(ways) < len(WAYS):
        print(f"left out (no writable cgroup2, or no native spawn): {sorted(set(WAYS) - set(ways))}")
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "fifo")
        os.mkfifo(fifo)
        fifo_r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        keep_open = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # never EOF between children
        argv = ["/bin/sh", "-c", f"echo x > {fifo}"]
        latency: dict[str, list[float]] = {w: [] for w in ways}
        cpu: dict[str, list[float]] = {w: [] for w in ways}
        n = 0
        try:
            for rep in range(args.reps + 10):  # the first 10: warm-up
                order = list(ways)
                random.shuffle(order)
                for way in order:
                    n += 1
                    lat, c = once(ways[way], root if WAYS[way][1] else None, argv, fifo_r, n)
                    if rep >= 10:
                        latency[way].append(lat)
                        cpu[way].append(c)
        finally:
            os.close(fifo_r)
            os.close(keep_open)
            if root:
                root.remove()
    print_table(latency, cpu)
    return 0


def print_table(latency: dict[str, list[float]], cpu: dict[str, list[float]]) -> None:
    base = "native" if "native" in latency else next(iter(latency))
    ref_med = statistics.median(latency[base])
    ref_p99 = percentile(latency[base], 99)
    ref_cpu = statistics.median(cpu[base])
    print(f"{len(latency[base])} starts per way, interleaved; ratios against {base}")
    print(f"{'way':<18}{'median ms':>10}{'p99 ms':>9}{'max ms':>9}{'CPU µs':>9}"
          f"{'median×':>9}{'p99×':>7}{'CPU×':>7}")
    for way in latency:
        med = statistics.median(latency[way])
        p99 = percentile(latency[way], 99)
        c = statistics.median(cpu[way])
        print(f"{way:<18}{med * 1e3:>10.2f}{p99 * 1e3:>9.2f}{max(latency[way]) * 1e3:>9.2f}"
              f"{c * 1e6:>9.0f}{med / ref_med:>9.2f}{p99 / ref_p99:>7.2f}{c / ref_cpu:>7.2f}")


if __name__ == "__main__":
    sys.exit(main())
