"""The Scheduler actor: schedule fires.

It keeps a heap of every schedule entry's next slot and wakes exactly when the
earliest is due (a timer thread tells it ``Tick``); the arithmetic is the pure
``overseer.model.schedule``. The runs it creates go to the ``Dispatcher`` (the run
queue), which starts those a slot is free for at once, on this thread.

A scheduled run's command is rendered once per job definition. A plain template
renders here, in microseconds; any other renders in a render process
(``overseer.model.render_pool``) on a thread of its own, within
``execution.max_render_seconds``, while this thread goes on firing the other
jobs: the slots that came meanwhile wait for it (``Rendered``). A command that
cannot be rendered gives each slot a run that fails at once, with the cause.
"""
from __future__ import annotations

import datetime as _dt
import heapq
import itertools
import logging
import shlex
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pykka

from overseer.exceptions import OverseerError
from overseer.model import executions as ex
from overseer.model import render, render_pool
from overseer.model import schedule as sched
from overseer.model.job import Job
from overseer.model.vars import validate_params
from overseer.repo.catalog import JobSet

from .context import Context, Pingable
from .messages import JobsLoaded

log = logging.getLogger(__name__)

UTC = _dt.timezone.utc
LOG_EACH = 20  # a tick creating more runs than this logs one line for them (each at debug)


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(UTC)


@dataclass(frozen=True)
class Tick:
    """Time to look at the schedule heap."""


@dataclass(frozen=True)
class Rendered:
    """The command of ``job``'s scheduled runs, rendered apart: ``command``, or ``error``."""

    name: str
    job: Job
    params: dict
    command: Optional[str]
    error: Optional[str]


class _Timer(threading.Thread):
    """Tells the Scheduler ``Tick`` when the earliest slot is due."""

    def __init__(self, actor_ref):
        super().__init__(name="scheduler-timer", daemon=True)
        self.actor_ref = actor_ref
        self.cond = threading.Condition()
        self.when: Optional[_dt.datetime] = None
        self.stopped = False

    def set(self, when: Optional[_dt.datetime]) -> None:
        with self.cond:
            self.when = when
            self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify()

    def run(self) -> None:
        with self.cond:
            while not self.stopped:
                if self.when is None:
                    self.cond.wait()
                    continue
                delay = (self.when - utcnow()).total_seconds()
                if delay > 0:
                    self.cond.wait(min(delay, 60.0))
                    continue
                self.when = None
                self.actor_ref.tell(Tick())


def command_text(job: Job, params: dict, render_seconds: float = render_pool.DEFAULT_SECONDS,
                 queue_wait: Optional[float] = None) -> Optional[str]:
    """What a run of ``job`` with validated ``params`` runs, as its record says it (a template
    that is not plain renders in a render process, within ``render_seconds``)."""
    if job.script is not None:
        return shlex.join(render.script_argv(job, params, Path(".")))
    if job.command is None:
        return None
    return render_pool.render_command(job, params, render_seconds, queue_wait)


def make_execution(job: Job, params: dict, trigger: str, scheduled_for: Optional[str] = None,
                   priority: int = 0, render_seconds: float = render_pool.DEFAULT_SECONDS) -> dict:
    """A new execution record for ``job`` with validated ``params`` (rendered once, here)."""
    return ex.new_record(params=params, command=command_text(job, params, render_seconds), commit=job.commit,
                         trigger=trigger, scheduled_for=scheduled_for, priority=priority)


def failed_record(params: dict, commit: Optional[str], scheduled_for: str, priority: int, cause: str) -> dict:
    """A scheduled run whose command could not be rendered: finished at once, ``fail``, with why."""
    record = ex.new_record(params=params, command=None, commit=commit, trigger="schedule",
                           scheduled_for=scheduled_for, priority=priority)
    event = ex.make_event("fail", cause, "system")
    return ex.add_event(record, event, state="finished", ended_at=event["time"])


class Scheduler(Pingable, pykka.ThreadingActor):
    def __init__(self, ctx: Context, clock: Callable[[], _dt.datetime] = utcnow, timer: bool = True):
        super().__init__()
        self.ctx = ctx
        self.clock = clock
        self.jobs: dict[str, Job] = {}
        self.started_at = clock()
        self._heap: list = []  # (next slot, seq, job name, entry key)
        self._entries: dict[tuple[str, str], tuple[sched.ScheduleEntry, _dt.datetime]] = {}
        self._last: dict[tuple[str, str], Optional[_dt.datetime]] = {}
        self._loaded_at: dict[tuple[str, str], _dt.datetime] = {}  # when this process first saw the entry
        self._seq = itertools.count()
        # job name -> (job, params, command, error) of its scheduled runs
        self._defaults: dict[str, tuple] = {}
        # job name -> (job, params, [(entry, slot), ...]): slots waiting for their command's render
        self._rendering: dict[str, tuple] = {}
        self._slot_texts: dict[_dt.datetime, str] = {}
        self._full = 0  # slots of this tick not fired: the queue was full
        self._timer = _Timer(self.actor_ref) if timer else None
        self.paused = False

    def on_start(self) -> None:
        if self._timer:
            self._timer.start()

    def on_stop(self) -> None:
        if self._timer:
            self._timer.stop()

    def on_receive(self, message) -> None:
        """An exception here stops this actor; the Supervisor restarts it with the current job
        set, and the last fire times in the Store keep it from firing a slot twice."""
        self.ctx.inject("scheduler." + type(message).__name__)
        if isinstance(message, Tick):
            self.tick()
        elif isinstance(message, Rendered):
            self._rendered(message)
        elif isinstance(message, JobsLoaded):
            self.load(message.jobset)

    # -- schedules ---------------------------------------------------------------------------
    def load(self, jobset: JobSet) -> None:
        """Take a new job set: keep the anchors of unchanged entries, add new ones."""
        now = self.clock()
        entries = {}
        for job in jobset.jobs.values():
            for entry in job.schedule:
                key = (job.name, entry.key)
                old = self._entries.get(key)
                if key not in self._last:
                    self._last[key] = self.ctx.store.last_fire(job.name, entry.key)
                self._loaded_at.setdefault(key, now)
                anchor = entry.time or (old[1] if old else None) or self._last[key] or now
                entries[key] = (entry, anchor)
        self.jobs = dict(jobset.jobs)
        if any(job.schedule and render_pool.renders_apart(job) for job in self.jobs.values()):
            render_pool.POOL.warm()  # its first render need not wait for a process to start
        self._entries = entries
        self._last = {k: v for k, v in self._last.items() if k in entries}
        self._loaded_at = {k: v for k, v in self._loaded_at.items() if k in entries}
        self._heap = []
        for key, (entry, anchor) in entries.items():
            self._push(key, entry, anchor, now)
        self.tick(now)

    def _push(self, key, entry, anchor, now) -> None:
        last = self._last.get(key)
        if last is None:
            after = anchor - _dt.timedelta(microseconds=1)
        else:
            after = last
        nxt = sched.next_slot(entry, after, anchor)
        if nxt is not None:
            heapq.heappush(self._heap, (nxt, next(self._seq), key))

    def tick(self, now: Optional[_dt.datetime] = None) -> list[dict]:
        """Fire every entry that is due at ``now``; returns the executions created.

        Every slot that came since an entry last fired is fired (``schedule.due_slots``: a late
        tick fires each slot once, late, up to the misfire threshold). Every due entry's last
        fire time and executions are queued to the Store first and waited for together, so a tick
        of thousands of entries is a few group commits, not thousands of round trips. A last fire
        time is queued before its executions: a crash between them skips those runs rather than
        doubling them. The runs a slot is free for start on the execution threads."""
        now = now or self.clock()
        pending = []
        while self._heap and self._heap[0][0] <= now:
            _, _, key = heapq.heappop(self._heap)
            if key not in self._entries:
                continue
            entry, anchor = self._entries[key]
            slots, new_last = sched.due_slots(entry, self._last.get(key), now, anchor, self.started_at,
                                              self._loaded_at.get(key))
            if new_last is not None:
                self._last[key] = new_last
                self.ctx.store.set_last_fire(key[0], entry.key, new_last, wait=False)
            for slot in slots:
                if self._full:  # the queue filled up during this tick: count what is left
                    self._full += 1
                    continue
                fire = self._fire(key[0], entry, slot)
                if fire is not None:
                    pending.append(fire)
            self._push(key, entry, anchor, now)
        created = self._commit(pending)
        if self._timer:
            self._timer.set(self._heap[0][0] if self._heap else None)
        return created

    def _commit(self, pending: list) -> list[dict]:
        """Wait for the records ``_fire`` queued, tell their ``queued`` to the webhooks, and hand
        the runs to the Dispatcher; returns the records."""
        created, runs = [], []
        reserved = 0
        for name, entry, slot, job, future, runs_it in pending:
            reserved += runs_it
            try:
                record = future.result()
            except OverseerError as e:
                log.error("%s: scheduled run for %s not created: %s", name, slot, e)
                continue
            created.append(record)
            for event in record["events"]:  # queued, as for a trigger (and fail, for a failed render)
                self.ctx.notify(job, record["id"], event, record)
            if runs_it:
                runs.append((job, record, entry.priority))
            else:
                log.error("%s/%s: scheduled for %s: fail: %s", name, record["id"], record["scheduled_for"],
                          record["events"][-1]["cause"])
        self._log_created([r for r in created if r["state"] != "finished"])
        if self._full:
            log.error("%d scheduled runs not created: %d executions are waiting (execution.max_queued)",
                      self._full, self.ctx.dispatcher.queued)
            self._full = 0
        if reserved:  # else nothing is reserved and nothing starts (most ticks)
            if self.paused:
                self.ctx.dispatcher.unreserve(reserved)
            else:
                self.ctx.dispatcher.submit_many(runs, reserved=reserved)
        return created

    def _log_created(self, created: list[dict]) -> None:
        if len(created) <= LOG_EACH:
            for record in created:
                log.info("%s/%s: scheduled for %s", record["job"], record["id"], record["scheduled_for"])
            return
        slots = sorted({r["scheduled_for"] for r in created})
        jobs = len({r["job"] for r in created})
        log.info("%d runs of %s scheduled for %s%s", len(created), "1 job" if jobs == 1 else f"{jobs} jobs",
                 slots[0], f" to {slots[-1]}" if len(slots) > 1 else "")
        if log.isEnabledFor(logging.DEBUG):
            for record in created:
                log.debug("%s/%s: scheduled for %s", record["job"], record["id"], record["scheduled_for"])

    def _fire(self, name: str, entry: sched.ScheduleEntry, slot: _dt.datetime):
        job = self.jobs.get(name)
        if job is None or not self.ctx.store.is_active(name):
            return None
        defaults = self._defaults.get(name)
        if defaults is None or defaults[0] is not job:
            # A scheduled run takes the vars' defaults: validated and rendered once per definition.
            try:
                params = validate_params(job.vars, {}, from_strings=False)
            except OverseerError as e:
                log.error("%s: scheduled run for %s not created: %s", name, slot, e)
                return None
            if render_pool.renders_apart(job):
                self._render_apart(name, job, params, entry, slot)
                return None
            try:
                defaults = (job, params, command_text(job, params), None)
            except OverseerError as e:
                defaults = (job, params, None, str(e))
            self._defaults[name] = defaults
        slot_text = self._slot_texts.get(slot)
        if slot_text is None:
            if len(self._slot_texts) > 1000:
                self._slot_texts.clear()
            slot_text = self._slot_texts[slot] = ex.now_iso(slot)
        keep = self.ctx.config.retention.executions_per_job
        if defaults[3] is not None:  # its command cannot be rendered: a run that fails at once
            cause = "the command could not be rendered: " + defaults[3].removeprefix(f"job {name!r}: ")
            record = failed_record(defaults[1], job.commit, slot_text, entry.priority, cause)
            future = self.ctx.store.create_execution_async(name, record, keep=keep, inline=False)
            return name, entry, slot, job, future, False
        if not self.ctx.dispatcher.reserve(self.ctx.config.execution.max_queued):
            self._full += 1  # the queue is full: as for a trigger, no run (logged once a tick)
            return None
        record = ex.new_record(params=defaults[1], command=defaults[2], commit=job.commit,
                               trigger="schedule", scheduled_for=slot_text, priority=entry.priority)
        try:
            future = self.ctx.store.create_execution_async(name, record, keep=keep, inline=False)
        except OverseerError:
            self.ctx.dispatcher.unreserve()
            raise
        return name, entry, slot, job, future, True

    def _render_apart(self, name: str, job: Job, params: dict, entry: sched.ScheduleEntry,
                      slot: _dt.datetime) -> None:
        """Render ``job``'s command on a thread of its own; ``slot`` waits for it (``Rendered``)."""
        waiting = self._rendering.get(name)
        if waiting is None or waiting[0] is not job:
            slots = waiting[2] if waiting else []  # slots of an older definition: fired with this one
            waiting = self._rendering[name] = (job, params, slots)
            seconds, ref = self.ctx.config.execution.max_render_seconds, self.actor_ref

            def render_it() -> None:
                command, error = None, None
                try:
                    # The render itself is bounded; waiting for a free render process need not be.
                    command = command_text(job, params, seconds, queue_wait=600)
                except OverseerError as e:
                    error = str(e)
                except Exception as e:  # noqa: BLE001 - the slots must not wait for ever
                    log.exception("%s: rendering the scheduled command failed", name)
                    error = f"internal error: {e}"
                try:
                    ref.tell(Rendered(name, job, params, command, error))
                except pykka.ActorDeadError:
                    pass  # the Scheduler stopped (it is restarted with the job set: it renders again)

            threading.Thread(target=render_it, name=f"render:{name}", daemon=True).start()
        waiting[2].append((entry, slot))

    def _rendered(self, message: Rendered) -> None:
        """A command rendered apart is there: fire the slots that waited for it."""
        waiting = self._rendering.get(message.name)
        if waiting is None or waiting[0] is not message.job:
            return  # a newer definition is being rendered: its slots wait for that one
        del self._rendering[message.name]
        self._defaults[message.name] = (message.job, message.params, message.command, message.error)
        if self.paused:
            return
        pending = []
        for entry, slot in waiting[2]:
            fire = self._fire(message.name, entry, slot)
            if fire is not None:
                pending.append(fire)
        self._commit(pending)

    def pause(self) -> None:
        """The server is stopping: fire nothing more, start nothing more."""
        self.paused = True
        self._heap = []
        if self._timer:
            self._timer.set(None)

    def status(self) -> dict:
        dispatcher = self.ctx.dispatcher
        return {"queued": dispatcher.queued, "running": dispatcher.running, "entries": len(self._entries)}
