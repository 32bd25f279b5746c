"""Where one execution's time goes, in-process (no HTTP): stage timestamps of the trigger path,
and CPU per execution under load.

    python benchmarks/engine_trace.py [--runs 200] [--executions 600]

CPU also counts each server thread kind's context switches per execution (from /proc).
Latency: 200 triggers of ``echo x > FIFO`` 10 ms apart; wrappers put timestamps on the stages
(Store create, Execution launch, environment, cgroup create, process start) and a thread reading
the FIFO marks when the job wrote (a trigger starts its process before it returns);
medians in ms after the trigger call. CPU: N triggers of ``true`` from 16 threads until every run
is finished; the server's user and system CPU per execution (``os.times``) and its children's.
Wrappers cost a little themselves: read the stages as shares, not as absolute figures.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import engine_bench  # noqa: E402
from overseer.actors import execution  # noqa: E402
from overseer.actors.system import System  # noqa: E402

from overseer import store  # noqa: E402
from overseer.config import parse_config  # noqa: E402
from overseer.process import runner  # noqa: E402

MARKS: dict[str, list[float]] = {}


def _mark(name: str) -> None:
    MARKS.setdefault(name, []).append(time.perf_counter())


def _wrap(owner, attr: str, name: str) -> None:
    original = getattr(owner, attr)

    def wrapper(*args, **kwargs):
        _mark(name + " begins")
        try:
            return original(*args, **kwargs)
        finally:
            _mark(name + " ends")

    setattr(owner, attr, wrapper)


def _system(tmp: Path, fifo: Path) -> System:
    engine_bench.make_repo(tmp / "repo", fifo)
    config = parse_config({"repository": {"url": str(tmp / "repo"), "poll_interval": 0},
                           "data_dir": str(tmp / "data")}, Path("engine_trace"))
    return System(config).start()


def latency(runs: int) -> None:
    for owner, attr, name in ((store.Store, "create_execution", "create"),
                              (execution.Execution, "_launch", "launch"),
                              (execution.Execution, "_environment", "environment"),
                              (runner.cgroups.CgroupRoot, "create", "cgroup create"),
                              (runner.ProcessMonitor, "_spawn_native", "spawn (native)"),
                              (runner.subprocess, "Popen", "Popen")):
        _wrap(owner, attr, name)
    tmp = Path(tempfile.mkdtemp())
    fifo = tmp / "fifo"
    os.mkfifo(fifo)
    system = _system(tmp, fifo)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    keep = os.open(fifo, os.O_WRONLY)
    os.set_blocking(fd, True)
    wrote = threading.Event()

    def reader() -> None:  # its own thread: a trigger returns only once the process has started
        while os.read(fd, 2):
            _mark("process wrote")
            wrote.set()

    threading.Thread(target=reader, daemon=True).start()
    try:
        for rep in range(runs + 20):
            if rep == 20:
                MARKS.clear()
            wrote.clear()
            _mark("trigger")
            system.trigger("ping", {})
            _mark("trigger returns")
            wrote.wait(10)
            time.sleep(0.01)
    finally:
        os.close(keep)
        system.stop()
    start = MARKS.pop("trigger")
    rows = [(statistics.median(b - a for a, b in zip(start, times)), name)
            for name, times in MARKS.items() if len(times) == len(start)]
    print(f"trigger path, median ms after the trigger call ({runs} runs):")
    for ms, name in sorted(rows):
        print(f"  {ms * 1000:7.2f}  {name}")


def _switches() -> dict[str, list[int]]:
    """Context switches (voluntary, involuntary) per thread kind, from /proc (names with their
    numbers stripped: "execution-3" counts as "execution")."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    kinds: dict[str, list[int]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if "ctxt_switches" in line)
        except OSError:
            continue
        kind = re.sub(r"[-:_ ]?\d+$|\(.*$", "", names.get(int(tid), "?")).strip() or "?"
        got = kinds.setdefault(kind, [0, 0])
        got[0] += int(fields["voluntary_ctxt_switches"])
        got[1] += int(fields["nonvoluntary_ctxt_switches"])
    return kinds


def cpu(executions: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    fifo = tmp / "fifo"
    os.mkfifo(fifo)
    system = _system(tmp, fifo)
    try:
        for _ in range(20):
            system.trigger("noop", {})
        time.sleep(1)
        with ThreadPoolExecutor(16, thread_name_prefix="trigger") as pool:
            list(pool.map(lambda _: None, range(64)))  # its threads exist before the count
            t0, c0, s0 = time.perf_counter(), os.times(), _switches()
            last = max(pool.map(lambda _: system.trigger("noop", {})["id"], range(executions)))
            while system.store.get_execution("noop", last)["state"] != "finished" or system.ctx.running:
                time.sleep(0.002)
            wall, c1, s1 = time.perf_counter() - t0, os.times(), _switches()
    finally:
        system.stop()
    print("context switches per execution by thread kind (voluntary + involuntary):")
    rows = sorted(((sum(v) - sum(s0.get(k, [0, 0]))) / executions, k, v, s0.get(k, [0, 0]))
                  for k, v in s1.items())
    for per, kind, (vol, inv), (vol0, inv0) in reversed(rows):
        if per >= 0.05:
            print(f"  {per:6.2f}  {kind} ({(vol - vol0) / executions:.2f} + {(inv - inv0) / executions:.2f})")
    user, sys_ = (c1.user - c0.user) / executions, (c1.system - c0.system) / executions
    children = (c1.children_user - c0.children_user + c1.children_system - c0.children_system) / executions
    print(f"{executions} executions of `true` from 16 threads: {executions / wall:.0f}/s; per execution "
          f"server CPU {(user + sys_) * 1000:.2f} ms (user {user * 1000:.2f}, system {sys_ * 1000:.2f}), "
          f"children {children * 1000:.2f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--executions", type=int, default=600)
    args = ap.parse_args()
    cpu(args.executions)  # first: the latency wrappers stay installed
    latency(args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
