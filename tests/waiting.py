"""Waiting in tests: on a condition with a deadline, never for a fixed time."""
from __future__ import annotations

import time
from typing import Any, Callable


def wait_for(predicate: Callable[[], Any], timeout: float = 20, what: str = "condition", store: Any = None,
             interval: float = 0.02) -> Any:
    """``predicate()`` once it is truthy; AssertionError after ``timeout`` seconds. With a ``store``,
    wake on its commits instead of every ``interval`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        if store is not None and hasattr(store, "wait_commit"):
            store.wait_commit(0.2)
        else:
            time.sleep(interval)


def wait_finished(system: Any, job: str, ident: int, timeout: float = 30) -> dict:
    """The record of ``job``/``ident`` once the System has it finished."""
    return wait_for(lambda: (r := system.store.get_execution(job, ident)) and r["state"] == "finished" and r,
                    timeout, f"{job}/{ident} to finish", store=system.store)
