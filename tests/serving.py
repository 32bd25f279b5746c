"""A real ``overseer serve`` process for the fault tests: started from this environment's own
``overseer`` command (beside the running Python), configured by a YAML file, spoken to over HTTP."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import requests
import yaml

from .conftest import JobRepo, free_port
from .waiting import wait_for

OVERSEER = Path(sys.executable).parent / "overseer"


def rss_kib(pid: int) -> Optional[int]:
    """The resident set size of ``pid`` in KiB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def group_alive(pgid: int) -> bool:
    """True while any process (not a zombie) of process group ``pgid`` lives."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


class Server:
    """``overseer serve -c CONFIG`` in its own session, with its log in ``tmp/server.log``."""

    def __init__(self, tmp: Path, files: dict, config: Optional[dict] = None,
                 env: Optional[dict] = None, repo: Optional[JobRepo] = None):
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.repo = repo or JobRepo(self.tmp / "jobs")
        self.repo.commit(files, "initial")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, **(env or {}))
        cfg = {
            "repository": {"url": str(self.repo.root), "branch": "main", "poll_interval": 0},
            "data_dir": str(self.tmp / "data"),
            "server": {"host": "127.0.0.1", "port": self.port, "base_url": self.url},
            "execution": {"kill_grace": 2},
        }
        for key, value in (config or {}).items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        self.config = cfg
        self.config_path = self.tmp / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.log_path = self.tmp / "server.log"
        self.proc: Optional[subprocess.Popen] = None
        self.wrapper: list[str] = []   # a command the server is started through (such as setpriv)
        self.session = requests.Session()
        self.session.trust_env = False

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, timeout: float = 60) -> Server:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*self.wrapper, str(OVERSEER), "serve", "-c", str(self.config_path)],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited at start ({self.proc.returncode}):\n"
                                     + self.log()[-3000:])
            try:
                if self.session.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError("server did not answer /health in time:\n" + self.log()[-3000:])

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL: the crash."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self, timeout: float = 60) -> Optional[int]:
        """SIGTERM and wait; SIGKILL if it does not end in ``timeout``. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    # -- HTTP -------------------------------------------------------------------------------------
    def req(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 30)
        return self.session.request(method, self.url + path, **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return self.req("GET", path, **kw)

    def run(self, job: str, params: Optional[dict] = None) -> dict:
        r = self.req("POST", f"/jobs/{job}", json=params or {})
        assert r.status_code == 201, (r.status_code, r.text)
        return r.json()

    def execution(self, job: str, ident: int) -> dict:
        r = self.get(f"/jobs/{job}/{ident}")
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    def wait(self, job: str, ident: int, timeout: float = 60, state: str = "finished") -> dict:
        return wait_for(lambda: (m := self.execution(job, ident))["state"] == state and m, timeout,
                        f"{job}/{ident} to be {state}")


def start_server(tmp: Path, files: dict, config: Optional[dict] = None, **kw) -> Server:
    return Server(tmp, files, config, **kw).start()
