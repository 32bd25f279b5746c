"""Pooled actors (actors/pool.py): the actor model on a few shared threads."""
from __future__ import annotations

import threading

import pykka
import pytest
from overseer.actors.pool import ActorPool, PooledActor

from ..waiting import wait_for


class Recorder(PooledActor):
    pool = ActorPool(3, "test-pool")

    def __init__(self, log: list, gate: threading.Event | None = None):
        super().__init__()
        self.log, self.gate = log, gate
        self.busy = 0
        self.threads: set[str] = set()
        self.failures: list[str] = []

    def on_receive(self, message):
        self.busy += 1
        assert self.busy == 1, "two messages of one actor handled at once"
        self.threads.add(threading.current_thread().name)
        if message == "boom":
            self.busy -= 1
            raise RuntimeError("boom")
        if message == "wait" and self.gate is not None:
            self.gate.wait(10)
        self.log.append(message)
        self.busy -= 1
        return message

    def on_failure(self, exception_type, exception_value, traceback):
        self.failures.append(str(exception_value))

    def seen(self) -> list:
        return list(self.log)


@pytest.fixture(autouse=True)
def _stop_recorders():
    yield
    for ref in pykka.ActorRegistry.get_by_class(Recorder):
        ref.stop(block=False)


def test_messages_run_one_at_a_time_in_the_order_sent():
    log: list = []
    ref = Recorder.start(log)
    senders = []
    for n in range(4):
        def send(n=n):
            for i in range(200):
                ref.tell((n, i))
        senders.append(threading.Thread(target=send))
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    assert ref.ask("last", timeout=10) == "last"
    for n in range(4):
        assert [i for m, i in log[:-1] if m == n] == list(range(200))
    ref.stop()


def test_proxies_and_asks_answer_and_an_idle_actor_holds_no_thread():
    before = threading.active_count()
    refs = [Recorder.start([]) for _ in range(50)]
    for i, ref in enumerate(refs):
        ref.tell(i)
    # a proxy call comes after the tell of the same sender: each actor has seen its own message
    assert [ref.proxy().seen().get(timeout=10) for ref in refs] == [[i] for i in range(50)]
    assert threading.active_count() - before <= 3  # 50 actors, no more threads than the pool's
    for ref in refs:
        ref.stop()


def test_a_failing_tell_stops_the_actor_and_calls_on_failure():
    ref = Recorder.start([])
    failures = ref.proxy().failures.get(timeout=10)  # the actor's own list (proxies do not copy)
    ref.tell("boom")
    wait_for(lambda: not ref.is_alive(), 10, "the actor stopped")
    assert failures == ["boom"]
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("again")


def test_a_failing_ask_reaches_the_caller_and_the_actor_lives_on():
    ref = Recorder.start([])
    with pytest.raises(RuntimeError, match="boom"):
        ref.ask("boom", timeout=10)
    assert ref.ask("fine", timeout=10) == "fine"
    ref.stop()


def test_a_blocked_actor_does_not_hold_up_the_others():
    gate = threading.Event()
    blocked = Recorder.start([], gate)
    blocked.tell("wait")
    free_log: list = []
    free = Recorder.start(free_log)
    assert free.ask("through", timeout=10) == "through"
    gate.set()
    assert blocked.ask("after", timeout=10) == "after"
    blocked.stop()
    free.stop()


def test_stop_answers_what_was_queued_behind_it():
    gate = threading.Event()
    ref = Recorder.start([], gate)
    ref.tell("wait")
    stopped = ref.stop(block=False)
    later = ref.ask("too late", block=False)
    gate.set()
    stopped.get(timeout=10)
    with pytest.raises(pykka.ActorDeadError):
        later.get(timeout=10)


def test_a_pooled_actor_has_every_field_pykka_gives_an_actor_and_a_unique_urn():
    """PooledActor sets the fields of pykka.Actor.__init__ itself (a URN without a system call):
    a Pykka upgrade that adds one shows here."""
    plain = pykka.ThreadingActor()
    mine = [Recorder([]) for _ in range(3)]
    assert set(vars(plain)) <= set(vars(mine[0]))
    urns = [a.actor_urn for a in mine]
    assert len(set(urns)) == 3 and all(u.startswith("urn:uuid:") for u in urns)
    assert isinstance(mine[0].actor_ref, pykka.ActorRef) and mine[0].actor_ref.actor_urn == urns[0]
