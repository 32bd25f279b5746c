"""A render worker: one process that renders commands for the server (overseer/model/render_pool.py).

It reads requests from stdin and writes answers to stdout, each one frame: a 4-byte big-endian
length, then that many bytes of JSON. Its first frame is ``{"ready": true}``, once its imports
are done. A request is ``{"job", "command", "vars": [[name, option], ...], "params"}``; the answer
``{"command": TEXT}`` or ``{"error": MESSAGE}``. It renders with :func:`overseer.model.render.render_command`,
so what it gives is what the server would render itself; the server kills it at the render's
deadline. Its address space is bounded (a template that builds a huge value gets MemoryError,
answered as an error, rather than taking the machine's memory) and it runs at a lower priority
than the server. It exits at the end of its input (the server closed the pipe), and within a
second of the server's death, even in the middle of a render.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
import types
from typing import Any, BinaryIO, Optional

from overseer.exceptions import ParamError
from overseer.model import render

MEMORY_LIMIT = 512 << 20   # bytes of address space
NICENESS = 10


def _read_exact(stream: BinaryIO, size: int) -> Optional[bytes]:
    data = b""
    while len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            return None
        data += more
    return data


def write_frame(stream: BinaryIO, message: Any) -> None:
    body = json.dumps(message).encode("ascii")
    stream.write(len(body).to_bytes(4, "big") + body)
    stream.flush()


def answer(request: dict) -> dict:
    """The answer to one request."""
    job = types.SimpleNamespace(
        name=request["job"], command=request["command"], script=None,
        vars=tuple(types.SimpleNamespace(name=name, option=option) for name, option in request["vars"]))
    try:
        return {"command": render.render_command(job, request["params"])}  # type: ignore[arg-type]
    except ParamError as exc:
        return {"error": str(exc)}
    except MemoryError:
        return {"error": f"job {job.name!r}: rendering the command ran out of memory"}
    except Exception as exc:  # noqa: BLE001 - reported to the server, which refuses the run
        return {"error": f"job {job.name!r}: rendering the command failed: {exc}"}


def _exit_with(parent: int) -> None:
    """End this process once ``parent`` is no longer its parent (it died)."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def main() -> int:
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()
    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ValueError, OSError):
        pass
    try:
        os.nice(NICENESS)
    except OSError:
        pass
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    write_frame(stdout, {"ready": True})
    while True:
        header = _read_exact(stdin, 4)
        if header is None:
            return 0
        body = _read_exact(stdin, int.from_bytes(header, "big"))
        if body is None:
            return 0
        try:
            reply = answer(json.loads(body))
        except MemoryError:
            reply = {"error": "rendering the command ran out of memory"}
        write_frame(stdout, reply)


if __name__ == "__main__":
    sys.exit(main())
