"""Shared parts of the benchmarks: servers started as a user starts them, the webhook
baseline, FIFOs, /proc readings and the statistics.

Nothing here knows about one benchmark in particular; ``run_all.py`` composes them.
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost")
MiB = 1 << 20


# -- statistics ------------------------------------------------------------------------------
def percentile(values: Iterable[float], p: float) -> float:
    """The nearest-rank percentile (p in 0..100) of `values`."""
    data = sorted(values)
    if not data:
        return float("nan")
    rank = max(1, -(-len(data) * p // 100))  # ceil(n * p / 100), at least 1
    return data[int(min(rank, len(data))) - 1]


def summary(values: list[float]) -> dict:
    """Median, min and max of per-repetition figures."""
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


# -- processes and /proc ---------------------------------------------------------------------
def proc_status(pid: int) -> dict:
    """VmRSS, VmHWM, RssAnon, RssFile (bytes) and Threads of a process, from /proc/PID/status.
    RssFile counts the Store's pages mapped by reads (LMDB maps its file): page cache that
    the kernel may drop, where RssAnon is the server's own memory."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0]) * 1024
            elif key == "Threads":
                out[key] = int(value)
    return out


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of a process itself and of the children it has reaped, from
    /proc/PID/stat (utime + stime, cutime + cstime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+: write 5 to clear_refs); False if refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples a process's RSS every `interval` seconds in a thread: `peak` is the largest
    VmRSS seen (and the kernel's VmHWM at the end, after a reset at the start), `peak_anon`
    the largest RssAnon (the server's own memory, without mapped Store pages)."""

    def __init__(self, pid: int, interval: float = 0.02):
        self.pid, self.interval = pid, interval
        self.peak = 0
        self.peak_anon = 0
        self.threads_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._hwm_reset = False

    def __enter__(self) -> RssSampler:
        self._hwm_reset = reset_peak_rss(self.pid)
        st = proc_status(self.pid)
        self.start_rss = st["VmRSS"]
        self.start_anon = st["RssAnon"]
        self.peak = st["VmRSS"]
        self.peak_anon = st["RssAnon"]
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                st = proc_status(self.pid)
            except OSError:
                return
            self.peak = max(self.peak, st["VmRSS"])
            self.peak_anon = max(self.peak_anon, st["RssAnon"])
            self.threads_peak = max(self.threads_peak, st["Threads"])

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            st = proc_status(self.pid)
            if self._hwm_reset:
                self.peak = max(self.peak, st["VmHWM"])
        except OSError:
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM, then SIGKILL after `timeout`; always reaped."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kill_pids(pids: Iterable[int]) -> int:
    """SIGKILL the given pids that still live (left-overs of a job); returns how many."""
    n = 0
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            n += 1
        except (ProcessLookupError, PermissionError):
            pass
    return n


# -- git job repositories --------------------------------------------------------------------
def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, env=GIT_ENV, check=True, capture_output=True,
                          text=True).stdout.strip()


def make_repo(root: Path, files: dict[str, str]) -> str:
    """A git repository at `root` holding `files` (relative path -> text); returns the sha.

    Packed, as a repository served by a git host is, and with git's automatic gc off: a commit
    of thousands of files would otherwise start a `gc --auto` in the background that packs
    while the case measures (taking CPU, and deleting loose objects under a running clone)."""
    root.mkdir(parents=True)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "gc.auto", "0")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "bench jobs")
    git(root, "repack", "-adq")
    return git(root, "rev-parse", "HEAD")


# -- HTTP --------------------------------------------------------------------------------------
class Http:
    """One keep-alive connection (http.client: the lightest client, so the client's own cost
    stays small next to the server's)."""

    def __init__(self, port: int, timeout: float = 60):
        self.port, self.timeout = port, timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def send(self, method: str, path: str, body: Optional[bytes] = None,
             headers: Optional[dict] = None) -> None:
        """Send a request without reading the answer (call `answer()` after)."""
        hdrs = {"Host": "127.0.0.1"}
        if body is not None:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        try:
            self.conn.request(method, path, body=body, headers=hdrs)
        except (ConnectionError, http.client.HTTPException):
            self.reconnect()
            self.conn.request(method, path, body=body, headers=hdrs)

    def answer(self) -> tuple[int, bytes]:
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.will_close:
            self.reconnect()
        return resp.status, data

    def request(self, method: str, path: str, body: Optional[bytes] = None,
                retry: bool = False) -> tuple[int, bytes]:
        """One request; with `retry`, once more on a fresh connection when the kept-alive one
        was closed under it (only for requests that may run twice)."""
        self.send(method, path, body)
        try:
            return self.answer()
        except (ConnectionError, http.client.RemoteDisconnected):
            if not retry:
                raise
            self.reconnect()
            self.send(method, path, body)
            return self.answer()

    def json(self, method: str, path: str, body: Any = None, ok: tuple = (200, 201, 202)) -> Any:
        status, data = self.request(method, path, None if body is None else json.dumps(body).encode(),
                                    retry=method in ("GET", "HEAD", "PUT", "DELETE"))
        if status not in ok:
            raise RuntimeError(f"{method} {path}: {status} {data[:200]!r}")
        return json.loads(data)

    def reconnect(self) -> None:
        self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)

    def close(self) -> None:
        self.conn.close()


def wait_http(port: int, path: str, proc: subprocess.Popen, timeout: float = 120,
              interval: float = 0.005) -> float:
    """Poll GET `path` until 200; returns the monotonic time it first answered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before answering")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path, headers={"Host": "127.0.0.1"})
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return time.monotonic()
        except OSError:
            pass
        time.sleep(interval)
    raise RuntimeError(f"nothing answered GET {path} on port {port} in {timeout:g} s")


# -- the Overseer server -----------------------------------------------------------------------
def overseer_command() -> list[str]:
    script = Path(sys.executable).with_name("overseer")
    if script.exists():
        return [str(script)]
    found = shutil.which("overseer")
    return [found] if found else [sys.executable, "-m", "overseer.cli"]


class Overseer:
    """`overseer serve -c CONFIG` as a subprocess, with its log in the work dir."""

    def __init__(self, workdir: Path, repo: Path, config: Optional[dict] = None,
                 log_level: Optional[str] = None):
        self.workdir = workdir
        self.port = free_port()
        conf = {"repository": {"url": str(repo), "branch": "main", "poll_interval": 0},
                "data_dir": str(workdir / "data"),
                "server": {"host": "127.0.0.1", "port": self.port},
                "execution": {}}
        for key, value in (config or {}).items():
            if isinstance(value, dict):
                conf.setdefault(key, {}).update(value)
            else:
                conf[key] = value
        self.config = conf
        self.config_path = workdir / "config.yaml"
        self.log_path = workdir / "server.log"
        self.log_level = log_level
        self.proc: Optional[subprocess.Popen] = None
        self.started_at = 0.0
        self.ready_at = 0.0

    def start(self, timeout: float = 300) -> Overseer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config))
        cmd = [*overseer_command(), "serve", "-c", str(self.config_path)]
        if self.log_level:
            cmd += ["--log-level", self.log_level]
        with open(self.log_path, "ab") as log:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log)
        self.ready_at = wait_http(self.port, "/health", self.proc, timeout)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def http(self) -> Http:
        return Http(self.port)

    def status(self) -> dict:
        return proc_status(self.pid)

    def stop(self, timeout: float = 120) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# -- the webhook baseline ------------------------------------------------------------------------
def ensure_webhook() -> str:
    """The path of adnanh/webhook, installing Debian's package when it is missing."""
    found = shutil.which("webhook")
    if found:
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    apt = ["apt-get", "install", "-y", "-q", "webhook"]
    if os.geteuid() != 0 and shutil.which("sudo"):
        apt = ["sudo", "-E", *apt]
    print("webhook is missing: installing the Debian package 'webhook'", file=sys.stderr, flush=True)
    if subprocess.run(apt, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        update = ["apt-get", "update", "-q"]
        if apt[0] == "sudo":
            update = ["sudo", "-E", *update]
        subprocess.run(update, env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(apt, env=env, check=True, stdout=subprocess.DEVNULL)
    found = shutil.which("webhook")
    if not found:
        raise RuntimeError("webhook is still missing after apt-get install webhook")
    return found


def webhook_version(binary: str) -> str:
    try:
        return subprocess.run([binary, "-version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


class Webhook:
    """adnanh/webhook serving hooks that run `/bin/sh -c COMMAND` and answer once it ended
    (`include-command-output-in-response: true`)."""

    def __init__(self, workdir: Path, hooks: dict[str, str]):
        self.workdir = workdir
        self.port = free_port()
        self.hooks = hooks
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> Webhook:
        binary = ensure_webhook()
        self.workdir.mkdir(parents=True, exist_ok=True)
        spec = [{"id": name, "execute-command": "/bin/sh", "command-working-directory": str(self.workdir),
                 "include-command-output-in-response": True,
                 "pass-arguments-to-command": [{"source": "string", "name": "-c"},
                                               {"source": "string", "name": command}]}
                for name, command in self.hooks.items()]
        path = self.workdir / "hooks.json"
        path.write_text(json.dumps(spec, indent=1))
        with open(self.workdir / "webhook.log", "ab") as log:
            self.proc = subprocess.Popen([binary, "-hooks", str(path), "-ip", "127.0.0.1",
                                          "-port", str(self.port)], cwd=self.workdir,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        wait_http(self.port, "/", self.proc, 30)  # webhook answers / with 200 "OK"
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def http(self) -> Http:
        return Http(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)


# -- FIFOs: the job's start, timestamped by the reader -----------------------------------------------
class Fifo:
    """A FIFO held open for reading (and by a writer of our own, so it never reports EOF)."""

    def __init__(self, path: Path):
        self.path = path
        os.mkfifo(path)
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self._keep = os.open(path, os.O_WRONLY)
        os.set_blocking(self.fd, True)

    def read(self, n: int = 4096) -> bytes:
        return os.read(self.fd, n)

    def drain(self) -> None:
        os.set_blocking(self.fd, False)
        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass
        finally:
            os.set_blocking(self.fd, True)

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._keep)


class LineReader(threading.Thread):
    """Reads a FIFO in a thread, timestamping every line (time.time()) as it arrives."""

    def __init__(self, fifo: Fifo, on_line: Optional[Callable[[bytes, float], None]] = None):
        super().__init__(daemon=True)
        self.fifo = fifo
        self.lines: list[tuple[bytes, float]] = []
        self.on_line = on_line
        self.cond = threading.Condition()
        self._stopping = False

    def run(self) -> None:
        buf = b""
        while not self._stopping:
            data = self.fifo.read(1 << 16)
            now = time.time()
            if not data:
                continue
            buf += data
            *lines, buf = buf.split(b"\n")
            with self.cond:
                for line in lines:
                    self.lines.append((line, now))
                    if self.on_line:
                        self.on_line(line, now)
                self.cond.notify_all()

    def wait_count(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.lines) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def stop(self) -> None:
        self._stopping = True
        try:
            os.write(self.fifo._keep, b"\n")
        except OSError:
            pass
        self.join(5)
