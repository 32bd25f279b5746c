"""The seven measurements of ``run_all.py``, each against ``overseer serve -c CONFIG`` and
its baselines, run in the same process and interleaved repetition by repetition.

Each case returns a list of rows: ``{"id", "label", "unit", "better", "overseer": [per-rep
values], "baselines": {name: [per-rep values]}, "target": ...}``; ``run_all`` turns the
per-repetition values into medians, min, max and ratios and checks the targets.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import bench_lib as bl
from bench_lib import Fifo, Http, LineReader, MiB, Overseer, RssSampler, Webhook, percentile

HERE = Path(__file__).resolve().parent


@dataclass
class Sizes:
    reps: int
    latency_samples: int      # (1) per repetition and variant
    throughput_runs: int      # (2) executions per repetition
    output_bytes: int         # (3), (7)
    sleepers: int             # (4)
    schedule_entries: int     # (5)
    schedule_seconds: int     # (5)
    repo_files: int           # (6)
    syncs: int                # (6) one-file syncs per start


QUICK = Sizes(reps=3, latency_samples=100, throughput_runs=400, output_bytes=256 * MiB, sleepers=500,
              schedule_entries=1000, schedule_seconds=20, repo_files=10_000, syncs=3)
FULL = Sizes(reps=5, latency_samples=200, throughput_runs=1000, output_bytes=1024 * MiB, sleepers=2000,
             schedule_entries=5000, schedule_seconds=60, repo_files=10_000, syncs=5)


@dataclass
class Context:
    sizes: Sizes
    work: Path
    profile_dir: Optional[Path] = None
    log_level: Optional[str] = None
    notes: dict = field(default_factory=dict)

    def dir(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def server(self, name: str, repo: Path, config: dict) -> Overseer:
        return Overseer(self.dir(name), repo, config, log_level=self.log_level).start()

    def profile(self, name: str, pid: int) -> Profiler:
        return Profiler(self.profile_dir, name, pid)


PROFILE_MODE = ["gil"]  # gil: samples of the thread holding the GIL (where Python CPU goes);
# wall: every thread, idle ones too (where threads wait); active: py-spy's default


class Profiler:
    """py-spy attached to the server for the measured part of a case (``--profile DIR``);
    a no-op without a profile dir."""

    def __init__(self, out_dir: Optional[Path], name: str, pid: int):
        self.out_dir, self.name, self.pid = out_dir, name, pid
        self.proc: Optional[subprocess.Popen] = None

    def __enter__(self) -> Profiler:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if self.out_dir is None or not Path(spy).exists():
            return self
        self.out_dir.mkdir(parents=True, exist_ok=True)
        out = self.out_dir / f"{self.name}.txt"
        mode = {"gil": ["--gil"], "wall": ["--idle"], "active": []}[PROFILE_MODE[0]]
        argv = [spy, "record", "--pid", str(self.pid), "--rate", "200", "--format", "raw", "--threads",
                "--nonblocking", *mode, "-o", str(out)]
        with open(self.out_dir / f"{self.name}.log", "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
        time.sleep(0.5)  # attached before the measured part begins
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(2)  # SIGINT: py-spy writes its file and exits
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def row(case: int, key: str, label: str, unit: str, overseer: list[float],
        baselines: Optional[dict[str, list[float]]] = None, better: str = "lower",
        target: Optional[dict] = None, extra: Optional[dict] = None) -> dict:
    """A result row. `target`: {"vs": baseline name, "ratio": r} (the overseer median within r
    times the baseline's, in the `better` direction) or {"max": v} / {"min": v}."""
    return {"case": case, "key": key, "label": label, "unit": unit, "better": better,
            "overseer": overseer, "baselines": baselines or {}, "target": target, "extra": extra or {}}


def _interleaved(reps: int, variants: dict[str, Callable[[], object]]) -> dict[str, list]:
    """Run each variant once per repetition, rotating which goes first."""
    names = list(variants)
    out: dict[str, list] = {n: [] for n in names}
    for rep in range(reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            out[name].append(variants[name]())
    return out


def _wait_pid(pid: int) -> None:
    os.waitpid(pid, 0)


# -- (1) trigger-to-process-start latency ------------------------------------------------------
def timed_samples(timed: Callable[[], Callable[[], None]], n: int, gap: float = 0.01,
                  warmup: int = 10) -> list[float]:
    """How long `timed()` takes, in ms, `n` times after `warmup`, `gap` s apart; what it returns
    is called after the clock stops (a reap, a check of the answer)."""
    out = []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        after = timed()
        t1 = time.perf_counter()
        after()
        if i >= warmup:
            out.append((t1 - t0) * 1000)
        time.sleep(gap)
    return out


def latency_samples(start: Callable[[], Callable[[], None]], fifo: Fifo, n: int, gap: float = 0.01,
                    warmup: int = 10) -> list[float]:
    """`start()` starts one run and returns its completion (reap, read the answer); the time from
    just before `start()` to the FIFO read, in ms, `n` times, `gap` s apart."""
    def timed() -> Callable[[], None]:
        finish = start()
        fifo.read(64)
        return finish
    return timed_samples(timed, n, gap, warmup)


def popen_starter(command: str) -> Callable[[], Callable[[], None]]:
    def start():
        p = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, start_new_session=True)
        return p.wait
    return start


def spawn_starter(command: str) -> Callable[[], Callable[[], None]]:
    env = dict(os.environ)

    def start():
        pid = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", command], env, setsid=True)
        return lambda: _wait_pid(pid)
    return start


def http_starter(client: Http, path: str, ok: int) -> Callable[[], Callable[[], None]]:
    def start():
        client.send("POST", path, b"{}")

        def finish():
            status, body = client.answer()
            if status != ok:
                raise RuntimeError(f"POST {path}: {status} {body[:200]!r}")
        return finish
    return start


def round_trip_samples(client: Http, path: str, n: int) -> list[float]:
    """`GET path` on a kept-alive connection, 10 ms apart: the time to the whole answer, in ms."""
    def timed() -> Callable[[], None]:
        status, body = client.request("GET", path)

        def check() -> None:
            if status != 200:
                raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
        return check
    return timed_samples(timed, n)


def case_latency(ctx: Context) -> list[dict]:
    s = ctx.sizes
    work = ctx.dir("1-latency")
    fifo = Fifo(work / "fifo")
    command = f"echo x > {fifo.path}"
    repo = work / "jobs"
    bl.make_repo(repo, {"ping.yml": f"command: {json.dumps(command)}\n"})
    server = ctx.server("1-latency/overseer", repo, {})
    hook = Webhook(work / "webhook", {"ping": command}).start()
    o_client, w_client = server.http(), hook.http()
    try:
        variants = {
            "overseer": lambda: latency_samples(http_starter(o_client, "/jobs/ping", 201), fifo,
                                                s.latency_samples),
            "webhook": lambda: latency_samples(http_starter(w_client, "/hooks/ping", 200), fifo,
                                               s.latency_samples),
            "popen": lambda: latency_samples(popen_starter(command), fifo, s.latency_samples),
            "posix_spawn": lambda: latency_samples(spawn_starter(command), fifo, s.latency_samples),
            # The HTTP layers alone, answering a request that starts nothing, spaced the same.
            "overseer GET /health": lambda: round_trip_samples(o_client, "/health", s.latency_samples),
            "webhook GET /": lambda: round_trip_samples(w_client, "/", s.latency_samples),
        }
        with ctx.profile("1-latency", server.pid):
            got = _interleaved(s.reps, variants)
    finally:
        o_client.close()
        w_client.close()
        server.stop()
        hook.stop()
        fifo.close()
    health, root = got.pop("overseer GET /health"), got.pop("webhook GET /")
    base = {k: v for k, v in got.items() if k != "overseer"}
    p50 = lambda runs: [statistics.median(r) for r in runs]  # noqa: E731
    p99 = lambda runs: [percentile(r, 99) for r in runs]  # noqa: E731
    return [
        row(1, "latency_p50", "trigger to process start, p50", "ms", p50(got["overseer"]),
            {k: p50(v) for k, v in base.items()}, target={"vs": "webhook", "ratio": 1.0}),
        row(1, "latency_p99", "trigger to process start, p99", "ms", p99(got["overseer"]),
            {k: p99(v) for k, v in base.items()}, target={"vs": "webhook", "ratio": 1.5}),
        row(1, "http_round_trip_p50", "HTTP round trip starting nothing, p50", "ms", p50(health),
            {"webhook GET /": p50(root)}, extra={"overseer_path": "GET /health"}),
    ]


# -- (2) sustained executions per second -----------------------------------------------------------
CLIENTS = 16


def _parallel(n: int, clients: int, make_client: Callable[[], object],
              one: Callable[[object], object]) -> list:
    """`n` calls of `one(client)` spread over `clients` threads, each with its own client."""
    counter = iter(range(n))
    lock = threading.Lock()
    results: list = []
    errors: list = []

    def worker():
        client = make_client()
        try:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                results.append(one(client))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            close = getattr(client, "close", None)
            if close:
                close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


RESETS = {"overseer": 0}  # connections the server reset under a POST (the POST was sent again)


def _iso(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc).timestamp()


def overseer_eps(server: Overseer, job: str, n: int) -> float:
    """`n` POSTs from 16 clients; executions per second from the first POST to the last
    execution's end (its `ended_at`), every one checked finished with `complete`."""
    def post(client: Http) -> int:
        try:
            status, body = client.request("POST", f"/jobs/{job}", b"{}")
        except ConnectionError:  # reset before an answer: counted, then sent again
            RESETS["overseer"] += 1
            client.reconnect()
            status, body = client.request("POST", f"/jobs/{job}", b"{}")
        if status != 201:
            raise RuntimeError(f"POST /jobs/{job}: {status} {body[:200]!r}")
        return json.loads(body)["id"]

    began = time.time()
    ids = _parallel(n, CLIENTS, server.http, post)
    client = server.http()
    try:
        newest = max(ids)
        deadline = time.monotonic() + 300
        while True:
            if client.json("GET", f"/jobs/{job}/{newest}")["state"] == "finished":
                records = client.json("GET", f"/jobs/{job}?limit=1000")["executions"]
                mine = [r for r in records if r["id"] in set(ids)]
                if all(r["state"] == "finished" for r in mine):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{job} executions did not finish in time")
            time.sleep(0.02)
    finally:
        client.close()
    if len(mine) != min(n, 1000) or any(r["status"] != "complete" for r in mine):
        bad = [r for r in mine if r["status"] != "complete"][:3]
        raise RuntimeError(f"{job}: {len(mine)} of {n} executions listed, not complete: {bad}")
    return n / (max(_iso(r["ended_at"]) for r in mine) - began)


def http_wait_eps(hook: Webhook, name: str, n: int) -> float:
    def post(client: Http) -> None:
        status, body = client.request("POST", f"/hooks/{name}", b"{}", retry=True)
        if status != 200:
            raise RuntimeError(f"webhook {name}: {status} {body[:200]!r}")

    began = time.perf_counter()
    _parallel(n, CLIENTS, hook.http, post)
    return n / (time.perf_counter() - began)


def local_eps(n: int, spawn: bool) -> float:
    argv = ["/bin/sh", "-c", "true"]
    env = dict(os.environ)

    def one(_client):
        if spawn:
            _wait_pid(os.posix_spawn("/bin/sh", argv, env, setsid=True))
        else:
            subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True).wait()

    began = time.perf_counter()
    _parallel(n, CLIENTS, lambda: None, one)
    return n / (time.perf_counter() - began)


def case_throughput(ctx: Context) -> list[dict]:
    s = ctx.sizes
    work = ctx.dir("2-throughput")
    repo = work / "jobs"
    bl.make_repo(repo, {"noop.yml": "command: 'true'\n"})
    server = ctx.server("2-throughput/overseer", repo, {"server": {"thread_pool": 64},
                                                        "execution": {"max_concurrent": 64}})
    hook = Webhook(work / "webhook", {"noop": "true"}).start()
    n = s.throughput_runs
    cpu: dict[str, dict[str, list[float]]] = {name: {"own": [], "children": []}
                                              for name in ("overseer", "webhook")}

    def counted(name: str, pid: int, measure: Callable[[], float]) -> Callable[[], float]:
        """`measure`, with the CPU the server and its reaped children spent on it, per execution."""
        def run() -> float:
            own0, children0 = bl.cpu_seconds(pid)
            rate = measure()
            own1, children1 = bl.cpu_seconds(pid)
            cpu[name]["own"].append((own1 - own0) * 1000 / n)
            cpu[name]["children"].append((children1 - children0) * 1000 / n)
            return rate
        return run

    try:
        overseer_eps(server, "noop", min(n, 100))  # warm-up
        http_wait_eps(hook, "noop", min(n, 100))
        with ctx.profile("2-throughput", server.pid):
            got = _interleaved(s.reps, {
                "overseer": counted("overseer", server.pid, lambda: overseer_eps(server, "noop", n)),
                "webhook": counted("webhook", hook.pid, lambda: http_wait_eps(hook, "noop", n)),
                "popen": lambda: local_eps(n, spawn=False),
                "posix_spawn": lambda: local_eps(n, spawn=True),
            })
    finally:
        server.stop()
        hook.stop()
    ctx.notes["2_connection_resets_retried"] = RESETS["overseer"]
    cpus = os.cpu_count() or 1
    # What the machine's CPUs would allow if the server used all of them for its runs and nothing
    # else ran: the bound a design spreading one server's work over several processes could reach.
    bound = {name: [cpus * 1000 / (own + children) for own, children in zip(c["own"], c["children"])]
             for name, c in cpu.items()}
    return [row(2, "executions_per_s", f"executions/s of `true`, {CLIENTS} clients", "1/s",
                got.pop("overseer"), got, better="higher", target={"vs": "webhook", "ratio": 1.0}),
            row(2, "server_cpu_ms", "server CPU per execution (user + system)", "ms",
                cpu["overseer"]["own"], {"webhook": cpu["webhook"]["own"]}),
            row(2, "children_cpu_ms", "its children's CPU per execution (the shell)", "ms",
                cpu["overseer"]["children"], {"webhook": cpu["webhook"]["children"]}),
            row(2, "cpu_bound_per_s", f"{cpus} CPUs / (server + children CPU per execution)", "1/s",
                bound["overseer"], {"webhook": bound["webhook"]}, better="higher")]


# -- (3) output capture and (7) reading ---------------------------------------------------------------
def _wait_finished(client: Http, job: str, ident: int, timeout: float = 900, poll: float = 0.01) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = client.json("GET", f"/jobs/{job}/{ident}")
        if record["state"] == "finished":
            return record
        time.sleep(poll)
    raise RuntimeError(f"{job}/{ident} did not finish in {timeout} s")


def capture_once(server: Overseer, size: int) -> dict:
    client = server.http()
    try:
        with RssSampler(server.pid) as rss:
            t0 = time.perf_counter()
            ident = client.json("POST", "/jobs/big", {"bytes": size})["id"]
            record = _wait_finished(client, "big", ident)
            seconds = time.perf_counter() - t0
        client.send("HEAD", f"/jobs/big/{ident}/stdout")
        resp = client.conn.getresponse()
        resp.read()
        stored = int(resp.getheader("Content-Length"))
    finally:
        client.close()
    if record["status"] != "complete" or stored != size:
        raise RuntimeError(f"big/{ident}: status {record['status']}, {stored} of {size} bytes stored")
    return {"id": ident, "mb_s": size / seconds / 1e6, "peak_rss": rss.peak, "start_rss": rss.start_rss,
            "peak_anon": rss.peak_anon, "start_anon": rss.start_anon}


def raw_capture_once(work: Path, size: int, rep: int) -> dict:
    path = work / f"raw-{rep}"
    argv = [sys.executable, str(HERE / "raw_pipe_lmdb.py"), str(path), f"head -c {size} /dev/zero"]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    shutil.rmtree(path, ignore_errors=True)
    got = json.loads(out)
    return {"mb_s": got["bytes"] / got["seconds"] / 1e6, "peak_rss": got["peak_rss"]}


def read_once(server: Overseer, ident: int, size: int) -> dict:
    """GET .../stdout with http.client, into one reused 1 MiB buffer; MB/s and server RSS."""
    client = server.http()
    buf = bytearray(MiB)
    view = memoryview(buf)
    total = 0
    try:
        with RssSampler(server.pid) as rss:
            t0 = time.perf_counter()
            client.send("GET", f"/jobs/big/{ident}/stdout")
            resp = client.conn.getresponse()
            while True:
                n = resp.readinto(view)
                if not n:
                    break
                total += n
            seconds = time.perf_counter() - t0
    finally:
        client.close()
    if total != size:
        raise RuntimeError(f"read {total} of {size} bytes of big/{ident}")
    return {"mb_s": size / seconds / 1e6, "peak_rss": rss.peak, "start_rss": rss.start_rss,
            "peak_anon": rss.peak_anon, "start_anon": rss.start_anon}


def client_limit_once(size: int) -> float:
    """The reading client's own limit: the same http.client loop against a bare socket server
    in a child process sending the same bytes with sendfile from /dev/zero-like memory."""
    code = (
        "import socket,sys\n"
        "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('127.0.0.1',0));s.listen(1)\n"
        "print(s.getsockname()[1],flush=True)\n"
        "c,_=s.accept();c.recv(65536)\n"
        f"n={size};c.sendall(b'HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n'%n"
        "+b'Connection: close\\r\\n\\r\\n')\n"
        "chunk=bytes(1<<20)\n"
        "while n>0:\n m=min(n,len(chunk));c.sendall(chunk[:m] if m<len(chunk) else chunk);n-=m\n"
        "c.close()\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    port = int(child.stdout.readline())
    client = Http(port)
    view = memoryview(bytearray(MiB))
    total = 0
    t0 = time.perf_counter()
    client.send("GET", "/")
    resp = client.conn.getresponse()
    while True:
        n = resp.readinto(view)
        if not n:
            break
        total += n
    seconds = time.perf_counter() - t0
    client.close()
    child.wait()
    return total / seconds / 1e6


def case_output(ctx: Context, capture: bool = True, read: bool = True) -> list[dict]:
    s = ctx.sizes
    size, small = s.output_bytes, s.output_bytes // 4  # both above the 64 MiB append queue cap
    work = ctx.dir("3-output")
    repo = work / "jobs"
    bl.make_repo(repo, {"big.yml": "command: head -c {{ bytes }} /dev/zero\n"
                                   "vars:\n  - name: bytes\n    type: int\n"})
    server = ctx.server("3-output/overseer", repo, {"execution": {"max_output_bytes": size + MiB}})
    rows = []
    try:
        capture_once(server, 16 * MiB)  # warm-up: the map, the snapshot, the code paths
        caps, raws, smalls = [], [], []
        with ctx.profile("3-capture", server.pid):
            for rep in range(s.reps if capture else 1):
                if rep % 2:
                    raws.append(raw_capture_once(work, size, rep))
                caps.append(capture_once(server, size))
                if not rep % 2 and capture:
                    raws.append(raw_capture_once(work, size, rep))
                if capture:
                    smalls.append(capture_once(server, small))
        mb, smb = f"{size // MiB} MiB", f"same, {small // MiB} MiB"
        if capture:
            rows.append(row(3, "capture_mb_s", f"output capture of {mb} into the Store", "MB/s",
                            [c["mb_s"] for c in caps], {"raw pipe-to-LMDB": [r["mb_s"] for r in raws]},
                            better="higher", target={"vs": "raw pipe-to-LMDB", "ratio": 0.5}))
            rows.append(row(3, "capture_peak_anon", f"server peak anonymous RSS, capturing {mb}", "MiB",
                            [c["peak_anon"] / MiB for c in caps],
                            {smb: [c["peak_anon"] / MiB for c in smalls]},
                            target={"vs": smb, "ratio": 1.25, "stat": "max"},
                            extra={"before_MiB": [c["start_anon"] / MiB for c in caps]}))
            rows.append(row(3, "capture_peak_rss", f"server peak RSS (with mapped Store pages), {mb}", "MiB",
                            [c["peak_rss"] / MiB for c in caps],
                            {smb: [c["peak_rss"] / MiB for c in smalls],
                             "raw pipe-to-LMDB process": [r["peak_rss"] / MiB for r in raws]},
                            extra={"before_MiB": [c["start_rss"] / MiB for c in caps]}))
        if read:
            big_id = caps[-1]["id"]
            small_id = smalls[-1]["id"] if smalls else capture_once(server, small)["id"]
            server.stop()  # a fresh process: no Store page mapped yet
            server.start()
            reads, reads_small, limits = [], [], []
            with ctx.profile("7-read", server.pid):
                for _rep in range(s.reps):
                    reads_small.append(read_once(server, small_id, small))
                    reads.append(read_once(server, big_id, size))
                    limits.append(client_limit_once(size))
            rows.append(row(7, "read_mb_s", f"GET .../stdout of {mb}", "MB/s", [r["mb_s"] for r in reads],
                            {"client limit (bare socket)": limits}, better="higher", target={"min": 300}))
            rows.append(row(7, "read_peak_anon", f"server peak anonymous RSS, serving {mb}", "MiB",
                            [r["peak_anon"] / MiB for r in reads],
                            {smb: [r["peak_anon"] / MiB for r in reads_small]},
                            target={"vs": smb, "ratio": 1.25, "stat": "max"},
                            extra={"before_MiB": [r["start_anon"] / MiB for r in reads]}))
            rows.append(row(7, "read_peak_rss", f"server peak RSS (with mapped Store pages), {mb}", "MiB",
                            [r["peak_rss"] / MiB for r in reads],
                            {smb: [r["peak_rss"] / MiB for r in reads_small]},
                            extra={"before_MiB": [r["start_rss"] / MiB for r in reads]}))
    finally:
        server.stop()
    return rows


def case_capture(ctx: Context) -> list[dict]:
    return case_output(ctx, capture=True, read=False)


def case_read(ctx: Context) -> list[dict]:
    return case_output(ctx, capture=False, read=True)


# -- (4) 2,000 running at once ------------------------------------------------------------------------
def case_concurrency(ctx: Context) -> list[dict]:
    s = ctx.sizes
    n = s.sleepers
    work = ctx.dir("4-concurrency")
    fifo, started = Fifo(work / "fifo"), Fifo(work / "started")
    ping = f"echo x > {fifo.path}"
    repo = work / "jobs"
    sleeper = f"echo $$ > {started.path}; exec sleep 60"  # its pid: killed at the end if still alive
    bl.make_repo(repo, {"ping.yml": f"command: {json.dumps(ping)}\n",
                        "sleeper.yml": f"command: {json.dumps(sleeper)}\n"})
    server = ctx.server("4-concurrency/overseer", repo, {
        "server": {"thread_pool": 64}, "execution": {"max_concurrent": n + 100, "kill_grace": 2}})
    reader = LineReader(started)
    reader.start()
    client = server.http()
    pids: list[int] = []
    try:
        start = http_starter(client, "/jobs/ping", 201)
        # The same command started by a bare posix_spawn loop in this process, idle and with the
        # sleepers running: what the machine itself does to a start with that many processes.
        variants = {"overseer": lambda: latency_samples(start, fifo, s.latency_samples),
                    "posix_spawn": lambda: latency_samples(spawn_starter(ping), fifo, s.latency_samples)}
        idle_runs = _interleaved(s.reps, variants)
        idle = idle_runs["overseer"]
        idle_status = server.status()
        t0 = time.perf_counter()

        def post(c: Http) -> None:
            status, body = c.request("POST", "/jobs/sleeper", b"{}")
            if status != 201:
                raise RuntimeError(f"POST /jobs/sleeper: {status} {body[:200]!r}")

        with RssSampler(server.pid) as rss:
            _parallel(n, 8, server.http, post)
            triggered = time.perf_counter() - t0
            if not reader.wait_count(n, 120):
                raise RuntimeError(f"only {len(reader.lines)} of {n} sleepers started in 120 s")
            all_started = time.perf_counter() - t0
            with ctx.profile("4-concurrency", server.pid):
                busy_runs = _interleaved(s.reps, variants)
            busy = busy_runs["overseer"]
            busy_status = server.status()
        if time.perf_counter() - t0 > 55:
            ctx.notes["4_warning"] = "the latency samples ran past the sleepers' 60 s"
        pids = [int(line) for line, _ in reader.lines if line.strip().isdigit()]
        t_stop = time.perf_counter()
        server.stop()
        stop_seconds = time.perf_counter() - t_stop
    finally:
        client.close()
        server.stop()
        reader.stop()
        left = bl.kill_pids(pids)
        fifo.close()
        started.close()
    ctx.notes["4_leftover_sleepers_killed"] = left
    idle_p99 = [percentile(r, 99) for r in idle]
    busy_p99 = [percentile(r, 99) for r in busy]
    spawn_idle = [percentile(r, 99) for r in idle_runs["posix_spawn"]]
    spawn_busy = [percentile(r, 99) for r in busy_runs["posix_spawn"]]
    machine = statistics.median(spawn_busy) / statistics.median(spawn_idle)
    timing = {"trigger_all_s": triggered, "all_started_s": all_started, "server_stop_s": stop_seconds}
    return [
        row(4, "running_rss", f"server RSS with {n} running", "MiB", [busy_status["VmRSS"] / MiB],
            {"idle": [idle_status["VmRSS"] / MiB]}, target={"max": 1024},
            extra={"peak_MiB": rss.peak / MiB, **timing}),
        row(4, "running_threads", f"server threads with {n} running", "", [busy_status["Threads"]],
            {"idle": [idle_status["Threads"]]}),
        row(4, "running_latency_p99", f"trigger to start p99 with {n} running", "ms", busy_p99,
            {"idle": idle_p99, f"posix_spawn, {n} running": spawn_busy, "posix_spawn, idle": spawn_idle},
            target={"vs": "idle", "ratio": 3.0},
            extra={"p50_busy": [statistics.median(r) for r in busy],
                   "p50_idle": [statistics.median(r) for r in idle],
                   "posix_spawn_p50_busy": [statistics.median(r) for r in busy_runs["posix_spawn"]],
                   "posix_spawn_p50_idle": [statistics.median(r) for r in idle_runs["posix_spawn"]],
                   "posix_spawn_p99_busy_over_idle": machine}),
    ]


# -- (5) scheduler accuracy ---------------------------------------------------------------------------
def _slot_lateness(lines: list[tuple[bytes, float]], records: dict) -> tuple[list[float], int]:
    """Per started run (job, id): FIFO time - its slot, in ms."""
    late = []
    unknown = 0
    for line, when in lines:
        parts = line.split()
        if len(parts) != 2:
            continue
        rec = records.get((parts[0].decode(), int(parts[1])))
        if rec is None:
            unknown += 1
            continue
        late.append((when - _iso(rec["scheduled_for"])) * 1000)
    return late, unknown


def spawn_schedule_baseline(fifo: Fifo, entries: int, seconds: int) -> dict:
    """The limit: one Python loop posix_spawning `entries` runs of the same command at every
    whole second for `seconds` seconds; lateness of each start (FIFO read) against its second."""
    reader = LineReader(fifo)
    reader.start()
    env = dict(os.environ)
    slots = []
    t = math.ceil(time.time()) + 1
    pids = []
    for k in range(seconds):
        slot = t + k
        time.sleep(max(0.0, slot - time.time()))
        for i in range(entries):
            cmd = f"echo b{i} {slot} > {fifo.path}"
            pids.append(os.posix_spawn("/bin/sh", ["/bin/sh", "-c", cmd], env, setsid=True))
            if len(pids) > 256:
                for pid in pids:
                    os.waitpid(pid, 0)
                pids.clear()
        slots.append(slot)
    for pid in pids:
        os.waitpid(pid, 0)
    reader.wait_count(entries * seconds, 60)
    reader.stop()
    late = [(when - int(line.split()[1])) * 1000 for line, when in reader.lines if line.startswith(b"b")]
    return {"late": late, "expected": entries * seconds}


def case_scheduler(ctx: Context) -> list[dict]:
    s = ctx.sizes
    entries, seconds = s.schedule_entries, s.schedule_seconds
    work = ctx.dir("5-scheduler")
    fifo = Fifo(work / "fifo")
    command = f'echo "$OVERSEER_JOB $OVERSEER_EXECUTION" > {fifo.path}'
    job = f"command: {json.dumps(command)}\nschedule:\n  - frequency: '* * * * * *'\n"
    repo = work / "jobs"
    bl.make_repo(repo, {f"s{i:05d}.yml": job for i in range(entries)})
    reader = LineReader(fifo)
    reader.start()
    server = ctx.server("5-scheduler/overseer", repo, {
        "server": {"thread_pool": 64},
        "execution": {"max_concurrent": entries + 100, "max_queued": entries * 20}})
    names = [f"s{i:05d}" for i in range(entries)]
    try:
        w0 = math.ceil(time.time()) + 3
        w1 = w0 + seconds
        with RssSampler(server.pid) as rss:
            time.sleep(max(0.0, w0 - time.time()))
            with ctx.profile("5-scheduler", server.pid):
                time.sleep(max(0.0, w1 - time.time()))
            time.sleep(5)  # late starts of the last slots
        lines = list(reader.lines)
        seen_until = time.time()

        def deactivate(c: Http, name: str) -> None:
            c.json("DELETE", f"/jobs/{name}")

        def fetch(c: Http, name: str) -> list:
            return c.json("GET", f"/jobs/{name}?limit=1000")["executions"]

        names_iter = iter(names)
        lock = threading.Lock()

        def each(fn):
            out = []

            def one(c):
                with lock:
                    name = next(names_iter, None)
                if name is not None:
                    out.append(fn(c, name))
            return one, out

        one, _ = each(deactivate)
        _parallel(entries, 8, server.http, one)
        time.sleep(2)
        names_iter = iter(names)
        one, fetched = each(fetch)
        _parallel(entries, 8, server.http, one)
    finally:
        server.stop()
        reader.stop()
    records = {}
    per_entry_slots: dict[str, list[float]] = {}
    for execs in fetched:
        for r in execs:
            if r["trigger"] != "schedule" or r["scheduled_for"] is None:
                continue
            slot = _iso(r["scheduled_for"])
            if w0 <= slot < w1:
                records[(r["job"], r["id"])] = r
                per_entry_slots.setdefault(r["job"], []).append(slot)
    missed = doubled = 0
    for name in names:
        got = per_entry_slots.get(name, [])
        distinct = set(round(x, 3) for x in got)
        missed += seconds - len(distinct)
        doubled += len(got) - len(distinct)
    late, _ = _slot_lateness([ln for ln in lines], records)
    started_keys = {(ln.split()[0].decode(), int(ln.split()[1])) for ln, _ in lines if len(ln.split()) == 2}
    not_started = [k for k in records if k not in started_keys]
    # a run created for the window that had not started 5 s after it counts with a lower bound
    late += [(seen_until - _iso(records[k]["scheduled_for"])) * 1000 for k in not_started]
    not_started = len(not_started)
    created = [(_iso(r["created_at"]) - _iso(r["scheduled_for"])) * 1000 for r in records.values()]
    started = [(_iso(r["started_at"]) - _iso(r["scheduled_for"])) * 1000
               for r in records.values() if r["started_at"]]
    # per-second p99, for min and max across the seconds
    by_second: dict[int, list[float]] = {}
    for line, when in lines:
        parts = line.split()
        rec = records.get((parts[0].decode(), int(parts[1]))) if len(parts) == 2 else None
        if rec:
            slot = _iso(rec["scheduled_for"])
            by_second.setdefault(int(slot), []).append((when - slot) * 1000)
    p99s = [percentile(v, 99) for v in by_second.values()]
    base = spawn_schedule_baseline(Fifo(work / "fifo-baseline"), entries, min(seconds, 5))
    extra = {"expected_runs": entries * seconds, "runs_in_window": len(records), "missed_slots": missed,
             "doubled_slots": doubled, "not_started_by_end": not_started,
             "created_minus_slot_ms": {"p50": percentile(created, 50), "p99": percentile(created, 99),
                                       "max": max(created, default=float("nan"))},
             "recorded_start_minus_slot_ms": {"p50": percentile(started, 50), "p99": percentile(started, 99),
                                              "max": max(started, default=float("nan"))},
             "per_second_p99_ms": p99s, "server_peak_rss_MiB": rss.peak / MiB,
             "baseline_expected": base["expected"], "baseline_started": len(base["late"])}
    return [
        row(5, "schedule_late_p50", f"{entries} entries every second for {seconds} s: lateness p50", "ms",
            [percentile(late, 50)], {"posix_spawn loop": [percentile(base["late"], 50)]}),
        row(5, "schedule_late_p99", "lateness p99", "ms", [percentile(late, 99)],
            {"posix_spawn loop": [percentile(base["late"], 99)]}, target={"max": 20}, extra=extra),
        row(5, "schedule_late_max", "lateness max", "ms", [max(late, default=float("nan"))],
            {"posix_spawn loop": [max(base["late"], default=float("nan"))]}),
        row(5, "schedule_missed", "slots missed + doubled (+ not started)", "",
            [missed + doubled + not_started], target={"max": 0}),
    ]


# -- (6) repository scale -------------------------------------------------------------------------------
JOB_TEMPLATE = """description: Job {i} of the scale benchmark.
command: echo {{{{ target }}}} --level {{{{ level }}}}
timeout: 600
vars:
  - name: target
    type: str
    default: host-{i}
  - name: level
    type: enum
    values: [low, mid, high]
    default: mid
env:
  TEAM: team-{team}
"""


def _scale_files(n: int) -> dict[str, str]:
    return {f"team{i % 100:02d}/job{i:05d}.yml": JOB_TEMPLATE.format(i=i, team=i % 100) for i in range(n)}


def raw_load(repo: Path, target: Path) -> float:
    """The floor: `git clone --local` and parsing every file with yaml.CSafeLoader."""
    import yaml
    t0 = time.perf_counter()
    subprocess.run(["git", "clone", "-q", "--local", str(repo), str(target)], check=True)
    for path in target.rglob("*.yml"):
        yaml.load(path.read_bytes(), Loader=yaml.CSafeLoader)
    seconds = time.perf_counter() - t0
    shutil.rmtree(target)
    return seconds


def case_repo_scale(ctx: Context) -> list[dict]:
    s = ctx.sizes
    work = ctx.dir("6-repo")
    repo = work / "jobs"
    bl.make_repo(repo, _scale_files(s.repo_files))
    loads, reloads, syncs, raws = [], [], [], []
    for rep in range(s.reps):
        raws.append(raw_load(repo, work / "raw-clone"))  # first: before the servers' files are removed
        data = work / f"server-{rep}"
        server = Overseer(data, repo, {}, log_level=ctx.log_level)
        server.start()
        loads.append(server.ready_at - server.started_at)
        client = server.http()
        try:
            count = len(client.json("GET", "/jobs")["jobs"])
            if count != s.repo_files:
                raise RuntimeError(f"{count} of {s.repo_files} jobs loaded")
            prof = ctx.profile("6-sync", server.pid) if rep == 0 else _nullcontext()
            with prof:
                for k in range(s.syncs):
                    rel = f"team{k % 100:02d}/job{k:05d}.yml"
                    (repo / rel).write_text(JOB_TEMPLATE.format(i=k, team=k % 100) + f"# change {rep}.{k}\n")
                    bl.git(repo, "commit", "-q", "-am", f"change {rep}.{k}")
                    sha = bl.git(repo, "rev-parse", "HEAD")
                    t0 = time.perf_counter()
                    client.json("POST", "/repo/sync")
                    while client.json("GET", "/repo")["commit"] != sha:
                        time.sleep(0.002)
                    syncs.append(time.perf_counter() - t0)
        finally:
            client.close()
            server.stop()
        # a restart on the same data dir (clone and snapshot exist)
        server = Overseer(data, repo, {}, log_level=ctx.log_level)
        server.start()
        reloads.append(server.ready_at - server.started_at)
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
    n = s.repo_files
    return [
        row(6, "repo_load_s", f"{n} job files: start to all loaded (fresh data dir)", "s", loads,
            {"git clone + CSafeLoader": raws}, target={"max": 3.0}),
        row(6, "repo_reload_s", f"{n} job files: restart to all loaded", "s", reloads, target={"max": 3.0}),
        row(6, "repo_sync_s", "one-file change: POST /repo/sync to the new commit served", "s",
            syncs, target={"max": 1.0}),
    ]


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


CASES = {1: case_latency, 2: case_throughput, 3: case_capture, 4: case_concurrency,
         5: case_scheduler, 6: case_repo_scale, 7: case_read}
