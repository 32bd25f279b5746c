"""Shared test parts: real git repositories, a real running System, real HTTP receivers. A System
served over HTTP is tests/served.py's ``serve``; waiting is tests/waiting.py."""
from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pykka
import pytest
import yaml

from overseer.config import parse_config

from .served import serve  # noqa: F401 - the served-app fixture, for every test

GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")


def git(cwd, *args) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, env=GIT_ENV, capture_output=True,
                          text=True).stdout.strip()


class JobRepo:
    """A git repository of job files in a temp dir."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True)
        git(self.root, "init", "-q", "-b", "main")

    def write(self, files: dict) -> None:
        for rel, content in files.items():
            p = self.root / rel
            if content is None:
                if p.is_symlink() or p.exists():
                    p.unlink()
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            if not isinstance(content, (str, bytes)):
                content = json.dumps(content) if rel.endswith(".json") else yaml.safe_dump(content)
            if isinstance(content, bytes):
                p.write_bytes(content)
            else:
                p.write_text(content)
            if rel.startswith(("bin/", "scripts/")):
                p.chmod(0o755)

    def commit(self, files: dict, msg: str = "change") -> str:
        self.write(files)
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "--allow-empty", "-m", msg)
        return git(self.root, "rev-parse", "HEAD")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_config(tmp_path: Path, repo: JobRepo, **overrides):
    data = {
        "repository": {"url": str(repo.root), "branch": "main", "poll_interval": 0},
        "data_dir": str(tmp_path / "data"),
        "server": {"host": "127.0.0.1", "port": free_port()},
        "execution": {"kill_grace": 2},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_config(data)


@pytest.fixture(autouse=True)
def _stop_actors():
    yield
    pykka.ActorRegistry.stop_all(timeout=10)


def mounts_under(path: Path) -> list[str]:
    """The mount points at or under ``path``, in the order /proc/self/mountinfo lists them."""
    prefix = os.path.realpath(path)
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return points


@pytest.fixture(autouse=True)
def _detach_left_mounts(request):
    """A test that fails before its server stops, or ends with it SIGKILLed, leaves the server's
    read-only snapshot view mounted (overseer/repo/snapshot_view.py): detached here, under the test's
    own tmp_path (a module's server lives on in a directory of its own), so that it can be
    deleted and the host's mount table does not grow."""
    tmp_path = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp_path is None:
        return
    from overseer.repo.snapshot_view import detach

    for point in reversed(mounts_under(tmp_path)):
        detach(Path(point))


@pytest.fixture
def job_repo(tmp_path):
    return JobRepo(tmp_path / "jobs")


@pytest.fixture
def system_factory(tmp_path, job_repo):
    """Start a real System (store, actors, processes) on a real git repository."""
    from overseer.actors.system import System

    made = []

    def make(files=None, **overrides):
        if files is not None:
            job_repo.commit(files, "initial")
        config = make_config(tmp_path, job_repo, **overrides)
        system = System(config).start()
        made.append(system)
        return system

    yield make
    for system in made:
        system.stop()


class Receiver:
    """A real HTTP server that records webhook POSTs; `delay`/`status` per path."""

    def __init__(self):
        self.received: list[tuple[str, dict, dict]] = []
        self.cond = threading.Condition()
        self.delay: dict[str, float] = {}
        self.status: dict[str, list[int]] = {}
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(receiver.delay.get(self.path, 0))
                codes = receiver.status.get(self.path)
                code = codes.pop(0) if codes else 200
                self.send_response(code)
                if 300 <= code < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver.cond:
                    headers = dict(self.headers, raw_body=body)
                    receiver.received.append((self.path, json.loads(body), headers))
                    receiver.cond.notify_all()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, predicate, timeout: float = 20):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self.received):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"webhooks not received in time: {self.received}")
                self.cond.wait(left)
            return list(self.received)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()
