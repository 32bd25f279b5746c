"""Faults of the server process itself, each against a real ``overseer serve`` with real jobs:
a SIGKILL while 50 executions stream output, a SIGTERM under load, a storm of restarts while
schedules fire every second, and a job flooding 2 GB of output without a newline.

Run with ``-s`` to see the figures (bytes written and kept around the kill, peak memory)."""
from __future__ import annotations

import datetime as _dt
import os
import signal
import subprocess
import textwrap
import threading
import time

import pytest

from overseer.store import Store

from ..serving import Server, alive, group_alive, rss_kib, start_server
from ..waiting import wait_for

pytestmark = pytest.mark.slow

# A job that streams numbered lines to stdout (and every 4th to stderr) and records in a
# witness file, beside the store, every line whose write() into the pipe returned. When the
# server dies, its writes fail (EPIPE); it then stays alive doing nothing, so only the restart's
# recovery can end it.
STREAMER = textwrap.dedent("""\
    #!/usr/bin/env python3
    import os, sys, time
    ident = os.environ["OVERSEER_EXECUTION"]
    base = os.path.join(os.environ["WITNESS"], ident)
    witness = {1: open(base + ".1", "ab", buffering=0), 2: open(base + ".2", "ab", buffering=0)}
    def put(fd, data):
        os.write(fd, data)
        witness[fd].write(data)
    try:
        put(1, b"pgid %d\\n" % os.getpgid(0))
        n = 0
        while True:
            n += 1
            put(1, b"%s out %d ........................................\\n" % (ident.encode(), n))
            if n % 4 == 0:
                put(2, b"%s err %d\\n" % (ident.encode(), n))
            time.sleep(0.02)
    except BrokenPipeError:
        while True:
            time.sleep(1)
""")


def _iso(text: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _read(path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


# -- 1. SIGKILL while 50 executions stream ----------------------------------------------------------

def test_sigkill_with_50_streaming_executions(tmp_path):
    witness = tmp_path / "witness"
    witness.mkdir()
    count = 50
    files = {
        "bin/streamer": STREAMER,
        "stream.yml": {"command": "streamer", "env": {"WITNESS": str(witness)}},
        "tick.yml": {"command": "true", "schedule": [{"frequency": 1}]},
    }
    server = start_server(tmp_path / "s", files, {"execution": {"kill_grace": 2}})
    try:
        for i in range(1, count + 1):
            assert server.run("stream")["id"] == i
        # every execution is running and its output is streaming through the server
        wait_for(lambda: all(server.get(f"/jobs/stream/{i}/stderr").content for i in range(1, count + 1)), 60,
                 "all 50 executions to stream")
        wait_for(lambda: len(server.get("/jobs/tick").json()["executions"]) >= 2, 20, "two scheduled ticks")
        acked = {i: (server.get(f"/jobs/stream/{i}/stdout").content,
                     server.get(f"/jobs/stream/{i}/stderr").content) for i in range(1, count + 1)}
        pgids = {i: int(acked[i][0].split(b"\n", 1)[0].split()[1]) for i in acked}
        killed_at = _dt.datetime.now(_dt.timezone.utc)
        server.kill()
    finally:
        server.kill()
    # The jobs outlive the server (their own sessions): only recovery can end them.
    assert all(group_alive(pgid) for pgid in pgids.values())

    server.start()
    try:
        written = present = 0
        for i in range(1, count + 1):
            meta = server.execution("stream", i)
            assert meta["state"] == "finished" and meta["status"] == "lost", meta
            for stream, fd, before in (("stdout", 1, acked[i][0]), ("stderr", 2, acked[i][1])):
                stored = server.get(f"/jobs/stream/{i}/{stream}").content
                wrote = _read(witness / f"{i}.{fd}")
                # everything the server had shown before the kill is still there ...
                assert stored.startswith(before), (i, stream)
                # ... and what is kept is exactly what the job wrote, in order, nothing invented
                assert wrote.startswith(stored), (i, stream)
                # what is missing sat in the pipe or the write queue at the kill: a pipe's worth at most
                assert len(wrote) - len(stored) <= 64 << 10, (i, stream, len(wrote), len(stored))
                written += len(wrote)
                present += len(stored)
            output = server.get(f"/jobs/stream/{i}/output").content
            assert len(output) == len(server.get(f"/jobs/stream/{i}/stdout").content) + len(
                server.get(f"/jobs/stream/{i}/stderr").content)
        # the orphaned process groups are terminated by the restart
        for pgid in pgids.values():
            wait_for(lambda pgid=pgid: not group_alive(pgid), 15, f"process group {pgid} to end")
        # ids continue, never reused
        assert server.run("stream")["id"] == count + 1
        server.req("PUT", f"/jobs/stream/{count + 1}", json={"event": "kill"})
        # the schedule resumes, and no slot fired twice
        wait_for(lambda: any(_iso(e["scheduled_for"]) > killed_at
                         for e in server.get("/jobs/tick?limit=1000").json()["executions"]),
                 20, "a tick after the restart")
        ticks = server.get("/jobs/tick?limit=1000").json()["executions"]
        slots = [e["scheduled_for"] for e in ticks]
        assert len(slots) == len(set(slots))
        assert sorted(e["id"] for e in ticks) == list(range(1, len(ticks) + 1))
        print(f"\n[case 1] {count} executions SIGKILLed while streaming: {written} bytes written "
              f"before the kill, {present} bytes present after the restart "
              f"({written - present} bytes in flight lost)")
    finally:
        assert server.stop() == 0


# -- 2. SIGTERM under load --------------------------------------------------------------------------

def test_sigterm_under_load_exits_0_and_finishes_everything(tmp_path):
    grace = 2
    files = {
        "busy.yml": {"command": "echo pgid $$; while :; do echo tick; sleep 0.05; done"},
        "stubborn.yml": {"command": "trap '' TERM; echo pgid $$; while :; do sleep 0.1; done"},
    }
    server = start_server(tmp_path / "s", files,
                          {"execution": {"kill_grace": grace, "max_concurrent": 20}})
    try:
        for _ in range(15):
            server.run("busy")
        for _ in range(10):
            server.run("stubborn")
        def running():
            found = [r for job in ("busy", "stubborn")
                     for r in server.get(f"/jobs/{job}?limit=100").json()["executions"]
                     if r["state"] == "running"]
            return found if len(found) == 20 else None

        running = wait_for(running, 30, "20 running")
        wait_for(lambda: all(server.get(f"/jobs/{r['job']}/{r['id']}/stdout").content.startswith(b"pgid")
                         for r in running), 30, "every running job to print its pgid")
        pgids = [int(server.get(f"/jobs/{r['job']}/{r['id']}/stdout").content.split()[1]) for r in running]
        began = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        try:
            code = server.proc.wait(grace + 15)
        except subprocess.TimeoutExpired:
            pytest.fail("the server did not exit within kill_grace + 15 s:\n" + server.log()[-3000:])
        took = time.monotonic() - began
        assert code == 0, server.log()[-3000:]
        for pgid in pgids:
            wait_for(lambda pgid=pgid: not group_alive(pgid), 5, f"process group {pgid} to end")
        with Store(server.data / "store") as store:
            records = store.list_executions("busy", 100) + store.list_executions("stubborn", 100)
        assert len(records) == 25
        assert [r for r in records if r["state"] != "finished"] == []
        ran = [r for r in records if r["started_at"]]
        assert len(ran) >= 20
        assert {r["status"] for r in ran} <= {"fail", "lost"}
        assert {r["signal"] for r in ran if r["job"] == "stubborn" and r["status"] == "fail"} == {"SIGKILL"}
        assert {r["signal"] for r in ran if r["job"] == "busy" and r["status"] == "fail"} <= {"SIGTERM"}
        assert all(r["status"] == "lost" for r in records if not r["started_at"])
        print(f"\n[case 2] SIGTERM with 20 running (10 ignoring SIGTERM) and 5 queued: exit 0 after "
              f"{took:.1f}s (kill_grace {grace}s)")
    finally:
        server.kill()


# -- 3. Restart storm ---------------------------------------------------------------------------

def test_restart_storm_never_fires_a_slot_twice(tmp_path):
    files = {"cron.yml": {"command": "true", "schedule": [{"frequency": "* * * * * *"}]},
             "period.yml": {"command": "true", "schedule": [{"frequency": 1}]}}
    server = Server(tmp_path / "s", files, {"execution": {"kill_grace": 1}})
    exits = []
    try:
        for restart in range(5):
            server.start()
            seen = len(server.get("/jobs/cron?limit=1000").json()["executions"])
            wait_for(lambda seen=seen: len(server.get("/jobs/cron?limit=1000").json()["executions"]) > seen,
                     10, "a tick in this life of the server")
            if restart % 2:
                server.kill()
                exits.append("killed")
            else:
                exits.append(server.stop())
        server.start()
        for job in ("cron", "period"):
            seen = len(server.get(f"/jobs/{job}?limit=1000").json()["executions"])
            wait_for(lambda job=job, seen=seen:
                     len(server.get(f"/jobs/{job}?limit=1000").json()["executions"]) >= seen + 2,
                     10, f"{job} ticking after the storm")
        assert exits == [0, "killed", 0, "killed", 0]
        for job in ("cron", "period"):
            runs = server.get(f"/jobs/{job}?limit=1000").json()["executions"]
            slots = [r["scheduled_for"] for r in runs]
            assert len(slots) == len(set(slots)), sorted(slots)
            assert sorted(r["id"] for r in runs) == list(range(1, len(runs) + 1))
            assert all(r["trigger"] == "schedule" for r in runs)
        assert server.stop() == 0
        assert "Traceback" not in server.log()
    finally:
        server.kill()


# -- 5. Log flood ----------------------------------------------------------------------------------

def test_log_flood_is_capped_and_memory_stays_flat(tmp_path):
    cap = 8 << 20
    flood = 2 * 10**9
    files = {"flood.yml": {"command": f"head -c {flood} /dev/zero; echo done >&2"},
             "hello.yml": {"command": "echo hello"}}
    server = start_server(tmp_path / "s", files, {"execution": {"max_output_bytes": cap}})
    try:
        server.run("hello")
        server.wait("hello", 1)
        baseline = rss_kib(server.pid)
        server.run("flood")
        peak, answers, stop = baseline, [], threading.Event()

        def sample():
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, rss_kib(server.pid) or 0)
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            # the API keeps answering while the flood is read and dropped
            while server.execution("flood", 1)["state"] != "finished":
                answers.append(server.get("/health", timeout=10).status_code)
                answers.append(server.get("/jobs/flood/1/stdout?offset=1000", timeout=10).status_code)
                answers.append(server.req("POST", "/jobs/hello", timeout=10).status_code)
                time.sleep(0.05)
                assert server.proc.poll() is None
        finally:
            stop.set()
            sampler.join()
        meta = server.execution("flood", 1)
        assert meta["status"] == "complete" and meta["exit_code"] == 0, meta
        truncated = [e for e in meta["events"] if e["name"] == "output-truncated"]
        assert len(truncated) == 1 and str(cap) in truncated[0]["cause"]
        assert int(server.req("HEAD", "/jobs/flood/1/output").headers["Content-Length"]) == cap
        assert server.get(f"/jobs/flood/1/stdout?offset={cap - 4}").content == b"\0" * 4
        assert set(answers) <= {200, 201} and len(answers) >= 3
        grown = peak - baseline
        assert grown < 96 << 10, f"server RSS grew by {grown} KiB during the flood"
        print(f"\n[case 5] {flood} bytes flooded, {cap} kept: server RSS {baseline} KiB before, "
              f"peak {peak} KiB during the flood (+{grown} KiB); {len(answers)} API calls answered meanwhile")
        assert os.path.getsize(server.data / "store" / "data.mdb") < 256 << 20
        assert alive(server.pid)
    finally:
        assert server.stop() == 0
