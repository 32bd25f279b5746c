"""The ``overseer`` command: serve, validate, and the client commands (SPEC §1)."""
from __future__ import annotations

from .main import main

__all__ = ["main"]
