"""The store's thread primitives: ``Promise``, what a queued op resolves to, and ``RWLock``, which
lets reads share the environment and map growth have it alone."""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any, Callable

log = logging.getLogger(__name__)

_PROMISES = threading.Lock()  # guards every Promise's state: held for a few instructions


class Promise:
    """What a queued op resolves to, with ``concurrent.futures.Future``'s ``result``,
    ``exception``, ``done`` and ``add_done_callback``. A Future makes a Condition (a lock and a
    list of waiters) for every op; most ops are done before anyone asks (committed on the caller's
    own thread), so this makes a lock only for a caller that has to wait."""

    __slots__ = ("_state", "_value", "_waiter", "_callbacks")

    def __init__(self) -> None:
        self._state = 0  # 0 pending, 1 result, 2 exception
        self._value: Any = None
        self._waiter: Any = None
        self._callbacks: Any = None

    def done(self) -> bool:
        return self._state != 0

    def set_result(self, value: Any) -> None:
        self._resolve(1, value)

    def set_exception(self, error: BaseException) -> None:
        self._resolve(2, error)

    def _resolve(self, state: int, value: Any) -> None:
        with _PROMISES:
            if self._state:
                raise InvalidStateError("the op is resolved already")
            self._state, self._value = state, value
            waiter, callbacks = self._waiter, self._callbacks
            self._waiter = self._callbacks = None
        if waiter is not None:
            waiter.release()
        for fn in callbacks or ():
            try:
                fn(self)
            except Exception:
                log.exception("a store op's done callback failed")

    def add_done_callback(self, fn: Callable[[Promise], Any]) -> None:
        with _PROMISES:
            if not self._state:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        fn(self)

    def _wait(self, timeout: float | None) -> None:
        if self._state:
            return
        with _PROMISES:
            if self._state:
                return
            if self._waiter is None:
                self._waiter = threading.Lock()
                self._waiter.acquire()
            waiter = self._waiter
        if not waiter.acquire(True, -1 if timeout is None else timeout):
            raise FutureTimeout()
        waiter.release()  # for the next thread waiting on it

    def result(self, timeout: float | None = None) -> Any:
        self._wait(timeout)
        if self._state == 2:
            raise self._value
        return self._value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return self._value if self._state == 2 else None


class RWLock:
    """Many readers or one writer; a waiting writer goes first, so map growth is not starved."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False

    def acquire_shared(self) -> None:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1

    def release_shared(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._writer = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
