"""The client commands (SPEC §1) against a live server: `overseer jobs|run|logs|event`."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from overseer.cli import main
from overseer.cli.client import exit_status

from ..conftest import free_port
from ..waiting import wait_finished

JOBS = {
    "hello.yml": {"command": "echo hello {{ who }}; echo to-stderr >&2", "description": "says hello\nmore",
                  "vars": [{"name": "who", "default": "world"}]},
    "typed.yml": {"command": "echo n={{ n }} items={{ items }}",
                  "vars": [{"name": "n", "type": "int"}, {"name": "items", "type": "seq", "default": []}]},
    "fails.yml": {"command": "echo failing; exit 3"},
    "slow.yml": {"command": "echo started; sleep 60"},
    "late.yml": {"command": "sleep 60", "timeout": 0.5},
    "bytes.yml": {"command": r"printf 'a\000b\377\n'"},
}


@pytest.fixture
def server(serve):
    def start(**overrides):
        system, _ = serve(JOBS, **overrides)
        return system

    return start


def cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """The installed command, as a user runs it."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OVERSEER_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "overseer.cli", *args], capture_output=True, env=full_env,
                          timeout=timeout)


def test_run_follow_prints_output_and_exits_with_the_job_status(server):
    s = server()
    url = s.config.base_url
    done = cli("run", "hello", "who=you", "--follow", "--url", url)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == [b"hello you", b"to-stderr"]
    failed = cli("run", "fails", "--follow", "--url", url)
    assert failed.returncode == 3 and failed.stdout == b"failing\n"
    late = cli("run", "late", "-f", "--url", url)
    assert late.returncode == 124
    exact = cli("run", "bytes", "--follow", "--url", url)
    assert exact.returncode == 0 and exact.stdout == b"a\x00b\xff\n"


def test_run_follow_of_a_killed_job_exits_1(server):
    s = server()
    proc = subprocess.Popen([sys.executable, "-m", "overseer.cli", "run", "slow", "--follow",
                             "--url", s.config.base_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"started\n"  # printed while the job runs
        s.create_event("slow", 1, "kill", "test")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, err


def test_run_without_follow_and_form_values(server):
    s = server()
    url = s.config.base_url
    done = cli("run", "typed", "n=5", "items=a", "items=b", "--url", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().startswith("typed/1 ")
    record = wait_finished(s, "typed", 1)
    assert record["params"] == {"n": 5, "items": ["a", "b"]}  # strings converted by var type
    bad = cli("run", "typed", "n=five", "--url", url)
    assert bad.returncode == 2 and b"400" in bad.stderr and b"'n'" in bad.stderr
    assert len(bad.stderr.decode().strip().splitlines()) == 1
    assert cli("run", "typed", "novalue", "--url", url).returncode == 2
    missing = cli("run", "nope", "--url", url)
    assert missing.returncode == 2 and b"404" in missing.stderr and b"nope" in missing.stderr


def test_logs_and_event(server, capsysbinary):
    s = server()
    url = s.config.base_url
    s.trigger("hello", {})
    wait_finished(s, "hello", 1)
    assert main(["logs", "hello", "1", "--stream", "stdout", "--url", url]) == 0
    assert capsysbinary.readouterr().out == b"hello world\n"
    assert main(["logs", "hello", "1", "--stream", "stderr", "--url", url]) == 0
    assert capsysbinary.readouterr().out == b"to-stderr\n"
    assert main(["logs", "hello", "1", "--follow", "--url", url]) == 0
    assert sorted(capsysbinary.readouterr().out.splitlines()) == [b"hello world", b"to-stderr"]
    assert main(["logs", "hello", "9", "--url", url]) == 2
    assert b"no execution 9" in capsysbinary.readouterr().err

    assert main(["event", "hello", "1", "deployed", "by ci", "--url", url]) == 0
    assert b"deployed" in capsysbinary.readouterr().out
    record = s.execution("hello", 1)
    assert record["events"][-1]["name"] == "deployed" and record["events"][-1]["cause"] == "by ci"
    assert record["status"] == "complete"  # a note: the run had finished
    assert main(["event", "hello", "1", "kill", "--url", url]) == 2
    assert b"409" in capsysbinary.readouterr().err
    assert main(["event", "hello", "1", "std out", "--url", url]) == 2
    capsysbinary.readouterr()
    assert main(["event", "hello", "1", "complete", "--url", url]) == 2
    assert b"'complete' is reserved for the system" in capsysbinary.readouterr().err


def test_logs_follow_exits_with_the_job_status(server):
    """`logs --follow` ends as `run --follow` does: with the job's exit code, 124 after a time-out,
    1 for a run killed by a signal."""
    s = server()
    url = s.config.base_url
    s.trigger("slow", {})
    proc = subprocess.Popen([sys.executable, "-m", "overseer.cli", "logs", "slow", "1", "-f",
                             "--url", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"started\n"
        s.create_event("slow", 1, "terminate", None)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1
    s.trigger("fails", {})
    failed = cli("logs", "fails", "1", "--follow", "--url", url)
    assert failed.returncode == 3 and failed.stdout == b"failing\n" and failed.stderr == b""
    s.trigger("late", {})
    assert cli("logs", "late", "1", "--follow", "--url", url).returncode == 124
    assert cli("logs", "fails", "1", "--url", url).returncode == 0   # without --follow: the bytes, 0


def test_run_follow_names_the_execution_on_stderr(server):
    s = server()
    url = s.config.base_url
    s.trigger("hello", {})
    done = cli("run", "hello", "--follow", "--url", url)
    assert done.returncode == 0
    assert done.stderr == b"hello/2\n"   # stdout holds the output alone
    assert sorted(done.stdout.splitlines()) == [b"hello world", b"to-stderr"]
    failed = cli("run", "fails", "-f", "--url", url)
    assert failed.stderr == b"fails/1\n" and failed.stdout == b"failing\n"


def test_jobs(server, capsys):
    s = server()
    s.trigger("fails", {})
    wait_finished(s, "fails", 1)
    assert main(["jobs", "--url", s.config.base_url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "ACTIVE", "LAST", "SCHEDULE", "DESCRIPTION"]
    rows = {line.split()[0]: line for line in out[1:]}
    assert sorted(rows) == ["bytes", "fails", "hello", "late", "slow", "typed"]
    assert "#1 fail" in rows["fails"] and rows["hello"].rstrip().endswith("says hello")
    assert main(["jobs", "--json", "--url", s.config.base_url]) == 0
    assert '"jobs"' in capsys.readouterr().out


def test_tokens_from_option_and_environment(server):
    s = server(server={"tokens": ["tok"]})
    url = s.config.base_url
    refused = cli("jobs", "--url", url)
    assert refused.returncode == 2 and b"401" in refused.stderr and b"OVERSEER_API_TOKEN" in refused.stderr
    assert cli("jobs", "--url", url, "--token", "tok").returncode == 0
    assert cli("jobs", "--url", url, "--token", "bad").returncode == 2
    by_env = cli("run", "hello", "--follow", env={"OVERSEER_URL": url, "OVERSEER_API_TOKEN": "tok"})
    assert by_env.returncode == 0 and b"hello world" in by_env.stdout


def test_connection_refused_is_one_line():
    url = f"http://127.0.0.1:{free_port()}"
    commands = (["jobs"], ["run", "hello", "--follow"], ["logs", "hello", "1"], ["event", "hello", "1", "x"],
                ["repeat", "hello", "1"], ["show", "hello", "1"], ["history"], ["history", "hello"],
                ["activate", "hello"], ["deactivate", "hello"], ["repo"], ["sync"])
    for args in commands:
        done = cli(*args, "--url", url)
        assert done.returncode == 2
        lines = done.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("overseer: cannot connect to") and url in lines[0]
        assert done.stdout == b""


def test_exit_status_rules():
    def record(*names, exit_code=None):
        return {"events": [{"name": n} for n in names], "exit_code": exit_code, "status": names[-1]}

    assert exit_status(record("queued", "start", "complete", exit_code=0)) == 0
    assert exit_status(record("queued", "start", "fail", exit_code=7)) == 7
    assert exit_status(record("queued", "start", "time-out", "fail")) == 124
    assert exit_status(record("queued", "start", "kill", "fail")) == 1
    assert exit_status(record("queued", "start", "lost")) == 1
    assert exit_status(record("queued", "start", "complete", "deployed", exit_code=0)) == 0
    assert exit_status(record("queued", "complete")) == 0  # a job with no command


def test_default_url_from_environment(server, monkeypatch, capsys):
    s = server()
    monkeypatch.setenv("OVERSEER_URL", s.config.base_url)
    assert main(["jobs"]) == 0
    assert "hello" in capsys.readouterr().out
