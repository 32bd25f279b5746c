"""The executions of every job, newest first: the Store's merge (real LMDB in tmp_path) and
``GET /executions`` on a real server with real runs."""
from __future__ import annotations

import dataclasses
import random
from urllib.parse import parse_qs, urlsplit

import pytest

from overseer.store import Store
from overseer.store import recent as store_recent
from overseer.store.recent import RecentQuery

from ..http.test_http import JOBS
from ..served import Api, error_of

T = "2026-03-01T12:00:{:02d}.{:06d}Z"


@pytest.fixture
def store(tmp_path):
    opened = Store(tmp_path / "db")
    yield opened
    opened.close()


@pytest.fixture
def served(serve):
    return Api(*serve(JOBS))


def made(store: Store, job: str, second: int, micro: int = 0, **fields) -> dict:
    record = {"state": "finished", "status": "complete", "trigger": "api", "params": {},
              "created_at": T.format(second, micro), **fields}
    return store.create_execution(job, record)


def keys(records: list[dict]) -> list[tuple[str, int]]:
    return [(r["job"], r["id"]) for r in records]


def pages(store: Store, **query) -> list[list[dict]]:
    """Every page of a query, following ``before`` to the end."""
    out, before = [], None
    while True:
        page, before = store.recent_executions(RecentQuery(before=before, **query))
        out.append(page)
        if before is None:
            return out
        assert len(out) < 1000, "paging does not end"


def test_newest_first_across_jobs_and_paged_without_gaps_or_repeats(store):
    rng = random.Random(7)
    jobs = ["a", "a.b", "b", "team.backup", "z-last"]
    expected = []
    for second in range(40):
        job = rng.choice(jobs)
        expected.append(made(store, job, second))
    newest = sorted(expected, key=lambda r: r["created_at"], reverse=True)
    page, before = store.recent_executions(RecentQuery(limit=1000))
    assert keys(page) == keys(newest) and before is None
    for limit in (1, 3, 7, 40):
        got = pages(store, limit=limit)
        assert all(len(p) <= limit for p in got)
        assert keys([r for p in got for r in p]) == keys(newest), limit
    only = store.recent_executions(RecentQuery(jobs=frozenset({"a.b", "b"}), limit=1000))[0]
    assert keys(only) == keys([r for r in newest if r["job"] in ("a.b", "b")])
    assert store.recent_executions(RecentQuery(jobs=frozenset({"nope"})))[0] == []
    assert list(store_recent.job_names(*_txn_db(store))) == sorted(set(r["job"] for r in expected))


def _txn_db(store: Store):
    txn = store._env.begin(buffers=True)
    return txn, store._dbs["executions"]


def test_a_page_never_splits_one_microsecond(store):
    for job in ("x", "y", "z"):
        made(store, job, 5)  # three executions created in the same microsecond
    made(store, "x", 6)
    made(store, "w", 4)
    got = pages(store, limit=2)
    assert [keys(p) for p in got] == [[("x", 2), ("z", 1), ("y", 1), ("x", 1)], [("w", 1)]]


def test_records_of_one_job_stored_against_their_clocks_are_never_lost(store):
    made(store, "x", 5)
    made(store, "y", 5)
    made(store, "y", 4)  # y/2 stored after y/1, its clock read earlier (two triggers at once)
    made(store, "w", 3)
    # y/1 is listed at y/2's time: the two go together, newest id first
    assert [keys(p) for p in pages(store, limit=2)] == [[("x", 1), ("y", 2), ("y", 1)], [("w", 1)]]
    assert [keys(p) for p in pages(store, limit=1)] == [[("x", 1)], [("y", 2), ("y", 1)], [("w", 1)]]


def test_filters_by_status_trigger_and_state(store):
    made(store, "j", 1, status="fail")
    made(store, "j", 2, status="complete", trigger="schedule")
    made(store, "k", 3, status="time-out", trigger="repeat")
    made(store, "k", 4, state="running", status="start")
    failed = store.recent_executions(RecentQuery(statuses=frozenset({"fail", "time-out"})))[0]
    assert keys(failed) == [("k", 1), ("j", 1)]
    assert keys(store.recent_executions(RecentQuery(triggers=frozenset({"schedule"})))[0]) == [("j", 2)]
    assert keys(store.recent_executions(RecentQuery(states=frozenset({"running"})))[0]) == [("k", 2)]
    both = RecentQuery(jobs=frozenset({"j"}), statuses=frozenset({"fail"}), triggers=frozenset({"api"}))
    assert keys(store.recent_executions(both)[0]) == [("j", 1)]


def test_a_page_cut_by_the_budget_goes_on_where_it_stopped(store):
    for second in range(30):
        made(store, "many", second, status="complete" if second % 10 else "fail")
    query = RecentQuery(statuses=frozenset({"fail"}), limit=5)
    with store._reading() as txn:
        seen, before = [], None
        for _ in range(100):
            page, before = store_recent.recent(txn, store._dbs["executions"],
                                               dataclasses.replace(query, before=before), budget=4)
            seen += page
            if before is None:
                break
    assert [r["created_at"] for r in seen] == [T.format(s, 0) for s in (20, 10, 0)]


def test_get_executions(served):
    a = served
    assert a.post("/jobs/hello").status_code == 201
    fail = a.post("/jobs/fails").json()
    a.finished("fails", fail["id"])
    assert a.post("/jobs/fails/1").status_code == 201  # a repeat
    assert a.post("/jobs/team.backup").status_code == 201
    body = a.get("/executions").json()
    assert set(body) == {"executions", "next"} and body["next"] is None
    runs = body["executions"]
    assert [(r["job"], r["id"]) for r in runs] == [("team.backup", 1), ("fails", 2), ("fails", 1),
                                                   ("hello", 1)]
    assert runs[0]["links"]["stdout"] == f"{a.base}/jobs/team.backup/1/stdout"
    first = a.get("/executions?limit=3").json()
    assert len(first["executions"]) == 3
    rest = urlsplit(first["next"])
    assert rest.scheme + "://" + rest.netloc == a.base and parse_qs(rest.query)["limit"] == ["3"]
    second = a.get(f"{rest.path}?{rest.query}").json()
    assert [(r["job"], r["id"]) for r in second["executions"]] == [("hello", 1)] and second["next"] is None
    assert [r["id"] for r in a.get("/executions?job=fails&trigger=repeat").json()["executions"]] == [2]
    assert [r["job"] for r in a.get("/executions?job=hello,team.backup").json()["executions"]] == \
        ["team.backup", "hello"]
    a.finished("fails", 2)
    assert [r["id"] for r in a.get("/executions?status=fail&job=fails").json()["executions"]] == [2, 1]
    unfiltered = a.get("/executions?job=&status=&trigger=&state=&before=").json()["executions"]
    assert [(r["job"], r["id"]) for r in unfiltered] == [(r["job"], r["id"]) for r in runs]
    assert a.get("/executions?before=2000-01-01T00:00:00Z").json() == {"executions": [], "next": None}


BAD = [("job=no%20such", "job"), ("job=a,-b", "job"), ("status=a%20b", "status"),
       ("status=" + "x" * 65, "status"),
       ("trigger=API", "trigger"), ("state=done", "state"), ("limit=0", "limit"), ("limit=1001", "limit"),
       ("before=yesterday", "before"), ("before=2026-13-01", "before")]


def test_get_executions_refuses_bad_filters_by_name(served):
    a = served
    for query, name in BAD:
        r = a.get(f"/executions?{query}")
        assert r.status_code == 400, (query, r.text)
        assert error_of(r).startswith(name), query
    # what the description's patterns allow is taken: a status no run can have, times at the
    # calendar's ends, a leap second
    for query in ("status=stdout", "before=0001-01-01T00:00:00%2B14:00",
                  "before=9999-12-31T23:59:59-12:00", "before=2026-06-30T23:59:60Z", "job=",
                  "state=queued,finished"):
        assert a.get(f"/executions?{query}").status_code == 200, query
