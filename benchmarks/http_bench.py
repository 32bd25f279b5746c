"""HTTP API throughput and trigger latency, against a real `overseer serve` in a temp dir.

    python benchmarks/http_bench.py [--clients 8] [--seconds 2] [--reps 5]

Measures, each as the median over repetitions:

* requests/s of GET /jobs/JOB/ID (execution metadata: one LMDB read),
* requests/s of POST /jobs/JOB for a job running `true` (validate, durable
  store write, queue, fork/exec),
* trigger-to-first-output-byte latency: POST /jobs/JOB, then GET
  .../output?follow=true until the first byte arrives (job: `echo`).

Clients are threads, each with its own requests.Session (keep-alive). The
server runs as a subprocess (`overseer serve -c CONFIG --log-level warning`).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import yaml

GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_repo(root: Path) -> None:
    root.mkdir()
    (root / "noop.yml").write_text("command: 'true'\n")
    (root / "echo.yml").write_text("command: echo first-byte\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "bench jobs"]):
        subprocess.run(["git", *args], cwd=root, env=GIT_ENV, check=True, capture_output=True)


def serve_command() -> list[str]:
    script = Path(sys.executable).with_name("overseer")
    if script.exists():
        return [str(script)]
    found = shutil.which("overseer")
    return [found] if found else [sys.executable, "-m", "overseer.cli"]


def wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode}")
        try:
            if requests.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not become healthy in time")


def throughput(clients: int, seconds: float, request) -> float:
    """Requests per second of `request(session)` from `clients` threads for `seconds`."""
    counts = [0] * clients
    errors: list[str] = []
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(i: int) -> None:
        session = requests.Session()
        start.wait()
        while time.monotonic() < stop_at[0]:
            resp = request(session)
            if resp.status_code >= 400:
                errors.append(f"{resp.status_code} {resp.text[:100]}")
                return
            counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.monotonic() + seconds
    began = time.monotonic()
    start.wait()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"request failed: {errors[0]}")
    return sum(counts) / (time.monotonic() - began)


def wait_idle(base: str, job: str, timeout: float = 120) -> None:
    """Until the newest execution of `job` is finished (the queue has drained)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        newest = requests.get(f"{base}/jobs/{job}?limit=1", timeout=10).json()["executions"]
        if not newest or newest[0]["state"] == "finished":
            return
        time.sleep(0.1)
    raise SystemExit(f"{job} executions did not finish in time")


def first_byte_latency(base: str, session: requests.Session) -> float:
    began = time.perf_counter()
    created = session.post(f"{base}/jobs/echo", timeout=30)
    created.raise_for_status()
    ident = created.json()["id"]
    with session.get(f"{base}/jobs/echo/{ident}/output?follow=true", stream=True, timeout=30) as resp:
        for chunk in resp.iter_content(chunk_size=1):
            if chunk:
                return time.perf_counter() - began
    raise SystemExit(f"echo/{ident} gave no output")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=2.0, help="length of one throughput repetition")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--latency-reps", type=int, default=30)
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="overseer-http-bench-"))
    proc = None
    try:
        make_repo(tmp / "jobs")
        port = free_port()
        config = {"repository": {"url": str(tmp / "jobs"), "branch": "main", "poll_interval": 0},
                  "data_dir": str(tmp / "data"),
                  "server": {"host": "127.0.0.1", "port": port, "thread_pool": max(16, args.clients * 2)},
                  "execution": {"max_queued": 100000}}
        (tmp / "config.yaml").write_text(yaml.safe_dump(config))
        base = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([*serve_command(), "serve", "-c", str(tmp / "config.yaml"),
                                 "--log-level", "warning"], stdout=subprocess.DEVNULL,
                                stderr=open(tmp / "server.log", "wb"))  # noqa: SIM115
        wait_healthy(base, proc)

        warm = requests.Session()
        ident = warm.post(f"{base}/jobs/noop", timeout=30).json()["id"]
        wait_idle(base, "noop")
        get_path = f"{base}/jobs/noop/{ident}"
        throughput(args.clients, 0.5, lambda s: s.get(get_path, timeout=30))  # warm-up

        gets = [throughput(args.clients, args.seconds, lambda s: s.get(get_path, timeout=30))
                for _ in range(args.reps)]
        posts = []
        for _ in range(args.reps):
            posts.append(throughput(args.clients, args.seconds,
                                    lambda s: s.post(f"{base}/jobs/noop", timeout=30)))
            wait_idle(base, "noop")
        session = requests.Session()
        first_byte_latency(base, session)  # warm-up
        latencies = sorted(first_byte_latency(base, session) for _ in range(args.latency_reps))

        print(f"overseer HTTP bench: {args.clients} client threads, {args.reps} x {args.seconds:g} s "
              f"per throughput figure, {args.latency_reps} latency samples")
        print(f"  GET /jobs/JOB/ID        {statistics.median(gets):8.0f} req/s (median; "
              f"min {min(gets):.0f}, max {max(gets):.0f})")
        print(f"  POST /jobs/JOB (true)   {statistics.median(posts):8.0f} req/s (median; "
              f"min {min(posts):.0f}, max {max(posts):.0f})")
        p90 = latencies[int(len(latencies) * 0.9) - 1]
        print(f"  trigger -> first byte  {statistics.median(latencies) * 1000:8.1f} ms (median; "
              f"p90 {p90 * 1000:.1f} ms, min {latencies[0] * 1000:.1f} ms)")
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
