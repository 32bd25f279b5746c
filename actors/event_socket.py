"""The event socket: a unix socket in the data dir for the `event` tool (SPEC §7).

One JSON line in (``{"token", "event", "cause"}``), one JSON line out. The
token is the secret of one running execution and says which execution an
event is for; the kernel says who sends it: the handler gets the caller's
peer credentials (``overseer.process.identity.Peer``: pid, uid, gid, from the
accepted connection) and refuses a token that is not the caller's own
execution's. A token read from another job's environment is of no use.

Requests are bounded in size and time, and a client that is slow, silent or
malformed never holds up anyone else: one thread reads every connection
through a selector (an idle connection costs a descriptor, not a thread), a
request is handed to a worker thread only once its whole line has arrived,
and when ``MAX_CONNECTIONS`` are open the oldest unfinished one is dropped to
make room, so a flood of idle connections cannot lock a job's ``event`` out.
"""
from __future__ import annotations

import json
import logging
import os
import selectors
import shutil
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from overseer.process.identity import Peer

log = logging.getLogger(__name__)

MAX_LINE = 16 * 1024
CLIENT_TIMEOUT = 5.0
MAX_CLIENTS = 128          # requests being handled at once (complete lines)
MAX_CONNECTIONS = 1024     # connections still sending their line


class _Pending:
    __slots__ = ("conn", "data", "deadline")

    def __init__(self, conn: socket.socket, deadline: float):
        self.conn, self.data, self.deadline = conn, b"", deadline


class EventSocket:
    """Serves the socket on its own threads; ``handle(token, name, cause, peer)`` does the work,
    ``peer`` being what ``identify(connection)`` says of the caller. ``mode``: the socket file's
    (0600: only the server's user may connect; jobs running as another user need 0666, and then
    who calls is what the peer credentials say)."""

    def __init__(self, path: Path, handle: Callable[[str, object, object, Peer], None],
                 mode: int = 0o600,
                 identify: Callable[[socket.socket], Peer] = lambda conn: Peer.of(conn, None)):
        self.path = Path(path)
        self.handle = handle
        self.mode = mode
        self.identify = identify
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._sel: selectors.BaseSelector | None = None
        self._pending: OrderedDict[int, _Pending] = OrderedDict()  # fd -> connection, oldest first
        self._wake_r, self._wake_w = -1, -1
        self._stopping = False

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bound in a directory of its own (0700), given its mode, then moved into place: nobody
        # can connect before the mode is right, and the process-wide umask is left alone (other
        # threads make directories meanwhile: the runs' TMPDIRs, made ahead).
        private = tempfile.mkdtemp(prefix=".event-sock-", dir=self.path.parent)
        try:
            staged = os.path.join(private, "sock")
            sock.bind(staged)
            os.chmod(staged, self.mode)
            os.rename(staged, self.path)
        finally:
            shutil.rmtree(private, ignore_errors=True)
        sock.listen(128)
        sock.setblocking(False)
        self._sock = sock
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(sock, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._loop, name="event-socket", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass
        if self._thread:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    # -- the selector thread ---------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._stopping:
                timeout = None
                if self._pending:
                    first = next(iter(self._pending.values()))
                    timeout = max(0.0, first.deadline - time.monotonic())
                for key, _mask in self._sel.select(timeout):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        continue
                    else:
                        self._read(key.data)
                self._expire()
        except Exception:  # never seen; logged so that a dead socket is not silent
            log.exception("event socket: the serving thread failed")
        finally:
            for pending in list(self._pending.values()):
                self._drop(pending, None)
            self._sel.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("event socket: accept failed: %s", e)
                return
            if len(self._pending) >= MAX_CONNECTIONS:  # make room: the oldest unfinished one goes
                oldest = next(iter(self._pending.values()))
                self._drop(oldest, "too many unfinished event requests; this one was the oldest")
            conn.setblocking(False)
            pending = _Pending(conn, time.monotonic() + CLIENT_TIMEOUT)
            self._pending[conn.fileno()] = pending
            self._sel.register(conn, selectors.EVENT_READ, pending)

    def _read(self, pending: _Pending) -> None:
        try:
            chunk = pending.conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:  # the client closed before (or right after) sending its line
            if pending.data and b"\n" not in pending.data:
                self._dispatch(pending, pending.data)
            else:
                self._drop(pending, None)
            return
        pending.data += chunk
        line, newline, _rest = pending.data.partition(b"\n")
        if newline:
            self._dispatch(pending, line)
        elif len(pending.data) > MAX_LINE:
            self._drop(pending, f"request longer than {MAX_LINE} bytes")

    def _expire(self) -> None:
        now = time.monotonic()
        while self._pending:
            first = next(iter(self._pending.values()))
            if first.deadline > now:
                return
            self._drop(first, f"no complete request line within {CLIENT_TIMEOUT:g} s")

    def _forget(self, pending: _Pending) -> None:
        self._pending.pop(pending.conn.fileno(), None)
        try:
            self._sel.unregister(pending.conn)
        except (KeyError, ValueError):
            pass

    def _drop(self, pending: _Pending, error: str | None) -> None:
        self._forget(pending)
        if error is not None:
            self._reply_now(pending.conn, {"ok": False, "error": error})
        pending.conn.close()

    def _dispatch(self, pending: _Pending, line: bytes) -> None:
        """A whole line arrived: answer it on a worker thread (the handler may wait on an actor)."""
        self._forget(pending)
        if len(line) > MAX_LINE:
            self._reply_now(pending.conn, {"ok": False, "error": f"request longer than {MAX_LINE} bytes"})
            pending.conn.close()
            return
        if not self._slots.acquire(blocking=False):
            self._reply_now(pending.conn, {"ok": False, "error": "too many event requests at once"})
            pending.conn.close()
            return
        threading.Thread(target=self._serve, args=(pending.conn, line), name="event-client",
                         daemon=True).start()

    # -- worker threads --------------------------------------------------------------------------
    def _serve(self, conn: socket.socket, line: bytes) -> None:
        try:
            self._reply(conn, self._answer(conn, line))
        finally:
            conn.close()
            self._slots.release()

    def _answer(self, conn: socket.socket, line: bytes) -> dict:
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request is not one line of JSON"}
        if not isinstance(request, dict) or not isinstance(request.get("token"), str):
            return {"ok": False, "error": "request must be a JSON object with token, event and cause"}
        try:
            self.handle(request["token"], request.get("event"), request.get("cause"),
                        self.identify(conn))
        except Exception as e:  # every refusal is an answer, never a dead socket
            return {"ok": False, "error": str(e)}
        return {"ok": True}

    @staticmethod
    def _reply(conn: socket.socket, answer: dict) -> None:
        """Send the one-line answer from a worker thread, within the client time-out."""
        try:
            conn.settimeout(CLIENT_TIMEOUT)
            conn.sendall(json.dumps(answer).encode() + b"\n")
        except OSError:
            pass

    @staticmethod
    def _reply_now(conn: socket.socket, answer: dict) -> None:
        """Send a refusal from the selector thread without ever blocking it: one non-blocking send
        of a short line (it fits an empty socket buffer; a client that filled its own gets none)."""
        try:
            conn.setblocking(False)
            conn.send(json.dumps(answer).encode() + b"\n")
        except OSError:
            pass
