"""Rendering commands within a deadline, off the threads that others wait on.

A plain template (text and ``{{ name }}`` only, :func:`overseer.model.templates.is_plain`) renders on the
caller's thread: its work is its text and its values, microseconds. Any other template (loops,
macros, calls, filters, operators) can run as long as it likes, and a Jinja2 render cannot be
interrupted; so it renders in a worker process (overseer/model/render_worker.py) that is killed once
the render passes its deadline (``execution.max_render_seconds``). The caller waits at most that
long, and only the caller waits: the server's other threads go on, and the GIL is not held by the
render. At most :data:`WORKERS` such renders run at once; a render that finds every worker busy
waits for one, up to ``queue_wait`` seconds (by default its own deadline), and is then refused
with ``QueueFull`` (503).

Workers start on first need (``warm`` starts one ahead: the Scheduler does when the jobs it is
given have such templates), in about a third of a second each (their imports, not counted in a
render's deadline); a worker that was killed is replaced at once. The Supervisor ends them all
when the server stops; a worker also ends when the server dies.
"""
from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

from overseer.exceptions import ParamError, QueueFull
from overseer.model import render, templates

if TYPE_CHECKING:
    from overseer.model.job import Job

log = logging.getLogger(__name__)

WORKERS = 2            # renders apart at once (the server's machine has a few cores, and most
                       # templates never come here)
START_SECONDS = 30.0   # a worker's start, on a loaded machine
DEFAULT_SECONDS = 2.0  # execution.max_render_seconds' default

# The worker's command: the interpreter that runs the server, without the current directory on
# its module path (``-c`` puts it first; the server's directory is none of the worker's business).
_WORKER_CODE = "import sys; sys.path.pop(0); from overseer.model.render_worker import main; sys.exit(main())"


class _Gone(Exception):
    """The worker ended (or never started) before it answered."""


class _Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER_CODE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True,
                                     start_new_session=True)
        self.ready = False
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        self._poll = select.poll()
        self._poll.register(self._out, select.POLLIN)

    def wait_ready(self) -> float:
        """Wait for the worker's first frame; returns the seconds it took (0 when it was ready)."""
        if self.ready:
            return 0.0
        began = time.monotonic()
        if self._read(began + START_SECONDS) is None:
            raise _Gone(f"it did not start in {START_SECONDS:g} s")
        self.ready = True
        return time.monotonic() - began

    def ask(self, request: dict, deadline: float) -> Optional[dict]:
        """The worker's answer to ``request``; None when it did not come by ``deadline``."""
        body = json.dumps(request).encode("ascii")
        data = memoryview(len(body).to_bytes(4, "big") + body)
        try:
            while data:
                data = data[os.write(self._in, data):]
        except OSError as e:
            raise _Gone(f"it cannot be written to: {e.strerror}") from None
        return self._read(deadline)

    def _read(self, deadline: float) -> Optional[dict]:
        buffer = b""
        size = None
        while size is None or len(buffer) < size + 4:
            left = deadline - time.monotonic()
            if left <= 0 or not self._poll.poll(max(1, int(left * 1000))):
                if time.monotonic() >= deadline:
                    return None
                continue
            chunk = os.read(self._out, 1 << 20)
            if not chunk:
                raise _Gone(self._how_it_ended())
            buffer += chunk
            if size is None and len(buffer) >= 4:
                size = int.from_bytes(buffer[:4], "big")
        return json.loads(buffer[4:4 + size])

    def _how_it_ended(self) -> str:
        try:
            code = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            return "it closed its output"
        return f"it was killed by signal {-code}" if code < 0 else f"it exited with status {code}"

    def close(self) -> None:
        """Kill the worker and reap it."""
        try:
            self.proc.kill()
        except OSError:
            pass
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            log.error("render worker %s did not end after SIGKILL", self.proc.pid)


class RenderPool:
    """Up to ``size`` worker processes, each rendering one command at a time."""

    def __init__(self, size: int = WORKERS):
        self.size = size
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._busy = 0
        self._cond = threading.Condition()

    def warm(self) -> None:
        """Start a worker ahead of need, if none is there (it starts meanwhile; nothing waits)."""
        with self._cond:
            if not self._idle and not self._busy:
                self._idle.append(self._start())

    def render(self, job: Job, params: Mapping[str, Any], seconds: float,
               queue_wait: Optional[float] = None) -> str:
        """``render.render_command(job, params)`` in a worker, within ``seconds`` (the worker is
        killed past it: ParamError naming the job and the limit). QueueFull when no worker is free
        within ``queue_wait`` seconds (by default ``seconds``)."""
        worker = self._take(job, seconds if queue_wait is None else queue_wait)
        request = {"job": job.name, "command": job.command, "params": dict(params),
                   "vars": [[spec.name, spec.option] for spec in job.vars]}
        keep = False
        try:
            deadline = time.monotonic() + seconds
            deadline += worker.wait_ready()
            reply = worker.ask(request, deadline)
            if reply is None:
                log.warning("job %s: rendering its command took longer than %g s: the render process "
                            "%s was killed", job.name, seconds, worker.proc.pid)
                raise ParamError(f"job {job.name!r}: rendering the command took longer than {seconds:g} s "
                                 "(execution.max_render_seconds), and was stopped")
            keep = True
        except _Gone as gone:
            raise ParamError(f"job {job.name!r}: rendering the command failed: the render process "
                             f"ended ({gone})") from None
        finally:
            self._give(worker, keep)
        if "error" in reply:
            raise ParamError(reply["error"])
        return reply["command"]

    def _start(self) -> _Worker:
        worker = _Worker()
        log.debug("render worker %s started", worker.proc.pid)
        with self._cond:
            self._all.add(worker)
        return worker

    def _take(self, job: Job, wait: float) -> _Worker:
        deadline = time.monotonic() + wait
        with self._cond:
            while not self._idle and self._busy >= self.size:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise QueueFull(f"job {job.name!r}: the command was not rendered: all {self.size} "
                                    f"render processes were busy for {wait:g} s (each renders for up to "
                                    "execution.max_render_seconds)", retry_after=1)
                self._cond.wait(left)
            self._busy += 1
            if self._idle:
                return self._idle.pop()
        try:
            return self._start()
        except OSError as e:
            with self._cond:
                self._busy -= 1
                self._cond.notify()
            raise ParamError(f"job {job.name!r}: the command was not rendered: no render process "
                             f"could start: {e.strerror or e}") from None

    def _give(self, worker: _Worker, keep: bool) -> None:
        replacement = None
        with self._cond:
            current = worker in self._all  # not ended by close() meanwhile
        if not keep:
            worker.close()
            with self._cond:
                self._all.discard(worker)
            if current:
                try:
                    replacement = self._start()  # ready for the next render, which need not wait
                except OSError as e:
                    log.error("cannot start a render process: %s", e)
        with self._cond:
            self._busy -= 1
            if keep and current:
                self._idle.append(worker)
            elif replacement is not None:
                self._idle.append(replacement)
            self._cond.notify()

    def close(self) -> None:
        """End every worker (the server stops): a render in progress fails, naming the job."""
        with self._cond:
            workers, self._idle = list(self._all), []
            self._all.clear()
        for worker in workers:
            worker.close()


POOL = RenderPool()


def render_command(job: Job, params: Mapping[str, Any], seconds: float = DEFAULT_SECONDS,
                   queue_wait: Optional[float] = None) -> str:
    """The command of a run of ``job``: a plain template rendered here, any other in a worker
    within ``seconds`` (see the module's doc). ParamError naming the job when it cannot be."""
    if job.command is None or templates.is_plain(job.command):
        return render.render_command(job, params)
    return POOL.render(job, params, seconds, queue_wait)


def renders_apart(job: Job) -> bool:
    """Whether a run of ``job`` renders in a worker process (and may take up to its deadline)."""
    return job.command is not None and not templates.is_plain(job.command)
