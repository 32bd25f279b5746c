"""Engine benchmark: trigger-to-process-start latency and executions per second,
each next to a bare ``subprocess.Popen`` loop measured in the same run.

    python benchmarks/engine_bench.py [--runs 200] [--repeat 3] [--json out.json]

Latency: the job's first act is to write one byte into a FIFO the benchmark
holds open; the time from the trigger call (System.trigger, in-process, no
HTTP) to reading that byte. The baseline starts the same ``/bin/sh -c``
command with Popen and measures the same way. Throughput: N executions of
``true`` triggered from 16 threads, timed until all are finished and stored,
against Popen+wait of ``/bin/sh -c true`` from 16 threads.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from overseer.config import parse_config  # noqa: E402

GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b",
               GIT_COMMITTER_EMAIL="b@b")


def make_repo(root: Path, fifo: Path) -> None:
    root.mkdir()
    (root / "ping.yml").write_text(f"command: echo x > {fifo}\n")
    (root / "noop.yml").write_text("command: 'true'\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run(["git", *args], cwd=root, check=True, env=GIT_ENV)


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def latency(start_fn, fifo: Path, runs: int) -> list[float]:
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    keep_w = os.open(fifo, os.O_WRONLY)  # keeps the FIFO from reporting EOF between runs
    os.set_blocking(fd, True)
    out = []
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            start_fn()
            os.read(fd, 2)
            out.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.01)
    finally:
        os.close(fd)
        os.close(keep_w)
    return out


def throughput(run_one, n: int, threads: int = 16) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: run_one(), range(n)))
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    from overseer.actors.system import System

    tmp = Path(tempfile.mkdtemp(prefix="overseer-bench-"))
    fifo = tmp / "fifo"
    os.mkfifo(fifo)
    make_repo(tmp / "jobs", fifo)
    config = parse_config({"repository": {"url": str(tmp / "jobs"), "poll_interval": 0},
                           "data_dir": str(tmp / "data"),
                           "execution": {"max_concurrent": 64}})
    system = System(config).start()
    done = threading.Condition()
    results: dict[str, list] = {"latency_overseer": [], "latency_popen": [],
                                "eps_overseer": [], "eps_popen": []}
    try:
        for _ in range(args.repeat):
            results["latency_popen"] += latency(
                lambda: subprocess.Popen(["/bin/sh", "-c", f"echo x > {fifo}"], stdin=subprocess.DEVNULL,
                                         start_new_session=True), fifo, args.runs)
            results["latency_overseer"] += latency(lambda: system.trigger("ping", {}), fifo, args.runs)
            results["eps_popen"].append(throughput(
                lambda: subprocess.run(["/bin/sh", "-c", "true"], stdin=subprocess.DEVNULL), args.runs * 2))

            def run_noop():
                rec = system.trigger("noop", {})
                while system.store.get_execution("noop", rec["id"])["state"] != "finished":
                    system.store.wait_output("noop", rec["id"], "output", 0, 0.5)
            results["eps_overseer"].append(throughput(run_noop, args.runs * 2))
    finally:
        system.stop()
        del done
    table = {
        "latency_p50_ms": {"overseer": statistics.median(results["latency_overseer"]),
                           "popen": statistics.median(results["latency_popen"])},
        "latency_p99_ms": {"overseer": percentile(results["latency_overseer"], 99),
                           "popen": percentile(results["latency_popen"], 99)},
        "executions_per_s": {"overseer": statistics.median(results["eps_overseer"]),
                             "popen": statistics.median(results["eps_popen"]),
                             "overseer_min_max": [min(results["eps_overseer"]), max(results["eps_overseer"])],
                             "popen_min_max": [min(results["eps_popen"]), max(results["eps_popen"])]},
    }
    for key, row in table.items():
        ratio = row["overseer"] / row["popen"]
        row["ratio"] = ratio
        print(f"{key:18} overseer {row['overseer']:9.2f}   popen {row['popen']:9.2f}   ratio {ratio:5.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
