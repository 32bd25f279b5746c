"""The event socket: a unix socket in the data dir for the `event` tool (SPEC §7).

One JSON line in (``{"token", "event", "cause"}``), one JSON line out. The
token is the secret of one running execution; it is the only thing that says
which execution an event is for, so a job can create events on its own
execution only. Requests are bounded in size and time; a slow or malformed
client gets an error and is dropped, never holding up anyone else.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

MAX_LINE = 16 * 1024
CLIENT_TIMEOUT = 5.0
MAX_CLIENTS = 128


class EventSocket:
    """Serves the socket on its own threads; ``handle(token, name, cause)`` does the work."""

    def __init__(self, path: Path, handle: Callable[[str, object, object], None]):
        self.path = Path(path)
        self.handle = handle
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(128)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept, name="event-socket", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            self._sock = None
        if self._thread:
            self._thread.join(2)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _accept(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                self._reply(conn, {"ok": False, "error": "too many event requests at once"})
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), name="event-client", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(CLIENT_TIMEOUT)
            self._reply(conn, self._answer(self._read_line(conn)))
        except (OSError, ValueError) as e:
            self._reply(conn, {"ok": False, "error": str(e) or type(e).__name__})
        finally:
            conn.close()
            self._slots.release()

    @staticmethod
    def _read_line(conn: socket.socket) -> bytes:
        data = b""
        while b"\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_LINE:
                raise ValueError(f"request longer than {MAX_LINE} bytes")
        return data.split(b"\n", 1)[0]

    def _answer(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request is not one line of JSON"}
        if not isinstance(request, dict) or not isinstance(request.get("token"), str):
            return {"ok": False, "error": "request must be a JSON object with token, event and cause"}
        try:
            self.handle(request["token"], request.get("event"), request.get("cause"))
        except Exception as e:  # every refusal is an answer, never a dead socket
            return {"ok": False, "error": str(e)}
        return {"ok": True}

    @staticmethod
    def _reply(conn: socket.socket, answer: dict) -> None:
        try:
            conn.sendall(json.dumps(answer).encode() + b"\n")
        except OSError:
            pass
