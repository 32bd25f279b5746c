"""The client's verbs beyond run/logs/event, each against a real server: `activate`, `deactivate`,
`repeat`, `show`, `history`, `repo` and `sync`."""
from __future__ import annotations

import json

import pytest

from overseer.cli import main

from ..waiting import wait_finished, wait_for
from .test_client import cli

JOBS = {
    "hello.yml": {"command": "echo hello {{ who }}", "vars": [{"name": "who", "default": "world"}]},
    "typed.yml": {"command": "echo n={{ n }} items={{ items }}",
                  "vars": [{"name": "n", "type": "int"}, {"name": "items", "type": "seq", "default": []}]},
    "fails.yml": {"command": "echo failing; exit 3"},
    "other.yml": {"command": "true"},
}


@pytest.fixture
def served(serve):
    def start():
        system, _ = serve(JOBS)
        return system

    return start


def run_to_end(system, job: str, values: dict | None = None) -> dict:
    record = system.trigger(job, values or {})
    return wait_finished(system, job, record["id"])


def test_deactivate_and_activate(served, capsys):
    s = served()
    url = s.config.base_url
    assert main(["deactivate", "hello", "--url", url]) == 0
    assert capsys.readouterr().out == "hello: inactive\n"
    assert not s.is_active("hello")
    refused = cli("run", "hello", "--url", url)
    assert refused.returncode == 2 and b"409" in refused.stderr and b"inactive" in refused.stderr
    assert main(["activate", "hello", "--url", url]) == 0
    assert capsys.readouterr().out == "hello: active\n"
    assert s.is_active("hello")
    assert cli("run", "hello", "--follow", "--url", url).stdout == b"hello world\n"
    assert main(["deactivate", "nope", "--url", url]) == 2
    assert "404" in capsys.readouterr().err


def test_repeat_runs_again_with_the_same_values(served):
    s = served()
    url = s.config.base_url
    run_to_end(s, "typed", {"n": 5, "items": ["a", "b"]})
    again = cli("repeat", "typed", "1", "--url", url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.decode().startswith("typed/2 ")
    record = wait_finished(s, "typed", 2)
    assert record["params"] == {"n": 5, "items": ["a", "b"]} and record["trigger"] == "repeat"
    followed = cli("repeat", "typed", "2", "--follow", "--url", url)
    assert followed.returncode == 0
    assert followed.stdout == b"n=5 items=a b\n" and followed.stderr == b"typed/3\n"
    run_to_end(s, "fails")
    failed = cli("repeat", "fails", "1", "-f", "--url", url)
    assert failed.returncode == 3 and failed.stdout == b"failing\n" and failed.stderr == b"fails/2\n"
    missing = cli("repeat", "typed", "9", "--url", url)
    assert missing.returncode == 2 and b"404" in missing.stderr and b"no execution 9" in missing.stderr


def test_show_is_readable_and_json_on_request(served, capsys):
    s = served()
    url = s.config.base_url
    run_to_end(s, "hello", {"who": "you"})
    assert main(["show", "hello", "1", "--url", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["hello/1", "finished", "complete", "(exit", "code", "0)"]
    fields = {line.split()[0]: line.split(None, 1)[1] for line in lines[1:] if len(line.split()) > 1}
    assert fields["params"] == "who=you" and fields["command"] == "echo hello you"
    assert fields["trigger"] == "api" and fields["commit"] == s.execution("hello", 1)["commit"][:12]
    assert fields["output"] == f"{url}/jobs/hello/1/output"
    at = lines.index("  events")
    assert [line.split()[2] for line in lines[at + 1:at + 4]] == ["queued", "start", "complete"]

    run_to_end(s, "fails")
    assert main(["show", "fails", "1", "--url", url]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[:3] == ["fails/1", "finished", "fail"]
    assert main(["show", "fails", "1", "--json", "--url", url]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["exit_code"] == 3 and record["events"] == s.execution("fails", 1)["events"]
    assert main(["show", "fails", "7", "--url", url]) == 2
    assert "no execution 7" in capsys.readouterr().err


def test_history_of_one_job_and_of_all_newest_first(served, capsys):
    s = served()
    url = s.config.base_url
    assert main(["history", "--url", url]) == 0
    assert capsys.readouterr().out == "no executions yet\n"
    for job in ("hello", "other", "hello", "fails", "other"):
        run_to_end(s, job)
    assert main(["history", "hello", "--url", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["EXECUTION", "STATE", "STATUS", "TRIGGER", "CREATED", "TOOK"]
    assert [line.split()[0] for line in lines[1:]] == ["hello/2", "hello/1"]
    assert main(["history", "--url", url]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["other/2", "fails/1", "hello/2", "other/1", "hello/1"]
    assert "fail (exit code 3)" in rows[1] and rows[1].split()[1] == "finished"
    assert main(["history", "-n", "3", "--url", url]) == 0
    assert [row.split()[0] for row in capsys.readouterr().out.splitlines()[1:]] == \
        ["other/2", "fails/1", "hello/2"]
    assert main(["history", "--limit", "2", "--json", "--url", url]) == 0
    assert [(r["job"], r["id"]) for r in json.loads(capsys.readouterr().out)["executions"]] == \
        [("other", 2), ("fails", 1)]
    assert main(["history", "typed", "--url", url]) == 0
    assert capsys.readouterr().out == "typed: no executions yet\n"
    assert main(["history", "nope", "--url", url]) == 2
    assert "404" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["history", "-n", "0", "--url", url])
    assert "from 1 to 1000" in capsys.readouterr().err


def test_repo_and_sync(served, job_repo, capsys):
    s = served()
    url = s.config.base_url
    first = s.repo_info()["commit"]
    assert main(["repo", "--url", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == [f"url        {job_repo.root}", "branch     main", f"commit     {first}"]
    assert lines[-1] == "no problems in the job files"

    second = job_repo.commit({"broken.yml": "command: [echo\n"}, "break a file")
    assert main(["sync", "--url", url]) == 0
    assert "sync requested" in capsys.readouterr().out
    wait_for(lambda: s.repo_info()["commit"] == second, 30, "the sync")
    assert main(["repo", "--url", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"commit     {second}" in lines
    at = lines.index("1 file(s) with problems:")
    assert lines[at + 1].startswith("  broken.yml: invalid YAML: ")
    assert main(["repo", "--json", "--url", url]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["commit"] == second and [e["file"] for e in info["errors"]] == ["broken.yml"]


def test_yaml_errors_name_the_file_not_a_byte_string(served, job_repo, capsys):
    """`GET /repo`, and so `overseer repo`, says in which file and where the YAML breaks."""
    s = served()
    job_repo.commit({"team/broken.yaml": "command: echo\n  bad: : :\n"}, "broken")
    s.sync()
    errors = {e["file"]: e["error"] for e in s.repo_info()["errors"]}
    assert '"team/broken.yaml", line 2, column' in errors["team/broken.yaml"], errors
    assert "<byte string>" not in errors["team/broken.yaml"]
    assert main(["repo", "--url", s.config.base_url]) == 0
    shown = [line for line in capsys.readouterr().out.splitlines() if "broken" in line]
    assert shown == ['  team/broken.yaml: invalid YAML: mapping values are not allowed in this context '
                     'in "team/broken.yaml", line 2, column 6']
