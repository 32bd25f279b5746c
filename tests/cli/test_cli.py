"""`overseer validate` and the embedded default, through the real command line entry point."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from overseer.embedded import EXAMPLES, example_repository

from ..conftest import JobRepo, git
from ..serving import alive, start_server


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "overseer.cli", *args], capture_output=True, text=True,
                          cwd=cwd)


def test_validate_prints_exactly_the_bad_files(tmp_path):
    repo = JobRepo(tmp_path / "r")
    repo.write({"ok.yml": {"command": "true"}, "team/fine.json": {"command": "echo {{ x }}",
                                                                   "vars": [{"name": "x"}]},
                "bad.yml": {"command": "true", "script": "x.sh"},
                "typo.yaml": {"comand": "true"},
                "vars.yml": {"command": "true", "vars": [{"name": "n", "type": "int", "default": "abc"}]}})
    r = run_cli("validate", str(repo.root))
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["bad.yml", "typo.yaml", "vars.yml"]
    assert "script" in lines[0] and "comand" in lines[1] and "(n)" in lines[2] and "'abc'" in lines[2]
    assert "2 valid job(s), 3 problem(s)" in r.stderr


def test_validate_all_problems_reports_every_problem_of_a_file(tmp_path):
    """Without the option a file's first problem (what a sync reports); with it, each key, var,
    schedule entry, hook and env entry checked on its own, and the other files as before."""
    repo = JobRepo(tmp_path / "r")
    repo.write({"ok.yml": {"command": "true"},
                "many.yml": {"comand": "x", "command": "echo {{ who }} {{ n }} {{ nope }}", "timeout": -1,
                             "vars": [{"name": "who", "type": "strr"}, {"name": "n", "type": "int",
                                                                          "default": "abc"}],
                             "schedule": [{"frequency": "every day"}, {"frequency": "@daily",
                                                                      "timezone": "Mars/Base"}],
                             "hooks": {"fail": "ftp://x", "complete": "https://ok.example"},
                             "env": {"OVERSEER_X": "1", "fine": "y"}},
                "bad.yaml": "command: [echo\n",
                "one.yml": {"command": "true", "max_concurrent": 0}})
    first = run_cli("validate", str(repo.root))
    assert first.returncode == 1
    assert [line.split(":")[0] for line in first.stdout.splitlines()] == ["bad.yaml", "many.yml", "one.yml"]
    every = run_cli("validate", "--all-problems", str(repo.root))
    assert every.returncode == 1
    lines = every.stdout.splitlines()
    many = [line[len("many.yml: "):] for line in lines if line.startswith("many.yml: ")]
    assert many[0] == first.stdout.splitlines()[1][len("many.yml: "):]   # the first problem first
    expected = ["unknown key 'comand'", "timeout: -1", "vars[0] (who): type 'strr'",
                "vars[1] (n): default 'abc'", "schedule[0].frequency: 'every day'", "schedule[1].timezone:",
                "hooks.fail: 'ftp://x'", "env.OVERSEER_X:", "the template uses 'nope'"]
    assert len(many) == len(expected), many
    for message, start in zip(many, expected):
        assert start in message, (start, message)
    assert [line for line in lines if not line.startswith("many.yml")] == \
        [line for line in first.stdout.splitlines() if not line.startswith("many.yml")]
    assert "1 valid job(s), 11 problem(s) in 3 file(s)" in every.stderr
    assert run_cli("validate", "-a", str(EXAMPLES)).returncode == 0


def test_yaml_errors_name_the_file(tmp_path):
    repo = JobRepo(tmp_path / "r")
    repo.write({"team/bad.yaml": "command: [echo\n", "ok.yml": {"command": "true"}})
    done = run_cli("validate", str(repo.root))
    assert done.stdout.startswith('team/bad.yaml: invalid YAML: while parsing a flow sequence in '
                                  '"team/bad.yaml", line 1, column 10 ')
    assert "<byte string>" not in done.stdout
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  port: [1\n")
    refused = run_cli("serve", "-c", str(cfg))
    assert refused.returncode == 2
    assert f'in "{cfg}", line 2, column 9' in refused.stderr, refused.stderr
    assert "<unicode string>" not in refused.stderr and len(refused.stderr.splitlines()) == 1


def test_validate_exit_codes(tmp_path):
    repo = JobRepo(tmp_path / "r")
    repo.write({"ok.yml": {"command": "true"}})
    assert run_cli("validate", str(repo.root)).returncode == 0
    r = run_cli("validate", str(tmp_path / "nope"))
    assert r.returncode == 2 and "not a directory" in r.stderr


def test_bundled_examples_are_valid_and_become_a_git_repository(tmp_path):
    assert run_cli("validate", str(EXAMPLES)).returncode == 0
    repo = example_repository(tmp_path / "example-jobs")
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert (repo / "bin" / "greeting").stat().st_mode & 0o111
    assert example_repository(tmp_path / "example-jobs") == repo  # made once


def test_serve_refuses_bad_config(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  prot: 1\n")
    r = run_cli("serve", "-c", str(cfg))
    assert r.returncode == 2 and "server.prot: unknown key" in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_runs_until_sigint_or_sigterm(tmp_path, sig):
    """SPEC: `overseer serve` runs in the foreground until SIGINT or SIGTERM. Other signals the
    server gets meanwhile (a job's end) do not stop it; either stop signal ends it with status 0
    while a job runs."""
    server = start_server(tmp_path, {"quick.yml": {"command": "true"}, "slow.yml": {"command": "sleep 60"}})
    try:
        server.wait("quick", server.run("quick")["id"])
        running = server.run("slow")["id"]
        server.wait("slow", running, state="running")
        assert server.get("/health").status_code == 200 and alive(server.pid)
        server.proc.send_signal(sig)
        assert server.proc.wait(60) == 0, server.log()[-3000:]
        assert "stopping" in server.log()
    finally:
        server.kill()
