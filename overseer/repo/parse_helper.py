"""Job documents parsed in a second process, so that a large load uses two CPUs.

A fresh start of a repository of 10,000 job files spends most of its time in the YAML loader
(about 150 us a file here, against 50 us for the checks of what the file holds), all of it on
one CPU. :class:`Aside` hands part of the files to ``python -m overseer.repo.parse_helper`` while
the caller parses the rest; the helper gives back each document that is plain data (JSON types:
what nearly every job file holds) and nothing for the others, which the caller then parses
itself. So an error, a YAML timestamp or a set is worded and built exactly as in-process, and a
helper that cannot start, fails or is too slow costs no result: its files are parsed in-process.

The protocol is ``marshal`` both ways (data only: nothing in it runs code when loaded): stdin a
list of ``(is_json, bytes)``; stdout frames, each a 4-byte little-endian length and a marshalled
list holding, for each of the next ``FRAME`` items, ``(document,)`` or ``None`` (a document
may itself be None: an empty file).
The arguments are the path of the caller's ``overseer/repo/documents.py`` (a helper whose
interpreter imports other code than the caller's refuses: exit status 3) and ``FRAME``.
"""
from __future__ import annotations

import logging
import marshal
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Optional, TypeVar

from overseer.repo import documents

log = logging.getLogger(__name__)
T = TypeVar("T")

MIN_FILES = 2000       # below this the helper's start (about 0.1 s) outweighs what it takes over
HELPER_SHARE = 0.5     # of the files: the caller also checks the documents the helper gives back
TIMEOUT = 120.0        # seconds for the helper's whole share before it is given up
MAX_BYTES = 64 << 20   # of files handed over (they are copied once to be sent): the rest stay here
FRAME = 250            # answers per frame of the helper's output


def worth_it(count: int) -> bool:
    """Whether ``count`` files to parse are worth a helper (``OVERSEER_NO_PARSE_HELPER=1``: never)."""
    return (count >= MIN_FILES and (os.cpu_count() or 1) > 1
            and not os.environ.get("OVERSEER_NO_PARSE_HELPER"))


def share(items: list[T], data_of: Callable[[T], Optional[bytes]]) -> tuple[list[T], list[T]]:
    """``(here, aside)``: ``items`` (files to parse) split into those the caller parses and those
    for a helper, when :func:`worth_it`: the last ``HELPER_SHARE`` of them, up to ``MAX_BYTES``
    of their data. ``data_of`` None (too big for a job file) stays here."""
    if not worth_it(len(items)):
        return items, []
    cut = len(items) - int(len(items) * HELPER_SHARE)
    here, aside, budget = items[:cut], [], MAX_BYTES
    for item in items[cut:]:
        data = data_of(item)
        if data is not None and len(data) <= budget:
            aside.append(item)
            budget -= len(data)
        else:
            here.append(item)
    return here, aside


class Aside:
    """``items`` (``(is_json, bytes)``) parsed by a helper process, started at once. Its answers
    come in frames of ``FRAME`` items, in order, as it parses: :meth:`take` hands over those in,
    so the caller checks them between its own files instead of after."""

    def __init__(self, items: list[tuple[bool, bytes]]):
        self.count = len(items)
        self.taken = 0
        self.proc: Optional[subprocess.Popen] = None
        self._frames: queue.SimpleQueue = queue.SimpleQueue()
        self._deadline = time.monotonic() + TIMEOUT
        self._failed = False
        try:
            # The helper checks that it loads the same code as this process (a server started
            # from another tree than the interpreter's own install would not): else it exits.
            self.proc = subprocess.Popen([sys.executable, "-m", "overseer.repo.parse_helper",
                                          documents.__file__, str(FRAME)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
        except OSError as e:
            log.warning("job documents: cannot start the parse helper (%s); parsing in-process", e)
            self._failed = True
            return
        request = marshal.dumps(items)
        threading.Thread(target=self._feed, args=(request,), name="parse-helper-in", daemon=True).start()
        threading.Thread(target=self._read, name="parse-helper-out", daemon=True).start()

    def _feed(self, request: bytes) -> None:
        try:
            self.proc.stdin.write(request)
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass  # the helper ended early: its answers say so

    def _read(self) -> None:
        """The helper's frames into the queue; then None, or the reason it failed."""
        out, got, failure = self.proc.stdout, 0, None
        try:
            while got < self.count:
                head = out.read(4)
                frame = out.read(int.from_bytes(head, "little")) if len(head) == 4 else b""
                answers = marshal.loads(frame)
                if not answers or got + len(answers) > self.count:
                    raise ValueError(f"a frame of {len(answers)} answers after {got} of {self.count}")
                got += len(answers)
                self._frames.put([None if a is None else (a[0], True) for a in answers])
            status = self.proc.wait()
            if status != 0:
                failure = f"exit status {status}"
        except (ValueError, EOFError, TypeError, IndexError, OSError) as e:
            self.proc.kill()
            status = self.proc.wait()
            detail = self.proc.stderr.read().decode(errors="replace").strip().splitlines()[-1:]
            failure = f"{e}; exit status {status}" + (f": {detail[0]}" if detail else "")
        finally:
            out.close()
            self.proc.stderr.close()
        self._frames.put(failure)

    def take(self, wait: bool) -> list[Optional[tuple[Any, bool]]]:
        """The next answers, in order: for each item ``(document, True)``, or None (parse it
        yourself). Without ``wait``, those in now (maybe none); with it, at least one unless all
        are taken. A helper that failed or ran out of time answers None for the rest."""
        out: list = []
        while self.taken + len(out) < self.count:
            if self._failed:
                out += [None] * (self.count - self.taken - len(out))
                break
            try:
                if wait and not out:
                    frame = self._frames.get(timeout=max(0.0, self._deadline - time.monotonic()))
                else:
                    frame = self._frames.get_nowait()
            except queue.Empty:
                if wait and not out:   # out of time
                    self._give_up(f"it took over {TIMEOUT:.0f} s")
                    continue
                break
            if isinstance(frame, list):
                out += frame
            else:
                self._give_up(frame or "it ended early")
        self.taken += len(out)
        return out

    def _give_up(self, why: str) -> None:
        self._failed = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        log.warning("job documents: the parse helper failed (%s); parsing its files in-process", why)


def _answer(is_json: bool, data: bytes) -> Optional[tuple[Any]]:
    try:
        doc, plain = documents.load_document(data, is_json)
        return (doc,) if plain else None
    except Exception:  # noqa: BLE001 - the caller parses it again and words the error
        return None


def main() -> int:
    if len(sys.argv) != 3 or os.path.realpath(sys.argv[1]) != os.path.realpath(documents.__file__):
        print(f"overseer.repo.parse_helper: this is {documents.__file__}, not the caller's "
              f"{sys.argv[1:2]}", file=sys.stderr)
        return 3
    per_frame = max(1, int(sys.argv[2]))
    items = marshal.loads(sys.stdin.buffer.read())
    out = sys.stdout.buffer
    for at in range(0, len(items), per_frame):
        frame = marshal.dumps([_answer(is_json, data) for is_json, data in items[at:at + per_frame]])
        out.write(len(frame).to_bytes(4, "little") + frame)
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
