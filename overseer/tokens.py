"""Unguessable tokens, with one system call per 256 of them.

A run's ``OVERSEER_TOKEN`` proves to the event socket that a message comes from
that run. ``secrets.token_urlsafe`` reads the kernel's random source on every
call, and on a busy server each such read hands the GIL to another thread and
waits to get it back. Here the kernel's random bytes (``os.urandom``, as
``secrets`` uses) are read 256 tokens' worth at a time and handed out 24 bytes
per token, each byte once, in URL-safe base64 like ``token_urlsafe(24)``.
"""
from __future__ import annotations

import base64
import os
import threading

TOKEN_BYTES = 24
_BATCH = 256
_lock = threading.Lock()
_pool = b""
_pos = 0


def token() -> str:
    global _pool, _pos
    with _lock:
        if _pos + TOKEN_BYTES > len(_pool):
            _pool, _pos = os.urandom(TOKEN_BYTES * _BATCH), 0
        chunk = _pool[_pos:_pos + TOKEN_BYTES]
        _pos += TOKEN_BYTES
    return base64.urlsafe_b64encode(chunk).decode("ascii")
