"""Things a run needs at its start, made ahead of need by a thread of their own.

A run's TMPDIR is a directory on the data dir's disk, and a mkdir on the disk
that holds the Store waits while the Store's fsync commits the file system's
journal (here up to a millisecond, against 50 us otherwise): it sat on the
trigger's path to the process start. A ``ReadyPool``
keeps a few made; ``take`` hands one out at once, ``top_up`` (called when a
run ends) wakes the pool's thread when it runs low, and ``take`` makes one
itself only when a burst has emptied the pool.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Callable, Generic, Optional, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class ReadyPool(Generic[T]):
    """Up to ``size`` results of ``make()`` kept ready. ``make`` raises when it cannot make one:
    on the pool's thread that is logged and the refill ends until the next wake; in ``take`` it
    reaches the caller."""

    def __init__(self, make: Callable[[], T], size: int, name: str,
                 dispose: Optional[Callable[[T], None]] = None,
                 make_many: Optional[Callable[[int], list[T]]] = None):
        """``make_many(n)``, when given, makes up to ``n`` at once for a refill (fewer when it
        could not make them all: it says why itself)."""
        self._make, self._size, self._dispose, self._make_many = make, size, dispose, make_many
        self._items: deque = deque()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._wake.set()

    def take(self) -> T:
        """One ready item, or one made now when none is ready. It wakes the pool's thread only
        when it took the last one (a burst): a refill would compete with the start this item is
        for, so ``top_up`` (at a run's end) asks for it otherwise."""
        try:
            item = self._items.popleft()
        except IndexError:
            item = self._make()
        if not self._items and not self._closed:
            self._wake.set()  # a burst emptied it: refill now
        return item

    def top_up(self) -> None:
        """Wake the pool's thread if fewer than half are ready."""
        if len(self._items) < self._size // 2 and not self._closed:
            self._wake.set()

    def close(self) -> None:
        """Stop making; dispose of what is ready."""
        self._closed = True
        self._wake.set()
        self._thread.join(5)
        while self._items:
            item = self._items.popleft()
            if self._dispose is not None:
                try:
                    self._dispose(item)
                except Exception:
                    log.exception("cannot dispose of %r", item)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while not self._closed and len(self._items) < self._size:
                try:
                    if self._make_many is not None:
                        need = self._size - len(self._items)
                        made = self._make_many(need)
                        self._items.extend(made)
                        if len(made) < need:
                            break  # make_many said why; the next take makes its own
                    else:
                        self._items.append(self._make())
                except Exception as e:  # the next take makes its own and tells why
                    log.warning("%s: cannot make one ahead: %s", self._thread.name, e)
                    break
            if self._closed:
                return
