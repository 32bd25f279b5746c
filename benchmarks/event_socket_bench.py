"""What one call of the event socket costs, seen from a job.

    python benchmarks/event_socket_bench.py [--calls 2000] [--tools 100] [--reps 3]

Starts ``overseer serve`` (as a user starts it) with one job that, inside its execution, times
(``time.perf_counter``) two things and prints them:

- ``socket``: one request as the ``event`` tool makes it (connect to ``$OVERSEER_SOCKET``, send
  ``{token, event, cause}``, read the answer line), ``--calls`` times in one Python process, so
  the figure is the server's work for a call (accept, identify the caller, record the event)
  and not the tool's interpreter start;
- ``refused``: the same with an event name the server refuses (``bad name!``) after it has
  taken the token and the caller's identity: the socket's own part, without the Store write;
- ``tool``: the ``event`` tool itself, ``--tools`` times from ``/bin/sh``: what a job's
  ``event NAME`` costs, Python's start included.

Each repetition is a new execution of the job on the same server (each event is added to its
run's record, so a run makes a few hundred only). Prints the median (and the 10th and 90th
percentiles) of each, in microseconds, per repetition and over all of them.

    python benchmarks/event_socket_bench.py --identify 5000

times only what the server does to name a caller (``overseer.process.identity``: ``Callers.identify``
on an accepted connection, then ``Callers.of``), in this process, for connections from a child
process, by the native call and by the Python fallback: as in a server without cgroups, in one
with cgroups for a caller in a run's session (the common case: its session only), and for one
that left its session (its cgroup is read too: the most a call costs).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_lib as bl  # noqa: E402

MEASURE = r'''
import json, os, socket, subprocess, sys, time
calls, tools = int(sys.argv[1]), int(sys.argv[2])
path, token = os.environ["OVERSEER_SOCKET"], os.environ["OVERSEER_TOKEN"]
line = json.dumps({"token": token, "event": "bench", "cause": None}).encode() + b"\n"
bad = json.dumps({"token": token, "event": "bad name!", "cause": None}).encode() + b"\n"
def once(request, ok):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(request)
        reply = b""
        while not reply.endswith(b"\n"):
            data = s.recv(4096)
            if not data:
                break
            reply += data
    answer = json.loads(reply)
    assert answer["ok"] is ok and (ok or "must match" in answer["error"]), reply
for _ in range(20):
    once(line, True)
    once(bad, False)
socket_us, refused_us = [], []
for _ in range(calls):
    t = time.perf_counter()
    once(line, True)
    socket_us.append((time.perf_counter() - t) * 1e6)
    t = time.perf_counter()
    once(bad, False)
    refused_us.append((time.perf_counter() - t) * 1e6)
tool_us = []
for _ in range(tools):
    t = time.perf_counter()
    subprocess.run(["event", "bench-tool"], check=True)
    tool_us.append((time.perf_counter() - t) * 1e6)
print(json.dumps({"socket": socket_us, "refused": refused_us, "tool": tool_us}))
'''


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def _line(name: str, values: list[float]) -> str:
    return (f"{name:7} median {statistics.median(values):8.1f} us   p10 {_pct(values, 0.1):8.1f}"
            f"   p90 {_pct(values, 0.9):8.1f}   n={len(values)}")


def identify(count: int) -> int:
    import socket
    import subprocess

    from overseer.process import identity
    from overseer.process.identity import Callers

    with tempfile.TemporaryDirectory(prefix="event-socket-identify-") as tmp:
        path = f"{tmp}/s"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(128)
        native = identity._native_identify
        # a server without cgroups; one with, and a caller in a run's session; one with, and a
        # caller that left its session (its cgroup is read too)
        session, left = Callers("/not-this-one/"), Callers("/not-this-one/")
        cases = [(name, callers, way) for way in ("native", "python")
                 for name, callers in (("no cgroups", Callers(None)), ("session", session),
                                       ("left session", left))]
        client = subprocess.Popen([sys.executable, "-c", (
            "import socket, sys\n"
            "for _ in range(int(sys.argv[2])):\n"
            "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(sys.argv[1])\n"
            "    s.recv(1); s.close()\n"), path, str(len(cases) * count)], start_new_session=True)
        session.add_session(client.pid, "a run")
        for name, callers, way in cases:
            identity._native_identify = native if way == "native" else None
            times = []
            for _ in range(count):
                conn, _ = listener.accept()
                t = time.perf_counter()
                callers.of(callers.identify(conn))
                times.append((time.perf_counter() - t) * 1e6)
                conn.close()
            print(f"  {way:6} {name:13}" + _line("", times))
        identity._native_identify = native
        client.wait(60)
        listener.close()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--tools", type=int, default=20)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--identify", type=int, metavar="N",
                   help="time only the naming of the caller, N connections each way")
    args = p.parse_args()
    if args.identify:
        return identify(args.identify)
    with tempfile.TemporaryDirectory(prefix="event-socket-bench-") as tmp:
        work = Path(tmp)
        bl.make_repo(work / "jobs", {
            "scripts/measure.py": MEASURE,
            "measure.yml": f"command: python3 scripts/measure.py {args.calls} {args.tools}\n",
        })
        # retention keeps the runs' records small: each call adds an event to its run's record
        server = bl.Overseer(work / "server", work / "jobs",
                             {"retention": {"executions_per_job": 10}}).start()
        http = server.http()
        every = {"socket": [], "refused": [], "tool": []}
        try:
            for rep in range(args.reps):
                ident = http.json("POST", "/jobs/measure", {})["id"]
                deadline = time.monotonic() + 600
                while (meta := http.json("GET", f"/jobs/measure/{ident}"))["state"] != "finished":
                    if time.monotonic() > deadline:
                        raise RuntimeError("the measuring job did not finish")
                    time.sleep(0.2)
                status, out = http.request("GET", f"/jobs/measure/{ident}/stdout")
                if meta["status"] != "complete":
                    _, err = http.request("GET", f"/jobs/measure/{ident}/output")
                    raise RuntimeError(f"the measuring job ended {meta['status']}: {err[-2000:]!r}")
                result = json.loads(out)
                print(f"repetition {rep + 1}:")
                for name in every:
                    print("  " + _line(name, result[name]))
                    every[name] += result[name]
        finally:
            http.close()
            server.stop()
        print("all repetitions:")
        for name in every:
            print("  " + _line(name, every[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
