"""Job processes: starting them (the native spawn and its fallback), their cgroups, watching and
reaping them, the users they run as, and who calls on the event socket."""
from __future__ import annotations

from .runner import ProcessMonitor

__all__ = ["ProcessMonitor"]
