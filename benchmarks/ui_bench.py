"""What the web UI costs (issue 19's targets), measured against ``overseer serve`` started as a
user starts it. Not part of run_all.py: run it alone, on a quiet machine.

1. ``log``: a 1,000,000-line output in headless Chromium (Debian's /usr/bin/chromium through
   Playwright): from navigation to the first rendered lines, to every line read, and from Enter
   to the hit on the last line. Target: first lines < 1 s, search < 0.5 s.
2. ``jobs``: the server time of the jobs page (``GET /ui/``, its access-log figure) with 10,000
   jobs that have run, page 1, a filter and a later page. Target: < 200 ms.
3. ``tabs``: 100 open execution pages' event streams (on 10 running executions that write a
   line every 100 ms): the server's threads and RSS, and the API's latency (``GET /jobs/JOB/ID``)
   against the same server idle. Target: within 1.2x idle.

    .venv/bin/python benchmarks/ui_bench.py [log jobs tabs] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import re
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lib import Overseer, make_repo, percentile, proc_status  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
ACCESS = re.compile(r"overseer\.http\.access: \S+ GET (\S+) 200 ([0-9.]+)ms")


def log_case(work: Path, repeats: int = 5) -> dict:
    from playwright.sync_api import sync_playwright

    repo = work / "repo"
    make_repo(repo, {"million.yml": "command: seq 1 1000000 | sed 's/^/line /'\n"})
    server = Overseer(work / "server", repo).start()
    try:
        http = server.http()
        run = http.json("POST", "/jobs/million", {})
        while http.json("GET", f"/jobs/million/{run['id']}")["state"] != "finished":
            time.sleep(0.05)
        url = f"http://127.0.0.1:{server.port}/ui/jobs/million/{run['id']}"
        first, loaded, search = [], [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            for _ in range(repeats):
                # bypass_csp: the probes below are evaluated strings, which the page's CSP forbids
                page = browser.new_page(viewport={"width": 1360, "height": 900}, bypass_csp=True)
                page.goto(url, wait_until="commit")
                page.wait_for_function("document.querySelector('.log-row:not([hidden]) .log-num')")
                first.append(page.evaluate("performance.now()") / 1000)
                page.wait_for_function("window.overseerLog && window.overseerLog.data.count === 1000000 "
                                       "&& !window.overseerLog.data.loading", timeout=120_000)
                loaded.append(page.evaluate("performance.now()") / 1000)
                took = page.evaluate("""async () => {
                    const box = document.getElementById('log-search');
                    box.value = 'line 1000000';
                    const t0 = performance.now();
                    await window.overseerLog.find(box.value, 1, true);
                    await new Promise(requestAnimationFrame);
                    if (!document.querySelector('mark.hit.current')) throw new Error('no hit drawn');
                    return performance.now() - t0; }""")
                search.append(took / 1000)
                rows = page.evaluate("document.querySelectorAll('.log-row').length")
                page.close()
            browser.close()
        return {"lines": 1_000_000, "bytes": len(b"".join(b"line %d\n" % i for i in range(1, 1_000_001))),
                "first_lines_s": statistics.median(first), "all_read_s": statistics.median(loaded),
                "search_last_line_s": statistics.median(search), "rows_in_page": rows,
                "runs": repeats, "first_lines_all": first, "search_all": search}
    finally:
        server.stop()


def server_times(log_path: Path, path: str) -> list[float]:
    return [float(ms) for p, ms in ACCESS.findall(log_path.read_text()) if p == path]


def jobs_case(work: Path, jobs: int = 10_000, requests_per_page: int = 20) -> dict:
    repo = work / "repo"
    files = {}
    for i in range(jobs):
        text = f"description: bench job {i}, one of {jobs}\n"
        if i % 10 == 0:
            text += "schedule:\n  - frequency: '*/5 * * * *'\n"
        files[f"team-{i // 1000:02d}/job-{i:05d}.yml"] = text  # no command: a run completes at once
    make_repo(repo, files)
    server = Overseer(work / "server", repo, {"execution": {"max_queued": 100000}}).start(timeout=600)
    try:
        http = server.http()
        names = [f"team-{i // 1000:02d}.job-{i:05d}" for i in range(jobs)]
        for i, name in enumerate(names):
            for _ in range(3 if i < 200 else 1):
                http.json("POST", f"/jobs/{name}", {})
        pages = {"/ui/": "page 1", "/ui/?q=job-0999": "a filter (11 jobs)",
                 "/ui/?page=50": "page 50", "/ui/?q=bench": "a filter that matches every job"}
        out = {"jobs": jobs}
        for path, what in pages.items():
            client = []
            for _ in range(requests_per_page):
                t0 = time.perf_counter()
                status, body = http.request("GET", path)
                client.append((time.perf_counter() - t0) * 1000)
                assert status == 200, (path, status)
            time.sleep(0.2)  # the access log line of the last request
            server_ms = server_times(server.log_path, path)
            out[what] = {"server_ms_median": statistics.median(server_ms),
                         "server_ms_p95": percentile(server_ms, 95),
                         "client_ms_median": statistics.median(client), "html_bytes": len(body)}
        return out
    finally:
        server.stop()


class Tabs:
    """``count`` open execution pages' event streams, read by one thread (the client stays light)."""

    def __init__(self, port: int, paths: list[str], count: int):
        self.sel = selectors.DefaultSelector()
        self.socks = []
        self.received = 0
        self.stopped = threading.Event()
        for k in range(count):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(f"GET {paths[k % len(paths)]} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Accept: text/event-stream\r\n\r\n".encode())
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ)
            self.socks.append(s)
        self.reader = threading.Thread(target=self._pump, daemon=True)
        self.reader.start()

    def _pump(self) -> None:
        while not self.stopped.is_set():
            for key, _ in self.sel.select(0.1):
                try:
                    self.received += len(key.fileobj.recv(65536))
                except BlockingIOError:
                    continue

    def close(self) -> None:
        self.stopped.set()
        self.reader.join()
        for s in self.socks:
            s.close()


def tabs_case(work: Path, tabs: int = 100, running: int = 10, samples: int = 300, rounds: int = 5) -> dict:
    """Rounds of (API latency idle, then with the tabs open), so that the machine's other load
    falls on both alike; the figures are the medians over the rounds."""
    repo = work / "repo"
    make_repo(repo, {"ticker.yml": "command: i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done\n",
                     "hello.yml": "command: echo hello\n"})
    pool = tabs + 64
    config = {"server": {"thread_pool": pool, "max_follows": tabs + 28}}
    server = Overseer(work / "server", repo, config).start()
    try:
        http = server.http()
        ids = [http.json("POST", "/jobs/ticker", {})["id"] for _ in range(running)]
        done = http.json("POST", "/jobs/hello", {})["id"]
        paths = [f"/ui/jobs/ticker/{i}/stream" for i in ids]
        time.sleep(1)

        def latency() -> tuple[float, float]:
            got = []
            for _ in range(samples):
                t0 = time.perf_counter()
                status, _ = http.request("GET", f"/jobs/hello/{done}")
                got.append((time.perf_counter() - t0) * 1000)
                assert status == 200
            return statistics.median(got), percentile(got, 95)

        latency()  # warm
        idle, loaded, statuses = [], [], []
        received = 0
        for _ in range(rounds):
            idle_status = proc_status(server.pid)
            idle.append(latency())
            open_tabs = Tabs(server.port, paths, tabs)
            deadline = time.monotonic() + 30
            while open_tabs.received < tabs * 300 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1)
            statuses.append((idle_status, proc_status(server.pid)))
            loaded.append(latency())
            received += open_tabs.received
            open_tabs.close()
            time.sleep(1.5)  # the server notices the closed streams
        med = statistics.median
        out = {"tabs": tabs, "running_executions": running, "thread_pool": pool, "rounds": rounds,
               "threads_idle": statuses[-1][0]["Threads"], "threads_with_tabs": statuses[-1][1]["Threads"],
               "rss_idle_mib": med(s[0]["VmRSS"] for s in statuses) / 2**20,
               "rss_with_tabs_mib": med(s[1]["VmRSS"] for s in statuses) / 2**20,
               "api_idle_p50_ms": med(p for p, _ in idle), "api_idle_p95_ms": med(p for _, p in idle),
               "api_tabs_p50_ms": med(p for p, _ in loaded), "api_tabs_p95_ms": med(p for _, p in loaded),
               "stream_bytes_received": received}
        out["p50_ratio"] = out["api_tabs_p50_ms"] / out["api_idle_p50_ms"]
        out["p95_ratio"] = out["api_tabs_p95_ms"] / out["api_idle_p95_ms"]
        return out
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=["log", "jobs", "tabs"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {}
    for case in args.cases:
        with tempfile.TemporaryDirectory(prefix=f"ui-bench-{case}-") as tmp:
            t0 = time.monotonic()
            results[case] = {"log": log_case, "jobs": jobs_case, "tabs": tabs_case}[case](Path(tmp))
            results[case]["case_seconds"] = time.monotonic() - t0
        print(json.dumps({case: results[case]}, indent=2), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
