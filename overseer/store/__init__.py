"""The LMDB store of executions, their output and events, activation and schedule state."""
from __future__ import annotations

from .recent import RecentQuery
from .store import Store

__all__ = ["RecentQuery", "Store"]
