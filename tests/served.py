"""A real System behind the real HTTP server on 127.0.0.1, in the test's own process: the one
fixture for tests that speak to the API or the UI (``serve``), and a client for it (``Api``).
Tests of a whole ``overseer serve`` process use tests/serving.py."""
from __future__ import annotations

import http.client
from typing import Any, Callable, Optional

import pytest
import requests

from overseer.http.server import HttpServer

from .waiting import wait_finished


class Api:
    """A requests session on one running server, with the System behind it."""

    def __init__(self, system: Any, server: HttpServer, token: Optional[str] = None):
        self.system, self.server = system, server
        self.base = system.config.base_url
        self.port = system.config.server.port
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def __getattr__(self, method):
        if method not in ("get", "post", "put", "delete", "head", "patch", "options"):
            raise AttributeError(method)
        return lambda path, **kw: self.session.request(method.upper(), self.base + path, timeout=30, **kw)

    def raw(self, method: str, path: str, headers: Optional[dict] = None, body: Optional[bytes] = None):
        """A request exactly as written (no client-side path normalisation)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_host="Host" in (headers or {}), skip_accept_encoding=True)
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def finished(self, job: str, ident: int) -> dict:
        return wait_finished(self.system, job, ident)


def error_of(resp: requests.Response) -> str:
    """The message of a JSON error answer (``{"error": MESSAGE}`` and nothing else)."""
    assert resp.headers["Content-Type"] == "application/json", resp.text
    body = resp.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    return body["error"]


@pytest.fixture
def serve(system_factory) -> Callable[..., tuple[Any, HttpServer]]:
    """``serve(files=None, **overrides) -> (system, server)``: a real System made by
    ``system_factory`` (the same arguments), served over HTTP on its configured port. Every server
    started is stopped at the end of the test, before its System."""
    servers = []

    def start(files: Optional[dict] = None, **overrides) -> tuple[Any, HttpServer]:
        system = system_factory(files, **overrides)
        server = HttpServer(system, system.config)
        server.start()
        servers.append(server)
        return system, server

    yield start
    for server in servers:
        server.stop()
