"""The Execution actor: one per run. It owns its process from start to reaping.

``Execution.begin`` makes the actor and starts its process on the thread that
admitted the run (see ``dispatch``: a trigger's HTTP worker, the Scheduler, or
the actor of the run that just ended), then starts the actor's loop. The
process is started through the ``ProcessMonitor`` (one thread pumping every
pipe); from then on this actor (on the pool's threads, one message at a time) handles the
run's commands (signals
from the API, events from the job) and the monitor's notices (exit,
time-out), so each run's record changes in order.
"""
from __future__ import annotations

import errno
import itertools
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import pykka

from overseer import tokens
from overseer.exceptions import Conflict
from overseer.model import executions as ex
from overseer.model import render
from overseer.model.job import Job
from overseer.process import run_as, spawn
from overseer.process.job_process import ExitStatus, Process
from overseer.process.ready_pool import ReadyPool
from overseer.process.run_as import Credentials

from .messages import OutputTruncated, ProcessExited, Shutdown, TimedOut
from .pool import ActorPool, PooledActor

if TYPE_CHECKING:
    from overseer.actors.context import Context

log = logging.getLogger(__name__)

_SIGNALS = {"stop": signal.SIGSTOP, "continue": signal.SIGCONT,
            "terminate": signal.SIGTERM, "kill": signal.SIGKILL}


# The threads that handle Execution actors' messages (see ``pool``): a run's end, its events and
# signals, and the start of the runs its end lets start. A handler may wait for the Store or for a
# process start, so there are a few of them; there is no thread per running execution.
POOL = ActorPool(8, "execution")


class Execution(PooledActor):
    pool = POOL

    @classmethod
    def begin(cls, ctx: Context, job: Job, record: dict) -> None:
        """Make the run's actor and start its process here, on the calling thread; the actor's
        messages are handled on the execution threads from there. Never raises for the run's own
        faults: a failure to start finishes the run (``fail``, with the cause). While the snapshot
        of the run's commit is still being written (a fresh start), the run keeps its slot and
        starts on an execution thread once the snapshot is there: the admitting thread does not
        wait."""
        commit = job.commit
        if commit and not ctx.catalog.snapshot_ready(commit):
            log.info("%s/%s: waits for the snapshot of %s", job.name, record["id"], commit[:12])
            once, timer = threading.Lock(), []

            def go(waited_out: bool) -> None:
                if once.acquire(blocking=False):
                    if not waited_out:
                        ctx.monitor.cancel(timer[0])
                    cls.pool.run(lambda: cls._begin_now(ctx, job, record, waited_out))

            timer.append(ctx.monitor.call_at(time.monotonic() + ctx.catalog.snapshot_wait,
                                             lambda: go(True)))
            ctx.catalog.when_snapshot_ready(commit, lambda: go(False))
            return
        cls._begin_now(ctx, job, record)

    @classmethod
    def _begin_now(cls, ctx: Context, job: Job, record: dict, waited_out: bool = False) -> None:
        actor = cls(ctx, job, record)
        actor._snapshot_wait = 0.0 if waited_out else None  # waited its time already: no more
        pykka.ActorRegistry.register(actor.actor_ref)
        try:
            actor._launch()
        except Exception as e:
            actor.on_failure(type(e), e, e.__traceback__)
        actor._start_actor_loop()

    def __init__(self, ctx: Context, job: Job, record: dict):
        super().__init__()
        self.ctx = ctx
        self.job = job
        self.name = job.name
        self.ident = record["id"]
        self.record = record
        self.proc: Optional[Process] = None
        self.state = "queued"
        self.token = tokens.token()
        # Its cgroup's name: public (/proc/PID/cgroup), so nothing of the token; the suffix keeps
        # it apart from a cgroup of the same run name that a dead server left.
        self.cgroup_name = f"{self.name}-{self.ident}-{tokens.token()[:8]}"
        self.creds: Optional[Credentials] = None  # execution.run_as: what its processes run as
        self.tmpdir: Optional[str] = None
        self.timed_out = False
        self.terminating = False
        self._timers: list[int] = []
        self._output_bytes = 0
        self._truncated = False
        self._finished = False
        self._snapshot_wait: Optional[float] = None
        self._events = len(record["events"])  # the events the record holds
        self._dropped = 0  # events from clients and the job not kept (execution.max_events)

    # -- lifecycle ---------------------------------------------------------------------------
    def _launch(self) -> None:
        self.ctx.inject("execution.start")
        with self.ctx.launch_lock:
            if self.ctx.stopping:
                # The Supervisor is stopping and no longer tracks new runs: start nothing; the record
                # stays queued and the Supervisor's last recovery finishes it as lost.
                log.info("%s/%s: not started: the server is stopping", self.name, self.ident)
                self._finished = True
                self.stop()
                return
            if (self.name, self.ident) in self.ctx.running:
                # Admitted twice (the queue holds each run once; this guards the record): the
                # first actor runs it.
                log.warning("%s/%s: already running; not started again", self.name, self.ident)
                self._finished = True
                self.ctx.run_finished(self.name, self.ident)  # the slot it was admitted to
                self.stop()
                return
            self.ctx.tokens[self.token] = self.actor_ref
            self.ctx.running[(self.name, self.ident)] = self.actor_ref
            self.ctx.callers.add_cgroup(self.cgroup_name, self.actor_ref)  # born in it, if made
        if self.job.command is None and self.job.script is None:  # neither: completes at once
            self._event("start", None, state="running", started_at=ex.now_iso())
            self._finish(ExitStatus(0, None))
            return
        try:
            snapshot = self.ctx.catalog.snapshot(self.job.commit, self._snapshot_wait)
            argv = self._argv(snapshot)
            self.tmpdir = self.ctx.scratch.take()
            ids = self._take_user() if self.ctx.run_as is not None else None
            env = self._environment(snapshot)
            self.proc = self.ctx.monitor.start(
                argv, cwd=str(snapshot), env=env, name=self.cgroup_name,
                on_output=self._on_output, on_exit=self._on_exit, ids=ids)
            self.ctx.callers.add_session(self.proc.pid, self.actor_ref)
        except OSError as e:
            log.warning("%s/%s: cannot start: %s", self.name, self.ident, e)
            self._event("start", None, state="running", started_at=ex.now_iso())
            self._finish(ExitStatus(None, None), cause=f"could not start: {e.strerror or e}")
            return
        self.state = "running"
        self._event("start", None, state="running", started_at=ex.now_iso(), pid=self.proc.pid,
                    pgid=self.proc.pgid, proc_start=self.proc.start_time, wait=False,
                    cgroup=self.proc.cgroup and str(self.proc.cgroup.path))  # for a restart's recovery
        if self.job.timeout:
            self._timers.append(self.ctx.monitor.call_at(
                time.monotonic() + self.job.timeout, lambda: self._tell(TimedOut())))
        log.info("%s/%s: started pid %s", self.name, self.ident, self.proc.pid)

    def _take_user(self) -> tuple[int, int, tuple[int, ...]]:
        """execution.run_as: the run's credentials (a uid of its own from a range), and its
        TMPDIR made its own (the server's user keeps the right to remove it)."""
        run_as = self.ctx.run_as
        run_as.before_first_job()
        self.creds = creds = run_as.take()
        os.chown(self.tmpdir, creds.uid, creds.gid)
        return creds.uid, creds.gid, creds.groups

    def launched(self) -> bool:
        """Answered once the run's start is done (its process, if any, is named in
        ``ctx.callers`` then): the event socket asks when a caller is found in no run."""
        return self.proc is not None

    def on_failure(self, exception_type, exception_value, traceback) -> None:
        """A bug in this actor must still leave a finished execution and no process."""
        log.error("%s/%s: execution actor failed: %s", self.name, self.ident, exception_value)
        if self.proc and self.proc.status is None:
            self.proc.signal(signal.SIGKILL)
        if not self._finished:
            try:
                self._finish(ExitStatus(None, None), cause=f"internal error: {exception_value}")
            except Exception:
                log.exception("%s/%s: cannot record the failure", self.name, self.ident)
                self._cleanup()

    # -- commands (from the API and the event socket) ----------------------------------------
    def signal(self, name: str, cause: Optional[str], source: str) -> dict:
        """stop / continue / terminate / kill: signal the process tree and record the event."""
        if self._finished or self.proc is None or self.proc.status is not None:
            raise Conflict(f"execution {self.name}/{self.ident} is not running")
        if name == "stop" and self.state != "running":
            raise Conflict(f"execution {self.name}/{self.ident} is not running (it is {self.state})")
        if name == "continue" and self.state != "stopped":
            raise Conflict(f"execution {self.name}/{self.ident} is not stopped (it is {self.state})")
        changes = {}
        if name == "stop":
            self.state = changes["state"] = "stopped"
        elif name == "continue":
            self.state = changes["state"] = "running"
        event = self._event(name, cause, source=source, **changes)
        if name == "terminate" and self.terminating:
            return event  # SIGTERM went already (a time-out, an earlier terminate): SIGKILL follows
        self.proc.signal(_SIGNALS[name])
        if name == "terminate":
            self._terminate()
        elif name == "kill" and self.state == "stopped":
            self.state = "running"
        return event

    def add_event(self, name: str, cause: Optional[str], source: str) -> dict:
        """An event without signal semantics (a job's progress, an API note): the status while
        the run is not finished, a note once it is (``ex.add_event``). Once the record holds
        ``execution.max_events`` events, it is counted and not kept: it costs no write (the count
        is written as it reaches 1, 2, 4, 8, ... and exactly at the end), changes no status and
        goes to no webhook. The system's events and signals are always kept."""
        if self._events >= self.ctx.config.execution.max_events:
            self._dropped += 1
            if self._dropped & (self._dropped - 1) == 0:
                dropped = self._dropped
                self._queue_update(lambda r: _set(r, events_dropped=dropped), False, None)
            if self._dropped == 1:
                log.warning("%s/%s: holds %d events (execution.max_events): more from clients and the job "
                            "are counted, not kept", self.name, self.ident, self._events)
            return ex.make_event(name, cause, source)
        return self._event(name, cause, source=source)

    # -- notices (tell): an exception here kills the actor, and on_failure still finishes the run --
    def on_receive(self, message) -> None:
        self.ctx.inject("execution." + type(message).__name__)
        if isinstance(message, ProcessExited):
            self._finish(message.status)
        elif isinstance(message, TimedOut):
            self._time_out()
        elif isinstance(message, OutputTruncated):
            self._event("output-truncated", f"output beyond {message.limit} bytes was dropped")
        elif isinstance(message, Shutdown):
            self._shutdown()

    def _time_out(self) -> None:
        if self._finished or self.proc is None or self.proc.status is not None:
            return
        self.timed_out = True
        self._event("time-out", f"ran longer than {self.job.timeout:g}s")
        if self.terminating:
            return  # terminated already: one SIGTERM, and SIGKILL after kill_grace from that one
        self.proc.signal(signal.SIGTERM)
        self._terminate()

    def _shutdown(self) -> None:
        if self.proc is not None and self.proc.status is None and not self.terminating:
            log.info("%s/%s: terminating for shutdown", self.name, self.ident)
            self.proc.signal(signal.SIGTERM)
            self._terminate()

    # -- internals ---------------------------------------------------------------------------
    def _terminate(self) -> None:
        """SIGTERM was sent: continue a stopped tree so it can handle it, SIGKILL after the grace."""
        self.terminating = True
        if self.state == "stopped":
            self.proc.signal(signal.SIGCONT)
            self.state = "running"
        proc = self.proc
        self._timers.append(self.ctx.monitor.call_at(
            time.monotonic() + self.ctx.config.execution.kill_grace,
            lambda: proc.status is None and proc.signal(signal.SIGKILL)))

    def _argv(self, snapshot: Path) -> list[str]:
        if self.job.command is not None:
            return [render.SHELL, "-c", self.record["command"]]
        return render.script_argv(self.job, self.record["params"], snapshot)

    def _environment(self, snapshot: Path) -> dict:
        """The job's environment, built as bytes from the server's, read once at start (decoding
        and re-encoding os.environ for every run was a measurable part of a start)."""
        env = dict(self.ctx.base_environ)
        enc = os.fsencode
        env[b"PATH"] = b":".join([enc(str(self.ctx.library_dir)), enc(str(snapshot / "bin")),
                                  env.get(b"PATH", enc(os.defpath))])
        settings = render.var_environment(self.record["params"])
        settings.update({
            "OVERSEER_JOB": self.name,
            "OVERSEER_EXECUTION": str(self.ident),
            "OVERSEER_URL": self.ctx.config.base_url,
            "OVERSEER_SOCKET": str(self.ctx.socket_path),
            "OVERSEER_TOKEN": self.token,
            "TMPDIR": self.tmpdir,
        })
        if self.creds is not None:  # run_as: who it is, and a HOME it may write
            settings.update({"HOME": self.creds.home or self.tmpdir, "USER": self.creds.user,
                             "LOGNAME": self.creds.user})
        settings.update(self.job.env)
        env.update((enc(k), enc(v)) for k, v in settings.items())
        return env

    def _on_output(self, stream: str, data: bytes) -> None:
        """Runs on the monitor thread: append, within the per-execution cap."""
        if self._truncated:
            return
        limit = self.ctx.config.execution.max_output_bytes
        room = limit - self._output_bytes
        if len(data) > room:
            data = data[:room]
            self._truncated = True
            self._tell(OutputTruncated(limit))
        if data:
            self._output_bytes += len(data)
            self.ctx.store.append_output(self.name, self.ident, stream, data)

    def _on_exit(self, status: ExitStatus) -> None:
        """Runs on the monitor thread."""
        self._tell(ProcessExited(status))

    def _tell(self, message) -> None:
        try:
            self.actor_ref.tell(message)
        except pykka.ActorDeadError:
            pass  # it already finished (or failed, and on_failure finished it)

    def _event(self, name: str, cause: Optional[str], source: str = "system",
               durable: bool = False, wait: bool = True, **changes) -> dict:
        """Store an event (and ``changes`` to the record), then tell the webhooks. With ``wait``
        (events a client sent: it reads them back at once) the caller waits for the commit; the
        run's own events (start, end) are queued and announced once committed."""
        event = ex.make_event(name, cause, source)
        self._events += 1
        if wait:
            stored = self.ctx.store.update_execution(
                self.name, self.ident, lambda r: ex.add_event(r, event, **changes), durable=durable)
            self.ctx.notify(self.job, self.ident, event, stored)
        else:
            self._queue_update(lambda r: ex.add_event(r, event, **changes), durable, event)
        return event

    def _queue_update(self, fn: Callable[[dict], Any], durable: bool, event: Optional[dict],
                      final: bool = False) -> None:
        """Queue ``fn`` to the record; once committed, tell ``event`` to the webhooks. ``final``: the
        run's end, which tells the output the store lost (``_tell_lost``) before ``event``."""
        future = self.ctx.store.update_execution_async(self.name, self.ident, fn, durable=durable)
        name, ident, job, ctx = self.name, self.ident, self.job, self.ctx

        def committed(f) -> None:  # on the Store's writer thread: quick, never raises
            error = f.exception()
            if error is not None:
                log.error("%s/%s: cannot store event %s: %s", name, ident,
                          event["name"] if event else "end", error)
                return
            record = f.result()
            if final and "output_lost" in record:
                ctx.store.forget_lost(name, ident)
                lost = [e for e in record["events"] if e["name"] == "output-lost"]
                if lost:
                    log.warning("%s/%s: %s", name, ident, lost[-1]["cause"])
                    ctx.notify(job, ident, lost[-1], record)
            if event is not None:
                ctx.notify(job, ident, event, record)

        future.add_done_callback(committed)

    def _finish(self, status: ExitStatus, cause: Optional[str] = None) -> None:
        if self._finished:
            return
        self._finished = True
        for handle in self._timers:
            self.ctx.monitor.cancel(handle)
        if status.exit_code == 0 and cause is None and not self.timed_out:
            name = "complete"
        elif self.timed_out:
            name = "time-out"
        else:
            name = "fail"
        if cause is None and status.signal:
            cause = f"killed by {status.signal}"
        elif cause is None and status.exit_code:
            cause = f"exit code {status.exit_code}"
        self._cleanup()  # before the final record: whoever sees it finished sees it gone
        changes = {"state": "finished", "ended_at": ex.now_iso(),
                   "exit_code": status.exit_code, "signal": status.signal}
        if self._dropped:
            changes["events_dropped"] = self._dropped
        store, job, ident = self.ctx.store, self.name, self.ident
        if name == "time-out":
            # The time-out event was recorded when it fired; the run ends with it as its status.
            self._queue_update(lambda r: _end_timed_out(_tell_lost(store, job, ident, r), changes), True,
                               None, final=True)
        else:
            end = ex.make_event(name, cause, "system")
            self._events += 1
            self._queue_update(lambda r: ex.add_event(_tell_lost(store, job, ident, r, end["time"]), end,
                                                      **changes), True, end, final=True)
        log.info("%s/%s: %s (exit code %s, signal %s)", self.name, self.ident, name,
                 status.exit_code, status.signal)
        self.ctx.run_finished(self.name, self.ident)
        try:
            self.stop()
        except pykka.ActorDeadError:
            pass  # called from on_failure: pykka is stopping it already

    def _cleanup(self) -> None:
        self.ctx.tokens.pop(self.token, None)
        self.ctx.running.pop((self.name, self.ident), None)
        self.ctx.callers.remove(self.cgroup_name, self.proc.pid if self.proc else None)
        self._remove_tmpdir()
        if self.creds is not None:
            self._give_back_user()

    def _give_back_user(self) -> None:
        """A uid of the range goes back once nothing of the run is left under it: its cgroup
        was ended whole; without one, what left the process group (``setsid``) is swept."""
        creds, self.creds = self.creds, None
        if self.ctx.run_as.dynamic:
            if self.proc is not None and self.proc.cgroup is None:
                run_as.sweep(creds)
            self.ctx.run_as.give_back(creds)

    def _remove_tmpdir(self) -> None:
        if self.tmpdir:
            remove_scratch(self.tmpdir)
            self.tmpdir = None
            self.ctx.scratch.top_up()  # the next start's, made now rather than during it


SCRATCH_READY = 16  # TMPDIRs kept made ahead


def scratch_pool(root: Path) -> ReadyPool[str]:
    """Runs' TMPDIRs, ``root/run-N``, made ahead of need (see ``overseer.process.ready_pool``). The name
    need not say whose: the run's environment tells the job, and the directory goes when the run
    ends. A name that is taken (what the start could not clear of a server before) is passed
    over. A mkdir that fails otherwise raises at the start that needed it: the run could not
    start."""
    prefix, numbers = f"{root}/run-", itertools.count(1)

    def make() -> str:
        while True:
            path = f"{prefix}{next(numbers)}"
            try:
                os.mkdir(path, 0o700)
                return path
            except FileExistsError:
                continue

    def make_many(n: int) -> list[str]:  # a refill: one release of the GIL for all of them
        made_paths: list[str] = []
        while len(made_paths) < n:
            paths = [f"{prefix}{next(numbers)}" for _ in range(n - len(made_paths))]
            made, error = spawn.mkdirs(paths, 0o700)
            made_paths += paths[:made]
            if error == errno.EEXIST:
                continue  # that name is taken: on with the next
            if error:
                log.warning("cannot make %s ahead: %s", paths[made], os.strerror(error))
                break
        return made_paths
    return ReadyPool(make, SCRATCH_READY, "scratch-dirs", remove_scratch, make_many)


def remove_scratch(path: str) -> None:
    try:
        os.rmdir(path)  # the common case: the job left it empty
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


def _tell_lost(store: Any, job: str, ident: int, record: dict, when: Optional[str] = None) -> dict:
    """At the run's end, on the Store's writer thread (after the run's last output append): the
    output the store could not write, as the event ``output-lost`` and ``output_lost``."""
    lost = store.output_lost(job, ident)
    if lost is None:
        return record
    streams = [f"{lost[s]} bytes of {s}" for s in ("stdout", "stderr") if lost[s]]
    event = ex.make_event("output-lost", f"{' and '.join(streams)} not stored: {lost['cause']}", "system")
    if when is not None:
        event["time"] = when  # with the end it precedes
    record["output_lost"] = {"stdout": lost["stdout"], "stderr": lost["stderr"]}
    return ex.add_event(record, event)


def _set(record: dict, **changes: Any) -> dict:
    record.update(changes)
    return record


def _end_timed_out(record: dict, changes: dict) -> dict:
    record.update(changes)
    record["status"] = "time-out"
    return record
