"""The Scheduler actor: schedule fires.

It keeps a heap of every schedule entry's next slot and wakes exactly when the
earliest is due (a timer thread tells it ``Tick``); the arithmetic is the pure
``overseer.schedule``. The runs it creates go to the ``Dispatcher`` (the run
queue), which starts those a slot is free for at once, on this thread.
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

from overseer import executions as ex
from overseer import render
from overseer import schedule as sched
from overseer.catalog import JobSet
from overseer.exceptions import OverseerError
from overseer.jobs import Job
from overseer.vars import validate_params

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


def command_text(job: Job, params: dict) -> Optional[str]:
    """What a run of ``job`` with validated ``params`` runs, as its record says it."""
    if job.script is not None:
        return shlex.join(render.script_argv(job, params, Path(".")))
    return render.render_command(job, params) if job.command is not None else None


def make_execution(job: Job, params: dict, trigger: str, scheduled_for: Optional[str] = None,
                   priority: int = 0) -> dict:
    """A new execution record for ``job`` with validated ``params`` (rendered once, here)."""
    return ex.new_record(params=params, command=command_text(job, params), commit=job.commit,
                         trigger=trigger, scheduled_for=scheduled_for, priority=priority)


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
        self._defaults: dict[str, tuple] = {}  # job name -> (job, params, command) of its scheduled runs
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
        created, runs = [], []
        for name, entry, slot, job, future in pending:
            try:
                record = future.result()
            except OverseerError as e:
                log.error("%s: scheduled run for %s not created: %s", name, slot, e)
                continue
            runs.append((job, record, entry.priority))
            created.append(record)
        self._log_created(created)
        if self._full:
            log.error("%d scheduled runs not created: %d executions are waiting (execution.max_queued)",
                      self._full, self.ctx.dispatcher.queued)
            self._full = 0
        if self._timer:
            self._timer.set(self._heap[0][0] if self._heap else None)
        if pending:  # else nothing is reserved and nothing starts (most ticks)
            if self.paused:
                self.ctx.dispatcher.unreserve(len(pending))
            else:
                self.ctx.dispatcher.submit_many(runs, reserved=len(pending))
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
                command = command_text(job, params)
            except OverseerError as e:
                log.error("%s: scheduled run for %s not created: %s", name, slot, e)
                return None
            defaults = self._defaults[name] = (job, params, command)
        if not self.ctx.dispatcher.reserve(self.ctx.config.execution.max_queued):
            self._full += 1  # the queue is full: as for a trigger, no run (logged once a tick)
            return None
        slot_text = self._slot_texts.get(slot)
        if slot_text is None:
            if len(self._slot_texts) > 1000:
                self._slot_texts.clear()
            slot_text = self._slot_texts[slot] = ex.now_iso(slot)
        record = ex.new_record(params=defaults[1], command=defaults[2], commit=job.commit,
                               trigger="schedule", scheduled_for=slot_text, priority=entry.priority)
        try:
            future = self.ctx.store.create_execution_async(
                name, record, keep=self.ctx.config.retention.executions_per_job, inline=False)
        except OverseerError:
            self.ctx.dispatcher.unreserve()
            raise
        return name, entry, slot, job, future

    def pause(self) -> None:
        """The server is stopping: fire nothing more, start nothing more."""
        self.paused = True
        self._heap = []
        if self._timer:
            self._timer.set(None)

    def status(self) -> dict:
        dispatcher = self.ctx.dispatcher
        return {"queued": dispatcher.queued, "running": dispatcher.running, "entries": len(self._entries)}
