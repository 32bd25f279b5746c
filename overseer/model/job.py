"""A job: one valid job definition, as a job file in the repository gives it (SPEC §3, §4).

Loading and checking job files is overseer/repo/load.py's; the checks of each key are in
overseer/repo/fields.py.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from overseer.model.schedule import ScheduleEntry
    from overseer.model.vars import VarSpec

JOB_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
MAX_JOB_NAME = 255  # characters (ASCII) of a job name: its file's path, directories joined by "."


@dataclass(frozen=True)
class Job:
    """One valid job definition."""

    name: str
    file: str
    command: str | None
    script: str | None
    timeout: float | None
    vars: tuple[VarSpec, ...]
    schedule: tuple[ScheduleEntry, ...]
    description: str | None
    hooks: Mapping[str, tuple[str, ...]]
    env: Mapping[str, str]
    max_concurrent: int | None
    definition: Mapping = field(compare=False)
    commit: str | None = None
