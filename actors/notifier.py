"""The Notifier actor: webhook delivery (SPEC §8).

Each URL gets its own delivery worker (a thread with a queue), so a slow or
dead endpoint delays only itself, and deliveries to one URL leave in the order
the events happened. Failures (connection errors, time-outs, 5xx, 429) are
retried with exponential backoff up to ``MAX_ATTEMPTS``; redirects are not
followed; every outcome is logged.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from typing import Optional

import pykka

from overseer.config import Config
from overseer.repo.fields import redact_hook_url

from .context import Pingable
from .messages import EventRecorded

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
TIMEOUT = (3.05, 10)  # connect, read
IDLE_EXIT = 60.0


def payload(event: EventRecorded, base_url: str) -> bytes:
    """The POST body (docs/api.rst, Webhooks). ``status`` is the event's name, as it has always
    been; ``source`` says who made the event, ``state`` and ``outcome`` whether the run is over
    (a note after the end: ``state`` finished, ``outcome`` the status it kept)."""
    return json.dumps({
        "job": event.job, "execution": event.ident, "status": event.name, "cause": event.cause,
        "time": event.time, "metadata": f"{base_url}/jobs/{event.job}/{event.ident}",
        "source": event.source, "state": event.state, "outcome": event.outcome,
    }).encode()


def urls_for(event: EventRecorded, server_hooks) -> list[str]:
    job_hooks = dict(event.job_hooks)
    urls: list[str] = []
    for hooks in (server_hooks, job_hooks):
        for key in (event.name, "*"):
            for url in hooks.get(key, ()):
                if url not in urls:
                    urls.append(url)
    return urls


class _Worker(threading.Thread):
    def __init__(self, url: str, secret: Optional[str], on_idle):
        super().__init__(name=f"webhook {redact_hook_url(url)}", daemon=True)
        self.url = url
        self.secret = secret.encode() if secret else None
        self.queue: queue.Queue = queue.Queue()
        self.on_idle = on_idle
        # requests (about 130 ms of imports) loads with the first URL to deliver to, not at every
        # start of the server.
        import requests

        # urllib3 logs each request line, query string (tokens) and all, at debug level; every
        # delivery's outcome is logged below with the URL redacted.
        logging.getLogger("urllib3").setLevel(logging.WARNING)
        self.session = requests.Session()
        self.session.trust_env = False  # never send job webhooks through an environment proxy
        self.stopping = False

    def run(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=IDLE_EXIT)
            except queue.Empty:
                if self.on_idle(self):
                    return
                continue
            if item is None:
                return
            self.deliver(*item)

    def deliver(self, event: EventRecorded, body: bytes) -> bool:
        import requests  # loaded by __init__ already

        headers = {"Content-Type": "application/json", "User-Agent": "overseer-webhook"}
        if self.secret:
            digest = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
            headers["X-Overseer-Signature"] = "sha256=" + digest
        what = f"{event.job}/{event.ident} {event.name} -> {redact_hook_url(self.url)}"
        delay = BACKOFF_FIRST
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                r = self.session.post(self.url, data=body, headers=headers, timeout=TIMEOUT,
                                      allow_redirects=False)
                if 200 <= r.status_code < 300:
                    log.info("webhook %s: delivered (%s, attempt %d)", what, r.status_code, attempt)
                    return True
                retry = r.status_code >= 500 or r.status_code == 429
                outcome = f"HTTP {r.status_code}"
            except requests.RequestException as e:
                retry = True
                outcome = type(e).__name__
            if not retry or attempt == MAX_ATTEMPTS or self.stopping:
                log.warning("webhook %s: given up after attempt %d (%s)", what, attempt, outcome)
                return False
            log.info("webhook %s: attempt %d failed (%s), retrying in %.1fs", what, attempt, outcome, delay)
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
        return False


class Notifier(Pingable, pykka.ThreadingActor):
    def __init__(self, config: Config, inject=lambda point: None):
        super().__init__()
        self.config = config
        self.inject = inject
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()

    def on_receive(self, message) -> None:
        self.inject("notifier." + type(message).__name__)
        if isinstance(message, EventRecorded):
            self.deliver(message)

    def deliver(self, event: EventRecorded) -> None:
        urls = urls_for(event, self.config.hooks)
        if not urls:
            return
        body = payload(event, self.config.base_url)
        for url in urls:
            self._worker(url).queue.put((event, body))

    def pending(self) -> int:
        with self._lock:
            return sum(w.queue.qsize() for w in self._workers.values())

    def _worker(self, url: str) -> _Worker:
        with self._lock:
            worker = self._workers.get(url)
            if worker is None or not worker.is_alive():
                worker = self._workers[url] = _Worker(url, self.config.hooks_secret, self._idle)
                worker.start()
            return worker

    def _idle(self, worker: _Worker) -> bool:
        with self._lock:
            if worker.queue.empty():
                self._workers.pop(worker.url, None)
                return True
            return False

    def on_stop(self) -> None:
        with self._lock:
            workers = list(self._workers.values())
        deadline = time.monotonic() + 5
        for w in workers:
            w.queue.put(None)
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
        for w in workers:
            w.stopping = True
