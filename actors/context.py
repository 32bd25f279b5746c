"""What every actor of one running system shares: config, Store, Catalog, the
process monitor, the live executions, and the way to reach the other actors.

The references to other actors are set by the Supervisor once it has started
them; messages go through ``tell``-style proxy calls whose futures nobody
waits on (DESIGN.md: actors never block on each other). The ``Dispatcher``
(the run queue under a lock) is shared: see ``dispatch``.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pykka

from overseer.config import Config
from overseer.model import executions as ex
from overseer.model.job import Job
from overseer.process.identity import Callers
from overseer.process.run_as import RunAs
from overseer.process.runner import ProcessMonitor
from overseer.repo.catalog import Catalog
from overseer.store import Store

from .messages import EventRecorded

log = logging.getLogger(__name__)


@dataclass
class Context:
    config: Config
    store: Store
    catalog: Catalog
    monitor: ProcessMonitor
    library_dir: Path
    socket_path: Path
    tmp_dir: Path
    base_environ: dict = field(default_factory=lambda: dict(os.environb))  # the jobs' inherited env
    tokens: dict = field(default_factory=dict)  # secret token -> Execution actor ref
    # Running executions by cgroup and session: who a process on the event socket is
    callers: Callers = field(default_factory=lambda: Callers(None))
    run_as: Optional[RunAs] = None  # execution.run_as resolved; None: jobs run as the server's user
    running: dict = field(default_factory=dict)  # (job, id) -> Execution actor ref
    scheduler: Optional[Any] = None  # Scheduler actor ref
    notifier: Optional[Any] = None  # Notifier actor ref
    dispatcher: Optional[Any] = None  # the run queue (actors.dispatch.Dispatcher)
    scratch: Optional[Any] = None  # runs' TMPDIRs made ahead (overseer.process.ready_pool.ReadyPool of str)
    # Set (under launch_lock) when the server begins to stop: no Execution starts a process after it.
    stopping: bool = False
    launch_lock: threading.Lock = field(default_factory=threading.Lock)
    # Test-only fault injection: point name -> exception raised there (see ``inject``).
    faults: dict = field(default_factory=dict)

    def inject(self, point: str) -> None:
        """Raise the exception a test planted at ``point`` (once); nothing when none is planted."""
        if self.faults:
            fault = self.faults.pop(point, None)
            if fault is not None:
                raise fault

    def notify(self, job: Job, ident: int, event: dict, record: dict) -> None:
        """Hand ``event`` to the webhooks; ``record`` is the execution as stored with it."""
        if self.notifier is None:
            return
        name = event["name"]
        if not (_listens(self.config.hooks, name) or _listens(job.hooks, name)):
            return  # no URL for it: not worth a message (most events of most jobs)
        hooks = tuple((name, tuple(urls)) for name, urls in job.hooks.items())
        try:
            self.notifier.tell(EventRecorded(job.name, ident, event["name"], event["cause"], event["time"],
                                             event["source"], hooks, record["state"], ex.outcome(record)))
        except pykka.ActorDeadError:
            log.error("%s/%s: event %s not sent to webhooks: the notifier is down", job.name, ident,
                      event["name"])

    def run_finished(self, job: str, ident: int) -> None:
        """A run of ``job`` gave its slot back: the next that may start starts on this thread."""
        if self.dispatcher is not None:
            self.dispatcher.finished(job)


def _listens(hooks: Any, event: str) -> bool:
    return bool(hooks.get(event) or hooks.get("*"))


class Pingable:
    """Every long-lived actor answers ``ping()``: the Supervisor's liveness check."""

    def ping(self) -> str:
        return "pong"
