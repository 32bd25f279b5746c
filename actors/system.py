"""The whole running system behind one facade: what the HTTP handlers, the CLI and
the tests call.

``System.start()`` opens the Store, starts the process monitor, the event
socket and the Supervisor (which recovers and starts the other actors), and
does the first repository sync before returning. Commands (trigger, repeat,
events, activation, sync) are single calls here; reads of executions and
output go straight to the Store.
"""
from __future__ import annotations

import logging
import os
import resource
import stat
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import pykka

from overseer.config import Config
from overseer.data_lock import DataDirLock
from overseer.exceptions import Conflict, IdentityError, NotFound, ParamError, QueueFull, TokenError
from overseer.model import executions as ex
from overseer.model import schedule as sched
from overseer.model.job import JOB_NAME_RE, Job
from overseer.model.vars import validate_params
from overseer.process.identity import Callers, Peer, RefusalLog
from overseer.process.run_as import RunAs, check_reachable, check_server
from overseer.process.runner import ProcessMonitor
from overseer.repo.catalog import Catalog
from overseer.repo.snapshot_files import remove_tree
from overseer.store import Store

from .context import Context
from .dispatch import Dispatcher
from .event_socket import EventSocket
from .execution import Execution, scratch_pool
from .scheduler import make_execution, utcnow
from .supervisor import Supervisor

log = logging.getLogger(__name__)

LIBRARY_DIR = Path(__file__).resolve().parent.parent / "library"
if not LIBRARY_DIR.is_dir():  # a source checkout: actors/ sits beside overseer/
    LIBRARY_DIR = Path(__file__).resolve().parent.parent / "overseer" / "library"

ASK_TIMEOUT = 30
# What only the server reads: with execution.run_as, its owner's alone
# (overseer.process.run_as.seal_data_dir).
# (The parse cache holds the job files of the current commit, as its snapshot does.)
PRIVATE = ("store", "repo.git")


def library_dir(data_path: Path) -> Path:
    """The library dir, with its tools executable (copied into the data dir if the
    installed copy lost its exec bits and cannot be changed)."""
    tools = [p for p in LIBRARY_DIR.iterdir() if p.is_file() and not p.name.startswith((".", "_"))]
    if all(os.access(p, os.X_OK) for p in tools):
        return LIBRARY_DIR
    try:
        for p in tools:
            p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return LIBRARY_DIR
    except OSError:
        copy = data_path / "library"
        copy.mkdir(parents=True, exist_ok=True)
        for p in tools:
            (copy / p.name).write_bytes(p.read_bytes())
            (copy / p.name).chmod(0o755)
        return copy


def _raise_fd_limit() -> None:
    """Three descriptors per running execution (two pipes and a pidfd): take the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-file limit from %d: %s", soft, e)


def _clear_dir(path: Path) -> None:
    remove_tree(path)  # read-only directories a job left in it too
    path.mkdir(exist_ok=True)


def serves(config: Config) -> str:
    """``HOST:PORT`` of the configured API: what the data dir's lock says its holder serves."""
    return f"{config.server.host}:{config.server.port}"


class System:
    def __init__(self, config: Config, lock: Optional[DataDirLock] = None, subreaper: bool = False):
        """``lock``: the data dir's lock when the caller took it already (the CLI does, to check
        the port between the lock and the recovery); else :meth:`start` takes it. ``subreaper``:
        without cgroups, make this process the child subreaper of its jobs, so that what leaves a
        run's process group dies with the run (``overseer.orphans``). Only for a process that owns
        its main thread, as ``overseer serve`` does: every child of that thread that the runner
        does not watch is reaped."""
        self.config = config
        self.lock = lock
        self.subreaper = subreaper
        data = config.data_path
        self.store: Optional[Store] = None
        self.catalog = Catalog(data / "snapshots")
        self.ctx: Optional[Context] = None
        self.supervisor: Optional[pykka.ActorRef] = None
        self.event_socket: Optional[EventSocket] = None
        self._refusals = RefusalLog()
        self._stopped = threading.Event()

    # -- life --------------------------------------------------------------------------------
    def start(self) -> System:
        """Lock the data dir first (DataDirError naming the holder when another server has it),
        then open, recover and start everything."""
        data = self.config.data_path
        run_as = None
        if self.config.execution.run_as is not None:  # before anything is made: a ConfigError
            check_server()
            run_as = RunAs.resolve(self.config.execution.run_as)
            check_reachable({"the data dir": data, "the library dir": LIBRARY_DIR}, run_as.sample())
        if self.lock is None:
            self.lock = DataDirLock.acquire(data, serves(self.config))
        _raise_fd_limit()
        try:
            data.mkdir(parents=True, exist_ok=True)
            _clear_dir(data / "tmp")  # the TMPDIRs of runs a stopped or killed server left
            self.store = Store(data / "store")
            library = library_dir(data)  # the installed one, or a copy in the data dir
            if run_as is not None:
                run_as.seal(data, [data / name for name in PRIVATE])
                os.chmod(data / "tmp", 0o711)
        except BaseException:
            if self.store is not None:
                self.store.close()
                self.store = None
            self.lock.release()  # nothing runs yet: a failed start leaves the data dir free
            raise
        # A uid of its own per run: what it leaves is swept by uid (run_as), no subreaper needed.
        monitor = ProcessMonitor(subreaper=self.subreaper and not (run_as is not None and run_as.dynamic))
        self.ctx = Context(config=self.config, store=self.store, catalog=self.catalog, monitor=monitor,
                           library_dir=library, socket_path=data / "event.sock",
                           tmp_dir=data / "tmp", run_as=run_as)
        ctx = self.ctx
        root = monitor.cgroup_root
        ctx.callers = Callers(root.proc_path if root else None)
        ctx.scratch = scratch_pool(ctx.tmp_dir)
        ctx.dispatcher = Dispatcher(self.config.execution.max_concurrent, self.catalog,
                                    lambda job, record: Execution.begin(ctx, job, record),
                                    defer=Execution.pool.run)
        # Jobs running as another user connect too; who calls is what the kernel says (_job_event).
        self.event_socket = EventSocket(self.ctx.socket_path, self._job_event,
                                        mode=0o600 if run_as is None else 0o666,
                                        identify=ctx.callers.identify)
        self.event_socket.start()
        self.supervisor = Supervisor.start(self.ctx)  # recovery ends what a previous server left
        self.supervisor.proxy().ping().get(timeout=ASK_TIMEOUT)
        if run_as is not None and run_as.dynamic:
            run_as.sweep_leftovers()
        self.supervisor.proxy().sync().get(timeout=ASK_TIMEOUT * 10).get(timeout=ASK_TIMEOUT * 10)
        return self

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.supervisor is not None:
            try:
                self.supervisor.stop(timeout=self.config.execution.kill_grace + 30)
            except pykka.Timeout:
                log.error("the supervisor did not stop in time")
        pykka.ActorRegistry.stop_all(timeout=10)
        if self.event_socket:
            self.event_socket.stop()
        if self.ctx:
            if self.ctx.scratch:
                self.ctx.scratch.close()
            self.ctx.monitor.stop()
            if self.ctx.monitor.cgroup_root:
                self.ctx.monitor.cgroup_root.remove()
        if self.store:
            self.store.close()
        if self.lock is not None:
            self.lock.release()

    # -- jobs --------------------------------------------------------------------------------
    def job(self, name: str) -> Job:
        job = self.catalog.job(name)
        if job is None:
            raise NotFound(f"no job named {name!r}")
        return job

    def jobs(self) -> list[Job]:
        return sorted(self.catalog.current.jobs.values(), key=lambda j: j.name)

    def stale(self, name: str) -> Optional[dict]:
        """``{"error", "commit"}`` when job ``name`` runs the definition of an older commit because
        its file is invalid at the current one (the error), else None."""
        found = self.catalog.current.stale.get(name)
        return None if found is None else dict(found)

    def is_active(self, name: str) -> bool:
        return self.store.is_active(name)

    def set_active(self, name: str, active: bool) -> dict:
        self.job(name)
        self.store.set_active(name, active)
        log.info("job %s: %s", name, "activated" if active else "deactivated")
        return {"name": name, "active": active}

    def next_runs(self, job: Job, count: int = 5) -> list[str]:
        """The next fire times of the job's schedule (for display)."""
        if not self.store.is_active(job.name):
            return []
        now = utcnow()
        times = []
        for entry in job.schedule:
            last = self.store.last_fire(job.name, entry.key)
            anchor = sched.anchor_for(entry, now, last)
            times += sched.next_slots(entry, max(now, last) if last else now, anchor, count)
        return [ex.now_iso(t) for t in sorted(times)[:count]]

    def repo_info(self) -> dict:
        current = self.catalog.current
        info = {"url": current.url, "branch": current.branch, "commit": current.commit,
                "synced_at": current.synced_at,
                "errors": [{"file": f, "error": m} for f, m in current.errors]}
        if current.sync_error:
            info["sync_error"] = current.sync_error
        return info

    def request_sync(self) -> None:
        ref = self.supervisor.proxy().child("repo_sync").get(timeout=ASK_TIMEOUT)
        ref.proxy().sync()

    def sync(self, timeout: float = 120) -> Any:
        """Sync now and wait for it (tests, the first start)."""
        ref = self.supervisor.proxy().child("repo_sync").get(timeout=ASK_TIMEOUT)
        return ref.proxy().sync().get(timeout=timeout)

    # -- executions --------------------------------------------------------------------------
    def execution(self, name: str, ident: int) -> dict:
        if not JOB_NAME_RE.match(name):
            raise NotFound(f"no job named {name!r}")
        record = self.store.get_execution(name, ident)
        if record is None:
            raise NotFound(f"job {name!r} has no execution {ident}")
        return record

    def executions(self, name: str, limit: int = 20, before: Optional[int] = None) -> list[dict]:
        return self.store.list_executions(name, limit=limit, before=before)

    def trigger(self, name: str, values: Mapping[str, Any], from_strings: bool = False,
                trigger: str = "api") -> dict:
        """Validate, store (durably) and queue a run; returns the stored record."""
        job = self.job(name)
        if not self.store.is_active(name):
            raise Conflict(f"job {name!r} is inactive (PUT /jobs/{name} activates it)")
        params = validate_params(job.vars, values, from_strings=from_strings)
        return self._create(job, params, trigger)

    def repeat(self, name: str, ident: int) -> dict:
        job = self.job(name)
        record = self.execution(name, ident)
        if not self.store.is_active(name):
            raise Conflict(f"job {name!r} is inactive (PUT /jobs/{name} activates it)")
        try:
            params = validate_params(job.vars, record["params"], from_strings=False)
        except ParamError as e:
            raise Conflict(f"cannot repeat {name}/{ident} with the job's current vars: {e}") from None
        return self._create(job, params, "repeat")

    def _create(self, job: Job, params: dict, trigger: str) -> dict:
        """Store the run (durably), then admit it: with a free slot its process starts on this
        thread before the caller answers."""
        dispatcher = self.ctx.dispatcher
        if not dispatcher.reserve(self.config.execution.max_queued):
            raise QueueFull(f"{dispatcher.queued} executions are waiting (execution.max_queued)")
        try:
            made = make_execution(job, params, trigger,
                                  render_seconds=self.config.execution.max_render_seconds)
            record = self.store.create_execution(job.name, made, sync_later=True,
                                                 keep=self.config.retention.executions_per_job)
        except BaseException:
            dispatcher.unreserve()
            raise
        try:
            self.ctx.notify(job, record["id"], record["events"][0], record)
            dispatcher.submit(job, dict(record), 0, reserved=True)
        finally:
            self.store.sync_soon()  # the record's fsync, after its process started
        return record

    def create_event(self, name: str, ident: int, event: Any, cause: Any, source: str = "api") -> dict:
        """An event from a client: signals for stop/continue/terminate/kill, else a status (a note
        once the run is finished). System event names are refused (ParamError)."""
        self.job(name)
        record = self.store.get_summary(name, ident) if JOB_NAME_RE.match(name) else None
        if record is None:  # its state is all an event needs of it: its events are not read
            raise NotFound(f"job {name!r} has no execution {ident}")
        event = ex.check_new_event(event)
        cause = ex.check_cause(cause)
        return self._event(name, ident, record, event, cause, source)

    def _event(self, name: str, ident: int, record: dict, event: str, cause: Optional[str],
               source: str) -> dict:
        ref = self.ctx.running.get((name, ident))
        if event in ex.SIGNAL_EVENTS:
            if ref is None:
                raise Conflict(f"execution {name}/{ident} is not running (it is {record['state']})")
            return self._ask(ref, "signal", event, cause, source)
        if ref is not None:
            try:
                return ref.proxy().add_event(event, cause, source).get(timeout=ASK_TIMEOUT)
            except pykka.ActorDeadError:
                pass  # it ended meanwhile: the event is a note on the finished record
        made = ex.make_event(event, cause, source)
        limit = self.config.execution.max_events
        stored = self.store.update_execution(name, ident, lambda r: ex.add_kept_event(r, made, limit))
        job = self.catalog.job(name)
        if job is not None and stored["events"][-1] == made:  # kept (not past execution.max_events)
            self.ctx.notify(job, ident, made, stored)
        return made

    def _ask(self, ref: pykka.ActorRef, method: str, *args) -> dict:
        try:
            return getattr(ref.proxy(), method)(*args).get(timeout=ASK_TIMEOUT)
        except pykka.ActorDeadError:
            raise Conflict("the execution ended meanwhile") from None

    def _job_event(self, token: str, event: Any, cause: Any, peer: Peer) -> None:
        """An event from a job's `event` tool, through the socket: the token's execution must
        be the one the calling process belongs to."""
        ref = self.ctx.tokens.get(token)
        if ref is None:
            raise TokenError("unknown or expired token")
        self._check_caller(ref, peer)
        event = ex.check_new_event(event)
        cause = ex.check_cause(cause)
        method = "signal" if event in ex.SIGNAL_EVENTS else "add_event"
        self._ask(ref, method, event, cause, "job")

    def _check_caller(self, ref: pykka.ActorRef, peer: Peer) -> None:
        """IdentityError unless ``peer`` is a process of the execution ``ref``. A run names its
        session once its process has started (its cgroup before): a caller found in none waits
        for the token's run to have started, and is looked up again."""
        callers = self.ctx.callers
        own = callers.of(peer)
        if own is None:
            self._ask(ref, "launched")
            own = callers.of(peer)
        if own is None:
            error = (f"the calling process (pid {peer.pid}) belongs to no running execution; "
                     "the event tool works from inside a job only")
        elif own is not ref:
            error = ("the token is another execution's than the calling process's; a job can "
                     "create events on its own execution only")
        else:
            return
        self._refusals.refused(peer, error)  # a running execution's token in the wrong hands
        raise IdentityError(error)
