"""Serving the API with CherryPy's HTTP server (cheroot) in the current process.

The app (``overseer.http.app.Api``, a WSGI callable) is grafted onto
``cherrypy.tree`` at the root and served by one CherryPy server bound to
``server.host:server.port`` with ``server.thread_pool`` worker threads. No
autoreloader, no signal handlers (the CLI owns SIGINT and SIGTERM), no config
checker, nothing printed to the screen: CherryPy's own messages go to the
``cherrypy.error`` logger and each request to ``overseer.http.access``.
"""
from __future__ import annotations

import logging
import select
import socket
from typing import Any

import cherrypy
from cheroot.server import HTTPConnection, HTTPRequest
from cherrypy import _cpserver, _cpwsgi_server

from overseer.exceptions import ConfigError

from .app import Api
from .head_wait import HeadWait
from .request import is_loopback_name

log = logging.getLogger(__name__)

# Bodies up to this many times server.max_body_bytes are read and refused by the app with a JSON
# 413; larger ones are refused by the HTTP server itself before the app sees them.
HARD_BODY_FACTOR = 16
HARD_BODY_MIN = 64 << 20


def check_bind(config: Any) -> None:
    """Refuse to serve an unauthenticated API on anything but loopback."""
    host = config.server.host
    if not config.server.tokens and not is_loopback_name(host or "0.0.0.0"):
        raise ConfigError(f"server.host: {host!r} is not a loopback address and server.tokens is empty; "
                          f"set API tokens to serve on it, or bind to 127.0.0.1")


def check_port(config: Any) -> None:
    """The configured port is free now (OSError if not): checked before the start changes anything."""
    _check_free(config.server.host, config.server.port)


def _check_free(host: str, port: int) -> None:
    """Bind a throw-away socket first: a port that is taken is an OSError here, where CherryPy's
    engine would end the whole process instead."""
    infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(addr)


# A worker that answered a keep-alive request waits this long on the same connection for the next
# one before handing the connection back to cheroot's selector: a client sending request after
# request (a CLI, a CI step, a load test) is then served without two thread hand-overs a request.
KEEP_WAIT = 0.1
# ... but only while this many workers stay idle for everyone else.
KEEP_RESERVE = 4
LISTEN_BACKLOG = 1024  # the kernel caps it at net.core.somaxconn


class _HeadHoldingWriter:
    """The connection's writer, holding a response's header block until the first piece of its
    body so that both leave in one send: cheroot sends them apart, and each send on a socket with
    a timeout is a poll and a send, each handing the GIL to another thread."""

    __slots__ = ("inner", "held", "hold_next")

    def __init__(self, inner: Any):
        self.inner, self.held, self.hold_next = inner, b"", False

    def write(self, data: bytes) -> int:
        if self.hold_next:
            self.hold_next = False
            self.held = bytes(data)
            return len(data)
        if self.held:
            data, self.held = self.held + data, b""
        return self.inner.write(data)

    def release(self) -> None:
        self.hold_next = False  # a send_headers that raised before its write holds nothing more
        if self.held:
            data, self.held = self.held, b""
            self.inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _Request(HTTPRequest):
    def send_headers(self) -> None:
        self.conn.wfile.hold_next = True  # its one write: the header block
        super().send_headers()

    def respond(self) -> None:
        try:
            super().respond()
        finally:
            self.conn.wfile.release()  # a response without a body: the headers alone


class _Connection(HTTPConnection):
    """cheroot's connection, served request after request by one worker while requests come."""

    RequestHandlerClass = _Request

    def __init__(self, server: Any, sock: Any, *args: Any) -> None:
        super().__init__(server, sock, *args)
        self.wfile = _HeadHoldingWriter(self.wfile)

    def communicate(self) -> bool:
        while True:
            if not super().communicate():
                return False
            if self.rfile.has_data():
                if self.server.head_wait.ready(self):
                    continue  # a pipelined request is buffered already
                return True  # the rest of it waits in the HeadWait (cheroot puts it there)
            if not self._next_request_soon():
                return True  # back to the selector: whoever is idle takes it when it speaks

    def _next_request_soon(self) -> bool:
        requests = self.server.requests
        if getattr(requests, "idle", 0) <= KEEP_RESERVE or not self.server.ready:
            return False
        try:
            poller = select.poll()
            poller.register(self.socket.fileno(), select.POLLIN)
            # a request that is not all in waits in the HeadWait, not on this worker
            return bool(poller.poll(KEEP_WAIT * 1000)) and self.server.head_wait.ready(self)
        except (OSError, ValueError):
            return False


class _WsgiServer(_cpwsgi_server.CPWSGIServer):
    """cheroot's server, handing a connection to a worker only once its request is in."""

    def __init__(self, server: Any, max_body: int):
        super().__init__(server)
        # cheroot's own process_conn: to the worker queue
        self.head_wait = HeadWait(super().process_conn, max_body=max_body)

    def process_conn(self, conn: Any) -> None:
        self.head_wait.offer(conn)


class HttpServer:
    def __init__(self, system: Any, config: Any):
        self.system = system
        self.config = config
        self.app = Api(system, config)
        self._server: _cpserver.Server | None = None
        self._head_wait: HeadWait | None = None

    @property
    def url(self) -> str:
        return self.config.base_url

    def start(self) -> None:
        """Serve; returns once the port is listening. OSError when it cannot bind."""
        server_conf = self.config.server
        _check_free(server_conf.host, server_conf.port)
        cherrypy.config.update({
            "environment": "embedded",
            "engine.autoreload.on": False,
            "checker.on": False,
            "log.screen": False,
            "log.access_file": "",
            "log.error_file": "",
        })
        cherrypy.log.error_log.setLevel(logging.WARNING)  # its start/stop chatter; our own line below
        engine = cherrypy.engine
        engine.autoreload.unsubscribe()
        engine.signal_handler.unsubscribe()
        cherrypy.server.unsubscribe()  # the default server on :8080; ours is below
        server = _cpserver.Server()
        server.socket_host = server_conf.host
        server.socket_port = server_conf.port
        server.thread_pool = server_conf.thread_pool
        server.max_request_body_size = max(server_conf.max_body_bytes * HARD_BODY_FACTOR, HARD_BODY_MIN)
        server.socket_timeout = 60
        # CherryPy's listen backlog is 5: a burst of new connections beyond it (clients starting
        # together, a load balancer's pool) waits for the kernel's SYN retries, or is reset.
        server.socket_queue_size = LISTEN_BACKLOG
        server.shutdown_timeout = 5
        httpserver = _WsgiServer(server, server_conf.max_body_bytes)
        httpserver.ConnectionClass = _Connection
        self._head_wait = httpserver.head_wait
        server.instance = httpserver
        server.subscribe()
        self._server = server
        self.app.closing.clear()
        cherrypy.tree.graft(self.app, "")
        engine.start()
        log.info("HTTP API on %s:%s (%d threads, tokens %s)", server_conf.host, server.bound_addr[1],
                 server_conf.thread_pool, "required" if server_conf.tokens else "off: loopback only")

    def stop(self) -> None:
        """Stop serving: open follows end, the port is free when this returns."""
        if self._server is None:
            return
        self.app.closing.set()
        try:
            cherrypy.engine.stop()
            cherrypy.engine.exit()  # a stopped engine left for the interpreter's exit makes a warning
        finally:
            self._server.unsubscribe()
            self._server = None
            if self._head_wait is not None:
                self._head_wait.stop()
                self._head_wait = None
            if cherrypy.tree.apps.get("") is self.app:
                del cherrypy.tree.apps[""]
