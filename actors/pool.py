"""Actors that share a small pool of threads instead of owning one each.

Pykka's ``ThreadingActor`` gives every actor a thread of its own. For the
Execution actors, one per run, that is a thread per running job (2,000 for
2,000 jobs), and each of them competes for the GIL when its run ends: with
dozens of runs ending at once, every short system call one of them makes hands
the GIL to another, and the server spends its time switching threads. A
``PooledActor`` keeps the actor model (one message at a time, in the order
sent, ``tell``, ``ask`` and proxies as with any Pykka actor) but its messages
are handled by whichever thread of a shared ``ActorPool`` is free: an idle
actor costs no thread, and at most ``size`` actors run at once.

An actor is scheduled on the pool when a message reaches its empty mailbox and
handles up to ``BATCH`` messages before it yields its thread to the next actor.
A handler may block (wait for the Store, start a process); it then holds one
of the pool's threads, so the pool is sized for that.
"""
from __future__ import annotations

import itertools
import logging
import queue
import sys
import threading
import uuid
from collections import deque
from typing import Any, Callable, ClassVar, Optional

import pykka

log = logging.getLogger(__name__)

BATCH = 16  # messages one actor handles before the next actor gets the thread
# Actor URNs: UUIDs (version 4 in form) counted up from one random start, unique in this process;
# Pykka's own uuid4() per actor reads the kernel's random source, one GIL hand-over per run.
_URN_BASE = uuid.uuid4().int
_URN_SEQ = itertools.count()


class ActorPool:
    """``size`` threads, started on first use, running whichever actor has messages."""

    def __init__(self, size: int, name: str):
        self.size, self.name = size, name
        self._ready: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def submit(self, actor: PooledActor) -> None:
        self._ready.put(actor)
        if len(self._threads) < self.size:
            self._grow()

    def run(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` on one of the pool's threads, after what is waiting (errors are logged)."""
        self.submit(_Task(fn))

    def _grow(self) -> None:
        with self._lock:
            if len(self._threads) < self.size:
                thread = threading.Thread(target=self._work, name=f"{self.name}-{len(self._threads)}",
                                          daemon=True)
                self._threads.append(thread)
                thread.start()

    def _work(self) -> None:
        while True:
            actor = self._ready.get()
            try:
                actor._run_mailbox()
            except BaseException:  # the actor's own loop handles its errors; never lose the thread
                log.exception("%s: unexpected error running %s", self.name, actor)


class _Task:
    """A plain function on the pool, shaped as an actor's turn."""

    __slots__ = ("_run_mailbox",)

    def __init__(self, fn: Callable[[], Any]):
        self._run_mailbox = fn


class _Mailbox:
    """An actor's inbox: ``put`` schedules the actor on its pool when it is not scheduled."""

    __slots__ = ("items", "lock", "scheduled", "actor")

    def __init__(self) -> None:
        self.items: deque = deque()
        self.lock = threading.Lock()
        self.scheduled = True  # until the actor's loop starts: messages wait for it
        self.actor: Optional[PooledActor] = None

    def put(self, envelope: Any) -> None:
        self.items.append(envelope)
        with self.lock:
            if self.scheduled:
                return
            self.scheduled = True
        self.actor.pool.submit(self.actor)

    def get(self) -> Any:  # what Pykka's teardown reads; the pool reads ``items`` itself
        return self.items.popleft()

    def empty(self) -> bool:
        return not self.items


class PooledActor(pykka.Actor):
    """A Pykka actor whose messages run on ``pool`` (set by each subclass)."""

    pool: ClassVar[ActorPool]

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        """What ``pykka.Actor.__init__`` sets (tests/actors/test_pool.py checks it is all), with a URN
        that costs no system call."""
        self.actor_urn = uuid.UUID(int=(_URN_BASE + next(_URN_SEQ)) % (1 << 128), version=4).urn
        self.actor_inbox = self._create_actor_inbox()
        self.actor_stopped = threading.Event()
        self._actor_ref = pykka.ActorRef(self)

    @staticmethod
    def _create_actor_inbox() -> _Mailbox:
        return _Mailbox()

    @staticmethod
    def _create_future() -> pykka.Future:
        return pykka.ThreadingFuture()

    def _start_actor_loop(self) -> None:
        """``on_start`` runs here, on the starting thread, before any message is handled."""
        box = self.actor_inbox
        box.actor = self
        self._actor_loop_setup()
        with box.lock:
            if not box.items and not self.actor_stopped.is_set():
                box.scheduled = False
                return
        self.pool.submit(self)

    def _run_mailbox(self) -> None:
        box, stopped = self.actor_inbox, self.actor_stopped
        for _ in range(BATCH):
            if stopped.is_set() or not box.items:
                break
            self._handle_envelope(box.items.popleft())
        if stopped.is_set():
            self._actor_loop_teardown()  # answers what is left with ActorDeadError; stays scheduled
            return
        with box.lock:
            if not box.items:
                box.scheduled = False
                return
        self.pool.submit(self)  # more to do: after the actors already waiting

    def _handle_envelope(self, envelope: Any) -> None:
        """One message, as Pykka's own actor loop handles it."""
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:
                    self._handle_failure(*sys.exc_info())
        except BaseException:  # SystemExit and the like: this actor stops, the pool goes on
            log.exception("%s: stopped by %r", self, sys.exc_info()[1])
            if not self.actor_stopped.is_set():
                self._stop()  # Pykka's own: unregister, mark stopped, on_stop
