"""Run tokens (overseer/tokens.py): distinct, of the documented form, across batches and threads."""
from __future__ import annotations

import re
import threading

from overseer import tokens


def test_tokens_are_distinct_url_safe_and_24_random_bytes_each():
    made = [tokens.token() for _ in range(3 * 256 + 7)]  # across several batches
    assert len(set(made)) == len(made)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{32}", t) for t in made)


def test_threads_never_get_the_same_token():
    got: list[list[str]] = [[] for _ in range(8)]

    def make(out):
        for _ in range(500):
            out.append(tokens.token())
    threads = [threading.Thread(target=make, args=(out,)) for out in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [t for out in got for t in out]
    assert len(set(every)) == len(every) == 4000
