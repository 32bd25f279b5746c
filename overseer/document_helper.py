"""Job documents parsed in a second process, so that a large load uses two CPUs.

A fresh start of a repository of 10,000 job files spends most of its time in the YAML loader
(about 150 us a file here, against 50 us for the checks of what the file holds), all of it on
one CPU. :class:`Aside` hands part of the files to ``python -m overseer.document_helper`` while
the caller parses the rest; the helper gives back each document that is plain data (JSON types:
what nearly every job file holds) and nothing for the others, which the caller then parses
itself. So an error, a YAML timestamp or a set is worded and built exactly as in-process, and a
helper that cannot start, fails or is too slow costs no result: its files are parsed in-process.

The protocol is ``marshal`` both ways (data only: nothing in it runs code when loaded): stdin a
list of ``(is_json, bytes)``, stdout a list holding, for each, ``marshal.dumps(document)`` or
``None``. The one argument is the path of the caller's ``overseer/job_documents.py``: a helper
whose interpreter imports other code than the caller's refuses (exit status 3).
"""
from __future__ import annotations

import logging
import marshal
import os
import subprocess
import sys
import threading
from typing import Any, Optional

log = logging.getLogger(__name__)

MIN_FILES = 2000       # below this the helper's start (about 0.1 s) outweighs what it takes over
HELPER_SHARE = 0.5     # of the files: the caller also checks the documents the helper gives back
TIMEOUT = 120.0        # seconds for the helper's whole share before it is given up
MAX_BYTES = 64 << 20   # of files handed over (they are copied once to be sent): the rest stay here


def worth_it(count: int) -> bool:
    """Whether ``count`` files to parse are worth a helper (``OVERSEER_NO_PARSE_HELPER=1``: never)."""
    return (count >= MIN_FILES and (os.cpu_count() or 1) > 1
            and not os.environ.get("OVERSEER_NO_PARSE_HELPER"))


class Aside:
    """``items`` (``(is_json, bytes)``) parsed by a helper process, started at once."""

    def __init__(self, items: list[tuple[bool, bytes]]):
        self.count = len(items)
        self.proc: Optional[subprocess.Popen] = None
        from overseer import job_documents

        try:
            # The helper checks that it loads the same code as this process (a server started
            # from another tree than the interpreter's own install would not): else it exits.
            self.proc = subprocess.Popen([sys.executable, "-m", "overseer.document_helper",
                                          job_documents.__file__],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
        except OSError as e:
            log.warning("job documents: cannot start the parse helper (%s); parsing in-process", e)
            return
        request = marshal.dumps(items)
        self._feeder = threading.Thread(target=self._feed, args=(request,), name="parse-helper", daemon=True)
        self._feeder.start()

    def _feed(self, request: bytes) -> None:
        try:
            self.proc.stdin.write(request)
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass  # the helper ended early: results() says so

    def results(self) -> list[Optional[tuple[Any, bool]]]:
        """For each item, ``(document, True)`` from the helper, or None: parse it yourself."""
        none: list[Optional[tuple[Any, bool]]] = [None] * self.count
        if self.proc is None:
            return none
        timer = threading.Timer(TIMEOUT, self.proc.kill)
        timer.daemon = True
        timer.start()
        try:
            out = self.proc.stdout.read()
            err = self.proc.stderr.read()
            status = self.proc.wait()
        finally:
            timer.cancel()
            self.proc.stdout.close()
            self.proc.stderr.close()
        self._feeder.join()
        try:
            if status != 0:
                raise ValueError(f"exit status {status}")
            docs = marshal.loads(out)
            if len(docs) != self.count:
                raise ValueError(f"{len(docs)} answers for {self.count} files")
            return [None if d is None else (marshal.loads(d), True) for d in docs]
        except (ValueError, EOFError, TypeError) as e:
            detail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
            log.warning("job documents: the parse helper failed (%s%s); parsing its files in-process",
                        e, f": {detail[0]}" if detail[0] else "")
            return none


def _answer(is_json: bool, data: bytes) -> Optional[bytes]:
    from overseer.job_documents import load_document

    try:
        doc, plain = load_document(data, is_json)
        return marshal.dumps(doc) if plain else None
    except Exception:  # noqa: BLE001 - the caller parses it again and words the error
        return None


def main() -> int:
    from overseer import job_documents

    if len(sys.argv) != 2 or os.path.realpath(sys.argv[1]) != os.path.realpath(job_documents.__file__):
        print(f"overseer.document_helper: this is {job_documents.__file__}, not the caller's "
              f"{sys.argv[1:]}", file=sys.stderr)
        return 3
    items = marshal.loads(sys.stdin.buffer.read())
    sys.stdout.buffer.write(marshal.dumps([_answer(is_json, data) for is_json, data in items]))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
