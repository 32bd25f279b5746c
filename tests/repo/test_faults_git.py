"""Faults in the job repository (case 7), with real git: a force-push, invalid YAML, a
``!!python/object`` tag, an unreachable or hanging remote, a 50 MB file and a symlink to /etc.
Each is reported, and none breaks a job that is running at the time or any other job."""
from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from overseer.repo import git as repo_git
from overseer.repo.load import MAX_JOB_FILE_BYTES

from ..conftest import git, make_config
from ..waiting import wait_finished, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def gate(tmp_path):
    return tmp_path / "gate"


def _files(gate, marker="A"):
    return {
        "marker.txt": marker + "\n",
        # runs across the faulty sync, then prints a file of its own commit's snapshot
        "long.yml": {"command": f"echo started; while [ ! -e {gate} ]; do sleep 0.05; done; cat marker.txt"},
        "other.yml": {"command": "cat marker.txt"},
    }


def _start_long(s):
    record = s.trigger("long", {})
    wait_for(lambda: s.store.read_output("long", record["id"], "stdout") == b"started\n", 20, "long to start",
             store=s.store)
    return record["id"]


def _unharmed(s, gate, ident, marker):
    """The job that ran across the fault ends normally with its own commit's files; others run."""
    gate.write_text("go")
    done = wait_finished(s, "long", ident)
    assert done["status"] == "complete", done
    assert s.store.read_output("long", ident, "stdout") == b"started\n" + marker.encode() + b"\n"
    other = s.trigger("other", {})
    assert wait_finished(s, "other", other["id"])["status"] == "complete"
    return s.store.read_output("other", other["id"], "stdout")


def _errors(s) -> dict:
    return {e["file"]: e["error"] for e in s.repo_info()["errors"]}


def test_force_push(system_factory, job_repo, gate):
    s = system_factory(_files(gate, "A"))
    base = s.repo_info()["commit"]
    pushed = job_repo.commit({"marker.txt": "B\n"})
    s.sync()
    ident = _start_long(s)                      # runs in B's snapshot
    git(job_repo.root, "reset", "-q", "--hard", base)
    rewritten = job_repo.commit({"marker.txt": "C\n", "new.yml": {"command": "echo new"}}, "rewritten")
    s.sync()
    assert s.repo_info()["commit"] == rewritten != pushed
    assert "sync_error" not in s.repo_info()
    assert _unharmed(s, gate, ident, "B") == b"C\n"
    new = s.trigger("new", {})
    assert wait_finished(s, "new", new["id"])["status"] == "complete"


def test_invalid_yaml(system_factory, job_repo, gate):
    s = system_factory(_files(gate))
    ident = _start_long(s)
    job_repo.commit({"other.yml": "command: [unclosed\n", "broken.yml": "{{{: :\n", "marker.txt": "B\n"})
    s.sync()
    errors = _errors(s)
    assert set(errors) == {"other.yml", "broken.yml"} and "YAML" in errors["other.yml"]
    assert "broken" not in {j.name for j in s.jobs()}
    # "other" keeps its last valid definition, and with it its commit's files
    assert _unharmed(s, gate, ident, "A") == b"A\n"


def test_python_object_tag_is_refused_not_run(system_factory, job_repo, gate, tmp_path):
    pwned = tmp_path / "pwned"
    s = system_factory(_files(gate))
    ident = _start_long(s)
    job_repo.commit({
        "evil.yml": f"command: !!python/object/apply:os.system ['touch {pwned}']\n",
        "evil2.yml": "command: echo hi\ndescription: !!python/object:os.system {}\n",
        "evil3.yml": f"!!python/object/apply:subprocess.call [['touch', '{pwned}']]\n",
    })
    s.sync()
    errors = _errors(s)
    assert set(errors) == {"evil.yml", "evil2.yml", "evil3.yml"}
    assert all("python/object" in e for e in errors.values()), errors
    assert not pwned.exists()
    assert not {"evil", "evil2", "evil3"} & {j.name for j in s.jobs()}
    assert _unharmed(s, gate, ident, "A") == b"A\n"
    assert not pwned.exists()


def test_unreachable_remote(system_factory, job_repo, gate):
    s = system_factory(_files(gate))
    good = s.repo_info()["commit"]
    ident = _start_long(s)
    job_repo.commit({"marker.txt": "B\n"})
    away = job_repo.root.with_name("moved-away")
    os.rename(job_repo.root, away)
    try:
        s.sync()
        info = s.repo_info()
        assert info["commit"] == good and info["sync_error"].startswith("git failed")
        assert {j.name for j in s.jobs()} == {"long", "other"}
        assert _unharmed(s, gate, ident, "A") == b"A\n"
    finally:
        os.rename(away, job_repo.root)
    s.sync()
    assert "sync_error" not in s.repo_info() and s.repo_info()["commit"] != good


class _BlackHole:
    """A TCP server that accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def test_a_remote_that_never_answers_is_given_up(monkeypatch, tmp_path, job_repo):
    from overseer.actors.system import System

    assert repo_git.environment()["GIT_HTTP_LOW_SPEED_TIME"] == repo_git.LOW_SPEED_TIME  # the default
    monkeypatch.setenv("GIT_HTTP_LOW_SPEED_TIME", "2")  # a minute by default; 2 s here
    hole = _BlackHole()
    job_repo.commit({"a.yml": {"command": "true"}})
    config = make_config(tmp_path, job_repo)
    config = type(config)(**{**config.__dict__, "repository": type(config.repository)(
        url=f"http://127.0.0.1:{hole.port}/jobs.git", branch="main", poll_interval=0)})
    began = time.monotonic()
    system = System(config).start()    # the first sync gives up; the server starts without jobs
    try:
        assert time.monotonic() - began < 60
        info = system.repo_info()
        assert info["commit"] is None and "too slow" in info["sync_error"]
        assert hole.conns
    finally:
        system.stop()
        hole.close()


def test_a_50_mb_file(system_factory, job_repo, gate):
    s = system_factory(_files(gate))
    ident = _start_long(s)
    job_repo.write({"data/blob.bin": bytes(50 << 20),
                    "huge.yml": b"command: echo " + b"a" * (50 << 20) + b"\n",
                    "size.yml": {"command": "wc -c < data/blob.bin"}})
    git(job_repo.root, "-c", "core.looseCompression=0", "add", "-A")
    git(job_repo.root, "commit", "-q", "-m", "50 MB")
    s.sync()
    errors = _errors(s)
    assert set(errors) == {"huge.yml"} and str(MAX_JOB_FILE_BYTES) in errors["huge.yml"]
    assert _unharmed(s, gate, ident, "A") == b"A\n"
    size = s.trigger("size", {})
    wait_finished(s, "size", size["id"])
    assert s.store.read_output("size", size["id"], "stdout").strip() == str(50 << 20).encode()


def test_symlinks_to_etc(system_factory, job_repo, gate):
    s = system_factory(_files(gate))
    ident = _start_long(s)
    (job_repo.root / "etc").symlink_to("/etc")
    (job_repo.root / "passwd.yml").symlink_to("/etc/passwd")
    (job_repo.root / "scripts").mkdir()
    (job_repo.root / "scripts" / "shadow").symlink_to("/etc/shadow")
    job_repo.commit({"probe.yml": {"command": "test ! -e etc && test ! -e passwd.yml && "
                                              "test ! -e scripts/shadow && echo safe"},
                     "via.yml": {"script": "shadow"}})
    s.sync()
    errors = _errors(s)
    assert {"etc", "passwd.yml", "scripts/shadow", "via.yml"} <= set(errors)
    assert all("leaves the repository" in errors[f] for f in ("etc", "passwd.yml", "scripts/shadow"))
    snapshot = s.catalog.snapshot(s.repo_info()["commit"])
    assert not any((snapshot / p).is_symlink() for p in ("etc", "passwd.yml", "scripts/shadow"))
    assert _unharmed(s, gate, ident, "A") == b"A\n"
    probe = s.trigger("probe", {})
    wait_finished(s, "probe", probe["id"])
    assert s.store.read_output("probe", probe["id"], "stdout") == b"safe\n"
