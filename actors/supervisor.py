"""The Supervisor actor: recovery, ordered start, health checks, ordered stop.

Start: start the Notifier, recover what a previous process left (``queued``/
``running`` executions get the event ``lost`` and are finished; what they left
running is terminated: ``overseer.leftovers``), then start the Scheduler and
RepoSync, pinging each. The ``lost`` events go to the webhooks once the first
sync has loaded the jobs (a job's own ``hooks`` are in its file). Every few
seconds it pings the actors again and restarts one that died. Stop: stop
scheduling, terminate the running executions (SIGKILL after ``kill_grace``),
wait for them to finish, finish what never started as ``lost`` (told to the
webhooks), then stop the actors in reverse order.
"""
from __future__ import annotations

import logging
import threading
import time
import types
from typing import Optional

import pykka

from overseer.model import executions as ex
from overseer.model import render_pool
from overseer.process import leftovers

from .context import Context, Pingable
from .messages import JobsLoaded, Shutdown
from .notifier import Notifier
from .repo_sync import RepoSync
from .scheduler import Scheduler

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0
LOG_EACH = 50  # lost executions named one by one in the log; the rest counted


def recover(ctx: Context) -> list[dict]:
    """Finish every execution a previous process left unfinished; returns them."""
    pending = ctx.store.executions_in_states({"queued", "running", "stopped"})
    leftovers.end(pending, ctx.config.execution.kill_grace, ctx.socket_path,
                  scan=ctx.run_as is None or not ctx.run_as.dynamic)
    futures = []  # queued together: thousands of them are a few group commits, not one each
    for record in pending:
        event = ex.make_event("lost", "the server stopped while it was " + record["state"], "system")
        futures.append(ctx.store.update_execution_async(
            record["job"], record["id"],
            lambda r, event=event: ex.add_event(r, event, state="finished", ended_at=event["time"]),
            durable=True, inline=False))
    for record in pending[:LOG_EACH]:
        log.warning("%s/%s: lost (was %s when the previous server stopped)", record["job"], record["id"],
                    record["state"])
    if len(pending) > LOG_EACH:
        log.warning("... and %d more executions lost", len(pending) - LOG_EACH)
    return [future.result() for future in futures]


def announce_lost(ctx: Context, records: list[dict]) -> None:
    """Tell the webhooks of each ``lost`` event ``recover`` recorded. A job no longer in the
    catalog is told to the server's hooks only."""
    for record in records:
        job = ctx.catalog.job(record["job"]) or types.SimpleNamespace(name=record["job"], hooks={})
        ctx.notify(job, record["id"], record["events"][-1], record)



class Supervisor(Pingable, pykka.ThreadingActor):
    def __init__(self, ctx: Context):
        super().__init__()
        self.ctx = ctx
        self.children: dict[str, Optional[pykka.ActorRef]] = {"notifier": None, "scheduler": None,
                                                               "repo_sync": None}
        self._checker: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._lost: list[dict] = []  # recovered at start, told to the webhooks after the first sync

    def on_start(self) -> None:
        self._start_child("notifier")
        self._lost = recover(self.ctx)
        for name in self.children:
            if self.children[name] is None:
                self._start_child(name)
        self._checker = threading.Thread(target=self._check_loop, name="supervisor-check", daemon=True)
        self._checker.start()

    def _start_child(self, name: str) -> None:
        if name == "notifier":
            ref = Notifier.start(self.ctx.config, self.ctx.inject)
            self.ctx.notifier = ref
        elif name == "scheduler":
            ref = Scheduler.start(self.ctx)
            self.ctx.scheduler = ref
            if self.ctx.catalog.current.commit is not None:
                ref.tell(JobsLoaded(self.ctx.catalog.current))
        else:
            ref = RepoSync.start(self.ctx)
        ref.proxy().ping().get(timeout=10)
        self.children[name] = ref

    def _check_loop(self) -> None:
        while not self._stopping.wait(CHECK_INTERVAL):
            try:
                self.actor_ref.proxy().check()
            except pykka.ActorDeadError:
                return

    def check(self) -> list[str]:
        """Restart every child that died; returns their names."""
        restarted = []
        for name, ref in self.children.items():
            if self._stopping.is_set():
                break
            if ref is None or not ref.is_alive():
                log.error("supervisor: %s died; restarting it", name)
                self._start_child(name)
                restarted.append(name)
        return restarted

    def sync(self):
        """The first sync, done before the server answers (the caller waits on it). The runs
        recovery found lost are told to the webhooks once it is done, with their jobs' hooks."""
        future = self.children["repo_sync"].proxy().sync()
        lost, self._lost = self._lost, []
        if lost:
            def announce() -> None:
                try:
                    future.get(timeout=600)
                except Exception as e:  # noqa: BLE001 - announced all the same, to the server's hooks
                    log.error("supervisor: the first sync failed (%s): lost runs go to the server's hooks", e)
                announce_lost(self.ctx, lost)
            threading.Thread(target=announce, name="announce-lost", daemon=True).start()
        return future

    def child(self, name: str) -> Optional[pykka.ActorRef]:
        return self.children.get(name)

    def on_stop(self) -> None:
        self._stopping.set()
        scheduler = self.children.get("scheduler")
        if scheduler is not None and scheduler.is_alive():
            scheduler.proxy().pause().get(timeout=10)
        if self.ctx.dispatcher is not None:
            self.ctx.dispatcher.pause()
        with self.ctx.launch_lock:
            self.ctx.stopping = True
            running = list(self.ctx.running.values())
        for ref in running:
            try:
                ref.tell(Shutdown())
            except pykka.ActorDeadError:
                pass
        deadline = time.monotonic() + self.ctx.config.execution.kill_grace + 5
        while self.ctx.running and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            self.ctx.store.flush()  # the runs' last events are queued: let recover() see them
        except Exception as e:  # a broken store must not stop the shutdown
            log.error("supervisor: cannot flush the store: %s", e)
        announce_lost(self.ctx, recover(self.ctx))  # what never started is finished too: nothing stays queued
        for name in reversed(list(self.children)):
            ref = self.children[name]
            if ref is not None:
                try:
                    ref.stop(timeout=10)
                except pykka.Timeout:
                    log.error("supervisor: %s did not stop in time", name)
        render_pool.POOL.close()  # a render in progress (a template that never ends) ends with them
