"""The job model: jobs, vars and their values, the command's rendering, schedules, and
executions' records and events.

The main names are re-exported here and imported on first use, so that a process that needs one
module (a render worker) does not import the others.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .job import Job
    from .render import render_command
    from .schedule import ScheduleEntry
    from .vars import VarSpec, validate_params

_EXPORTS = {"Job": "job", "ScheduleEntry": "schedule", "VarSpec": "vars", "render_command": "render",
            "validate_params": "vars"}
__all__ = ["Job", "ScheduleEntry", "VarSpec", "render_command", "validate_params"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
