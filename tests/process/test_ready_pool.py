"""Things made ahead of need (overseer/process/ready_pool.py): real calls, a real thread."""
from __future__ import annotations

import itertools

import pytest

from overseer.process.ready_pool import ReadyPool

from ..waiting import wait_for


class Maker:
    def __init__(self):
        self.numbers = itertools.count(1)
        self.fail = False

    def __call__(self) -> int:
        if self.fail:
            raise OSError("cannot make one")
        return next(self.numbers)


def test_made_ahead_refilled_on_top_up_and_disposed_at_close():
    make, disposed = Maker(), []
    pool = ReadyPool(make, 4, "test-ready", disposed.append)
    try:
        wait_for(lambda: len(pool._items) == 4, 10, "the pool filled")
        assert [pool.take() for _ in range(3)] == [1, 2, 3]  # made ahead, in order
        assert len(pool._items) == 1  # take does not refill (it would compete with the start)
        pool.top_up()
        wait_for(lambda: len(pool._items) == 4, 10, "refilled on top_up")
    finally:
        pool.close()
    assert sorted(disposed) == [4, 5, 6, 7]


def test_an_empty_pool_makes_one_at_once_and_a_failure_reaches_the_taker():
    make = Maker()
    pool = ReadyPool(make, 2, "test-ready")
    try:
        wait_for(lambda: len(pool._items) == 2, 10, "the pool filled")
        make.fail = True
        assert [pool.take(), pool.take()] == [1, 2]
        with pytest.raises(OSError, match="cannot make one"):
            pool.take()  # nothing ready, and making one fails: the caller is told
        make.fail = False
        assert pool.take() in (3, 4)  # made now, or by the refill the empty pool asked for
    finally:
        pool.close()


def test_a_refill_makes_many_at_once_and_stops_when_fewer_came():
    calls = []

    def make_many(n):
        calls.append(n)
        return [f"m{len(calls)}-{i}" for i in range(n if len(calls) == 1 else n - 1)]
    pool = ReadyPool(Maker(), 4, "test-ready", make_many=make_many)
    try:
        wait_for(lambda: len(pool._items) == 4, 10, "the pool filled")
        assert calls == [4]  # one call for the whole refill
        for _ in range(3):
            pool.take()
        pool.top_up()
        wait_for(lambda: len(calls) == 2, 10, "refilled")
        wait_for(lambda: len(pool._items) == 3, 10, "the two made")
        assert calls == [4, 3]  # it made fewer than asked: no second try until the next wake
    finally:
        pool.close()
