"""The engine end to end: real git repository, real processes, real LMDB, real actors."""
from __future__ import annotations

import datetime as dt
import os

import pytest

from overseer.exceptions import Conflict, NotFound, ParamError

from ..waiting import wait_finished, wait_for


def out(system, job, ident, stream="stdout") -> bytes:
    return system.store.read_output(job, ident, stream, 0, 1 << 24)


def events(record) -> list[str]:
    return [e["name"] for e in record["events"]]


def test_trigger_output_and_exit_codes(system_factory):
    s = system_factory({
        "hello.yml": {"command": "echo hello; echo oops >&2; echo again"},
        "fails.yml": {"command": "echo bad >&2; exit 3"},
        "nothing.yml": {"description": "no command: completes at once"},
    })
    rec = s.trigger("hello", {})
    assert rec["id"] == 1 and rec["state"] == "queued" and rec["trigger"] == "api"
    done = wait_finished(s, "hello", 1)
    assert done["status"] == "complete" and done["exit_code"] == 0 and done["signal"] is None
    assert events(done) == ["queued", "start", "complete"]
    assert [e["source"] for e in done["events"]] == ["system"] * 3
    assert done["commit"] == s.repo_info()["commit"] and done["pid"] > 0
    assert out(s, "hello", 1) == b"hello\nagain\n"
    assert out(s, "hello", 1, "stderr") == b"oops\n"
    assert sorted(out(s, "hello", 1, "output").splitlines()) == [b"again", b"hello", b"oops"]
    s.trigger("fails", {})
    failed = wait_finished(s, "fails", 1)
    assert failed["status"] == "fail" and failed["exit_code"] == 3
    s.trigger("nothing", {})
    assert wait_finished(s, "nothing", 1)["status"] == "complete"
    assert s.trigger("hello", {})["id"] == 2


def test_output_bytes_exact_and_interleaved(system_factory):
    s = system_factory({"bytes.yml": {"command": r"printf 'a\000b\377'; sleep 0.1; printf 'E' >&2; "
                                                 r"sleep 0.1; printf 'c\r\n'"}})
    s.trigger("bytes", {})
    wait_finished(s, "bytes", 1)
    assert out(s, "bytes", 1) == b"a\x00b\xffc\r\n"
    assert out(s, "bytes", 1, "output") == b"a\x00b\xffEc\r\n"


def test_vars_quoted_env_and_errors(system_factory):
    s = system_factory({"greet.yml": {
        "command": "printf '%s|' {{ who }} \"$OVERSEER_VAR_WHO\"",
        "vars": [{"name": "who"}, {"name": "n", "type": "int", "default": 2}]}})
    hostile = "$(touch /tmp/pwned) `id`; rm -rf * 'q' \"d\"\n{{ x }}"
    s.trigger("greet", {"who": hostile})
    done = wait_finished(s, "greet", 1)
    assert out(s, "greet", 1) == f"{hostile}|{hostile}|2|".encode()  # n is appended
    assert done["params"] == {"who": hostile, "n": 2}
    with pytest.raises(ParamError, match="who"):
        s.trigger("greet", {})
    with pytest.raises(ParamError, match="nope"):
        s.trigger("greet", {"who": "x", "nope": 1})
    with pytest.raises(ParamError, match="n"):
        s.trigger("greet", {"who": "x", "n": "abc"}, from_strings=True)
    with pytest.raises(NotFound):
        s.trigger("missing", {})
    assert s.store.get_execution("greet", 2) is None  # nothing created by bad input


def test_environment_cwd_and_tmpdir(system_factory, job_repo):
    s = system_factory({
        "bin/helper": "#!/bin/sh\necho helper-from-bin\n",
        "data.txt": "from the repo\n",
        "env.yml": {"command": "helper; cat data.txt; echo $OVERSEER_JOB $OVERSEER_EXECUTION $EXTRA; "
                               "test -d \"$TMPDIR\" && echo $TMPDIR; "
                               "command -v event; test -S \"$OVERSEER_SOCKET\" && echo socket",
                    "env": {"EXTRA": "x1"}},
    })
    s.trigger("env", {})
    wait_finished(s, "env", 1)
    lines = out(s, "env", 1).decode().splitlines()
    assert lines[0] == "helper-from-bin" and lines[1] == "from the repo" and lines[2] == "env 1 x1"
    tmpdir = lines[3]
    assert not os.path.exists(tmpdir)  # removed at the end
    assert lines[4].endswith("/library/event") and lines[5] == "socket"


def test_tmpdirs_are_each_runs_own_and_removed_with_their_files(system_factory):
    s = system_factory({"scratch.yml": {"command": "echo $TMPDIR; ls -A \"$TMPDIR\"; "
                                                   "touch \"$TMPDIR/mine\"; sleep 1"}})
    for _ in range(3):
        s.trigger("scratch", {})  # all three running at once
    paths = []
    for ident in (1, 2, 3):
        wait_finished(s, "scratch", ident)
        paths.append(out(s, "scratch", ident).decode().splitlines())
    assert all(len(lines) == 1 for lines in paths), paths  # each found its TMPDIR empty
    assert len({lines[0] for lines in paths}) == 3  # and its own
    assert not any(os.path.exists(lines[0]) for lines in paths)  # removed, files and all


def test_tmpdirs_a_killed_server_left_are_cleared_and_taken_names_passed_over(system_factory, tmp_path):
    left = tmp_path / "data" / "tmp" / "run-1"
    left.mkdir(parents=True)
    (left / "stale").write_text("from a server that was killed")
    s = system_factory({"look.yml": {"command": "ls -A \"$TMPDIR\""}})
    assert not (left / "stale").exists()  # cleared at the start
    taken = [tmp_path / "data" / "tmp" / f"run-{n}" for n in range(17, 1000)]
    for path in taken:  # names the pool will come to, taken meanwhile by something else
        path.mkdir(exist_ok=True)
        (path / "other").write_text("not a run's")
    for ident in range(1, 31):
        s.trigger("look", {})
        assert wait_finished(s, "look", ident)["status"] == "complete"
        assert out(s, "look", ident) == b""  # never one of the taken ones
    assert all((path / "other").exists() for path in taken)


def test_timeout_kills_background_grandchild(system_factory):
    s = system_factory({"slow.yml": {"command": "sleep 300 & echo $!; sleep 300", "timeout": 1}})
    s.trigger("slow", {})
    done = wait_finished(s, "slow", 1, timeout=30)
    assert done["status"] == "time-out"
    assert events(done) == ["queued", "start", "time-out"]
    grandchild = int(out(s, "slow", 1).split()[0])
    wait_for(lambda: not _alive(grandchild), 10, "grandchild gone")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_signal_events(system_factory):
    s = system_factory({"waits.yml": {"command": "echo started; sleep 300"},
                        "quick.yml": {"command": "true"}})
    s.trigger("waits", {})
    wait_for(lambda: out(s, "waits", 1) == b"started\n", what="started", store=s.store)
    with pytest.raises(Conflict):
        s.create_event("waits", 1, "continue", None)
    ev = s.create_event("waits", 1, "stop", "pause please")
    assert ev["name"] == "stop" and ev["source"] == "api" and ev["cause"] == "pause please"
    assert s.execution("waits", 1)["state"] == "stopped"
    with pytest.raises(Conflict):
        s.create_event("waits", 1, "stop", None)
    s.create_event("waits", 1, "continue", None)
    assert s.execution("waits", 1)["state"] == "running"
    s.create_event("waits", 1, "note", "just a status")
    assert s.execution("waits", 1)["status"] == "note"
    s.create_event("waits", 1, "terminate", None)
    done = wait_finished(s, "waits", 1)
    assert done["status"] == "fail" and done["signal"] == "SIGTERM"
    assert events(done) == ["queued", "start", "stop", "continue", "note", "terminate", "fail"]
    with pytest.raises(Conflict):
        s.create_event("waits", 1, "kill", None)
    s.trigger("waits", {})
    wait_for(lambda: out(s, "waits", 2), store=s.store)
    s.create_event("waits", 2, "stop", None)
    s.create_event("waits", 2, "kill", None)  # a stopped process is killed too
    assert wait_finished(s, "waits", 2)["signal"] == "SIGKILL"
    with pytest.raises(ParamError):
        s.create_event("waits", 2, "stdout", None)
    with pytest.raises(ParamError):
        s.create_event("waits", 2, "bad name!", None)
    with pytest.raises(NotFound):
        s.create_event("waits", 99, "x", None)


def test_terminate_escalates_to_kill_after_grace(system_factory):
    s = system_factory({"stubborn.yml": {"command": "trap '' TERM; echo ready; sleep 300"}},
                       execution={"kill_grace": 1})
    s.trigger("stubborn", {})
    wait_for(lambda: out(s, "stubborn", 1), store=s.store)
    s.create_event("stubborn", 1, "terminate", None)
    done = wait_finished(s, "stubborn", 1)
    assert done["signal"] == "SIGKILL"


def test_job_event_tool_and_forged_token(system_factory):
    s = system_factory({
        "reports.yml": {"command": "event half-way 'half way' there && echo sent; "
                                   "OVERSEER_TOKEN=forged event sneaky; echo \"forged=$?\"; "
                                   "event 'bad name'; echo \"bad=$?\""},
    })
    s.trigger("reports", {})
    done = wait_finished(s, "reports", 1)
    half = [e for e in done["events"] if e["name"] == "half-way"]
    assert half == [{"name": "half-way", "cause": "half way there", "time": half[0]["time"],
                     "source": "job"}]
    assert "sneaky" not in events(done)
    lines = out(s, "reports", 1).decode().splitlines()
    assert lines == ["sent", "forged=1", "bad=1"]
    assert b"unknown or expired token" in out(s, "reports", 1, "stderr")


def test_output_cap_records_truncation(system_factory):
    s = system_factory({"loud.yml": {"command": "head -c 100000 /dev/zero; echo tail >&2"}},
                       execution={"max_output_bytes": 1000})
    s.trigger("loud", {})
    done = wait_finished(s, "loud", 1)
    assert s.store.output_size("loud", 1, "output") == 1000
    assert "output-truncated" in events(done) and done["status"] == "complete"


def test_cannot_start_is_a_fail(system_factory, job_repo):
    s = system_factory({"scripts/run.sh": "#!/nonexistent/interpreter\n", "broken.yml": {"script": "run.sh"}})
    s.trigger("broken", {})
    done = wait_finished(s, "broken", 1)
    assert done["status"] == "fail"
    assert "could not start" in done["events"][-1]["cause"]


def test_script_job_gets_vars_appended(system_factory):
    s = system_factory({
        "scripts/show.sh": "#!/bin/sh\nfor a in \"$@\"; do echo \"[$a]\"; done\n",
        "show.yml": {"script": "show.sh", "vars": [
            {"name": "target"}, {"name": "force", "type": "bool", "option": True, "default": False},
            {"name": "level", "type": "int", "option": True, "default": 3}]},
    })
    s.trigger("show", {"target": "-rf /; x", "force": True})
    done = wait_finished(s, "show", 1)
    assert out(s, "show", 1) == b"[-rf /; x]\n[--force]\n[--level]\n[3]\n"
    assert done["command"].startswith("scripts/show.sh ")


def test_repeat_and_inactive(system_factory):
    s = system_factory({"echo.yml": {"command": "echo {{ word }}", "vars": [{"name": "word"}]}})
    s.trigger("echo", {"word": "again"})
    wait_finished(s, "echo", 1)
    rec = s.repeat("echo", 1)
    assert rec["id"] == 2 and rec["trigger"] == "repeat" and rec["params"] == {"word": "again"}
    wait_finished(s, "echo", 2)
    assert out(s, "echo", 2) == b"again\n"
    s.set_active("echo", False)
    with pytest.raises(Conflict):
        s.trigger("echo", {"word": "x"})
    with pytest.raises(Conflict):
        s.repeat("echo", 1)
    s.set_active("echo", True)
    assert s.trigger("echo", {"word": "x"})["id"] == 3


def test_max_concurrent_and_priority(system_factory, tmp_path):
    gate = tmp_path / "gate"
    s = system_factory({
        "block.yml": {"command": f"while [ ! -e {gate} ]; do sleep 0.02; done"},
        "low.yml": {"command": "echo low", "schedule": [{"time": "2099-01-01T00:00:00Z", "priority": 5}]},
        "high.yml": {"command": "echo high", "schedule": [{"time": "2099-01-01T00:00:00Z", "priority": 1}]},
    }, execution={"max_concurrent": 1})
    s.trigger("block", {})
    wait_for(lambda: s.execution("block", 1)["state"] == "running", store=s.store)
    later = dt.datetime(2099, 1, 1, 0, 0, 1, tzinfo=dt.timezone.utc)
    fired = s.ctx.scheduler.proxy().tick(later).get(timeout=10)
    assert sorted(r["job"] for r in fired) == ["high", "low"]
    assert s.execution("low", 1)["state"] == s.execution("high", 1)["state"] == "queued"
    gate.write_text("go")
    low, high = wait_finished(s, "low", 1), wait_finished(s, "high", 1)
    assert low["trigger"] == high["trigger"] == "schedule"
    assert low["scheduled_for"] == "2099-01-01T00:00:00.000000Z"
    assert high["started_at"] < low["started_at"]  # priority 1 before priority 5


def test_job_max_concurrent_queues(system_factory, tmp_path):
    gate = tmp_path / "gate"
    s = system_factory({"one.yml": {"command": f"while [ ! -e {gate} ]; do sleep 0.02; done",
                                    "max_concurrent": 1}})
    s.trigger("one", {})
    s.trigger("one", {})
    wait_for(lambda: s.execution("one", 1)["state"] == "running", store=s.store)
    assert s.execution("one", 2)["state"] == "queued"
    gate.write_text("go")
    first, second = wait_finished(s, "one", 1), wait_finished(s, "one", 2)
    assert second["started_at"] >= first["ended_at"]


def test_queue_full(system_factory, tmp_path):
    from overseer.exceptions import QueueFull

    gate = tmp_path / "gate"
    s = system_factory({"w.yml": {"command": f"while [ ! -e {gate} ]; do sleep 0.02; done"}},
                       execution={"max_concurrent": 1, "max_queued": 2})
    s.trigger("w", {})
    wait_for(lambda: s.execution("w", 1)["state"] == "running", store=s.store)
    s.trigger("w", {})
    s.trigger("w", {})
    with pytest.raises(QueueFull):
        s.trigger("w", {})
    gate.write_text("go")
    for i in (1, 2, 3):
        wait_finished(s, "w", i)
    assert s.store.get_execution("w", 4) is None


def test_a_long_queue_of_runs_that_end_at_once_starts_in_a_loop(system_factory, tmp_path):
    # Runs without a command end during their own start and admit the next from inside it: 400 of
    # them behind one slot would nest 400 starts deep (far past the recursion limit) without the
    # dispatcher's loop.
    gate = tmp_path / "gate"
    s = system_factory({"hold.yml": {"command": f"while [ ! -e {gate} ]; do sleep 0.02; done"},
                        "quick.yml": {"description": "no command: completes at once"}},
                       execution={"max_concurrent": 1})
    s.trigger("hold", {})
    wait_for(lambda: s.execution("hold", 1)["state"] == "running", store=s.store)
    for _ in range(400):
        s.trigger("quick", {})
    assert s.execution("quick", 400)["state"] == "queued"
    gate.write_text("go")
    assert wait_finished(s, "quick", 400)["status"] == "complete"
    assert all(r["status"] == "complete" for r in s.executions("quick", limit=400))


def test_a_tmpdir_that_cannot_be_made_is_could_not_start(system_factory, tmp_path):
    from overseer.actors.execution import scratch_pool

    s = system_factory({"j.yml": {"command": "echo never"}})
    s.ctx.scratch.close()
    s.ctx.scratch = scratch_pool(tmp_path / "no-such-dir")
    s.trigger("j", {})
    done = wait_finished(s, "j", 1)
    assert done["status"] == "fail" and done["events"][-1]["cause"].startswith("could not start:")
    assert s.store.read_output("j", 1, "stdout") == b""
